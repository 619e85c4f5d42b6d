"""S3 storage against a real SeaweedFS server (auth enforced): round trips, errors, atomic uploads."""
from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from neocompile import storage
from neocompile.errors import InputConfigurationError, StorageError
from neocompile.storage import s3 as s3_storage


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.tar.gz"
    path.write_bytes(b"\x1f\x8b" + os.urandom(64 * 1024))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fail_on(event: str, after: int = 0):
    """A botocore before-send handler that lets `after` requests through, then fails like a bad disk."""
    calls = {"n": 0}

    def handler(request, **_):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(errno.EIO, "simulated I/O error")

    return event, handler


def _client_failing_on(monkeypatch, event: str, after: int = 0):
    real = s3_storage.client
    name, handler = _fail_on(event, after)

    def failing_client():
        c = real()
        c.meta.events.register(name, handler)
        return c

    monkeypatch.setattr(s3_storage, "client", failing_client)


def test_put_then_fetch_round_trips_the_bytes(s3_env, s3_server, model_file, tmp_path):
    uri = storage.put(model_file, f"s3://{s3_env}/compiled/", "model-ml_m5.tar.gz")
    assert uri == f"s3://{s3_env}/compiled/model-ml_m5.tar.gz"
    body = s3_server.client().get_object(Bucket=s3_env, Key="compiled/model-ml_m5.tar.gz")["Body"].read()
    assert body == model_file.read_bytes()

    got = storage.fetch(uri, tmp_path / "dl")
    assert got == tmp_path / "dl" / "model-ml_m5.tar.gz"
    assert got.read_bytes() == model_file.read_bytes()


def test_put_to_bucket_root_returns_key_without_prefix(s3_env, model_file):
    assert storage.put(model_file, f"s3://{s3_env}", "m.tar.gz") == f"s3://{s3_env}/m.tar.gz"


def test_multipart_put_and_fetch_round_trip_a_big_file(s3_env, s3_server, tmp_path):
    big = tmp_path / "big.tar.gz"
    big.write_bytes(os.urandom(20 * 1024 * 1024))  # over boto3's 8 MiB multipart threshold
    uri = storage.put(big, f"s3://{s3_env}/out", "big.tar.gz")
    assert storage.fetch(uri, tmp_path / "dl").read_bytes() == big.read_bytes()


def test_fetch_missing_object_raises_neo_text(s3_env, tmp_path):
    with pytest.raises(InputConfigurationError) as info:
        storage.fetch(f"s3://{s3_env}/models/none.tar.gz", tmp_path)
    assert str(info.value) == (
        f"InputConfiguration: S3 object does not exist. Bucket: {s3_env}, Key: models/none.tar.gz"
    )
    assert os.listdir(tmp_path) == []


def test_fetch_missing_bucket_names_the_bucket_and_field(s3_env, tmp_path):
    with pytest.raises(InputConfigurationError) as info:
        storage.fetch("s3://no-such-bucket-neo/m.tar.gz", tmp_path)
    message = str(info.value)
    assert "S3 bucket does not exist. Bucket: no-such-bucket-neo" in message
    assert "InputConfig.S3Uri" in message


def test_fetch_bucket_without_key_asks_for_a_tar_gz_key(s3_env, tmp_path):
    with pytest.raises(InputConfigurationError) as info:
        storage.fetch(f"s3://{s3_env}", tmp_path)
    assert "InputConfig.S3Uri" in str(info.value)
    assert f"s3://{s3_env}" in str(info.value)
    assert ".tar.gz" in str(info.value)


def test_fetch_interrupted_download_leaves_no_file(s3_env, s3_server, tmp_path, monkeypatch):
    s3_server.client().put_object(Bucket=s3_env, Key="m.tar.gz", Body=b"x" * 1000)
    _client_failing_on(monkeypatch, "before-send.s3.GetObject")
    with pytest.raises(StorageError, match="simulated I/O error"):
        storage.fetch(f"s3://{s3_env}/m.tar.gz", tmp_path / "dl")
    assert os.listdir(tmp_path / "dl") == []


def test_put_to_missing_bucket_raises_storage_error_naming_bucket(s3_env, model_file):
    with pytest.raises(StorageError) as info:
        storage.put(model_file, "s3://no-such-bucket-neo/out", "m.tar.gz")
    message = str(info.value)
    assert "S3 bucket does not exist. Bucket: no-such-bucket-neo" in message
    assert "OutputConfig.S3OutputLocation" in message


def test_failed_multipart_put_leaves_no_object_and_no_pending_upload(s3_env, s3_server, tmp_path,
                                                                     monkeypatch):
    big = tmp_path / "big.tar.gz"
    big.write_bytes(os.urandom(20 * 1024 * 1024))
    _client_failing_on(monkeypatch, "before-send.s3.UploadPart", after=1)
    with pytest.raises(StorageError, match="simulated I/O error"):
        storage.put(big, f"s3://{s3_env}/out", "big.tar.gz")
    admin = s3_server.client()
    assert admin.list_objects_v2(Bucket=s3_env).get("KeyCount") == 0
    assert admin.list_multipart_uploads(Bucket=s3_env).get("Uploads", []) == []


def test_check_writable_accepts_an_existing_bucket(s3_env):
    storage.check_writable(f"s3://{s3_env}/out/")


def test_check_writable_rejects_a_missing_bucket(s3_env):
    with pytest.raises(StorageError, match="S3 bucket does not exist. Bucket: no-such-bucket-neo"):
        storage.check_writable("s3://no-such-bucket-neo/out")


@pytest.mark.parametrize("var, value", [
    ("AWS_SECRET_ACCESS_KEY", "wrong-secret"),
    ("AWS_ACCESS_KEY_ID", "unknownkey"),
])
def test_wrong_credentials_are_rejected_by_the_server(s3_env, s3_server, model_file, tmp_path,
                                                      monkeypatch, var, value):
    s3_server.client().put_object(Bucket=s3_env, Key="m.tar.gz", Body=b"x")
    monkeypatch.setenv(var, value)
    calls = [
        lambda: storage.fetch(f"s3://{s3_env}/m.tar.gz", tmp_path / "dl"),
        lambda: storage.put(model_file, f"s3://{s3_env}/out", "m.tar.gz"),
        lambda: storage.check_writable(f"s3://{s3_env}/out"),
    ]
    for call in calls:
        with pytest.raises(StorageError) as info:
            call()
        assert "Access denied" in str(info.value)
        assert "credentials" in str(info.value)
        assert s3_env in str(info.value)
    assert s3_server.client().list_objects_v2(Bucket=s3_env, Prefix="out/").get("KeyCount") == 0


def test_missing_credentials_raise_storage_error_saying_how_to_set_them(s3_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match="No usable AWS credentials.*AWS_ACCESS_KEY_ID"):
        storage.check_writable(f"s3://{s3_env}/out")


def test_unreachable_endpoint_raises_storage_error_naming_the_endpoint(s3_env, tmp_path, monkeypatch):
    dead = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", dead)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(StorageError) as info:
        storage.fetch(f"s3://{s3_env}/m.tar.gz", tmp_path)
    assert f"Cannot reach S3 at {dead}" in str(info.value)
    assert "AWS_ENDPOINT_URL_S3" in str(info.value)


def test_generic_aws_endpoint_url_is_honoured_too(s3_env, s3_server, model_file, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    assert storage.put(model_file, f"s3://{s3_env}", "m.tar.gz") == f"s3://{s3_env}/m.tar.gz"


def test_client_defaults_to_us_east_1_and_path_style_with_an_endpoint(s3_env, monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    c = s3_storage.client()
    assert c.meta.region_name == "us-east-1"
    assert c.meta.config.s3["addressing_style"] == "path"


def test_a_child_process_reaches_the_server_through_env(s3_env, s3_server, model_file, tmp_path):
    storage.put(model_file, f"s3://{s3_env}", "m.tar.gz")
    code = ("import sys; from pathlib import Path; from neocompile import storage; "
            "print(storage.fetch(sys.argv[1], Path(sys.argv[2])))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | s3_server.env
    args = [sys.executable, "-c", code, f"s3://{s3_env}/m.tar.gz", str(tmp_path / "dl")]
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[2])
    assert Path(out.stdout.strip()).read_bytes() == model_file.read_bytes()


def test_importing_storage_does_not_import_boto3():
    code = "import sys, neocompile.storage; print('boto3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == "False"


def test_discard_partial_aborts_the_pending_multipart_upload_of_a_killed_put(s3_env, s3_server):
    admin = s3_server.client()
    # What a put killed mid-upload leaves: a multipart upload with some parts and no completion.
    pending = admin.create_multipart_upload(Bucket=s3_env, Key="out/m.tar.gz")["UploadId"]
    admin.upload_part(Bucket=s3_env, Key="out/m.tar.gz", UploadId=pending, PartNumber=1,
                      Body=b"x" * 1024)
    other = admin.create_multipart_upload(Bucket=s3_env, Key="out/m.tar.gz.other")["UploadId"]

    storage.discard_partial(f"s3://{s3_env}/out/", "m.tar.gz")

    uploads = admin.list_multipart_uploads(Bucket=s3_env).get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("out/m.tar.gz.other", other)]


def test_discard_partial_never_raises_even_without_a_bucket(s3_env):
    storage.discard_partial("s3://no-such-bucket-neo/out", "m.tar.gz")
