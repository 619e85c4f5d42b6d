"""Local folders as storage: plain paths and file:// URIs, real files, atomic writes."""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from neocompile import storage
from neocompile.errors import InputConfigurationError, StorageError, ValidationError


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "model.tar.gz"
    path.parent.mkdir()
    path.write_bytes(b"\x1f\x8b" + os.urandom(4096))
    return path


def test_parse_uri_splits_s3_file_uri_and_plain_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.parse_uri("s3://bkt/a/b.tar.gz", "F") == ("s3", "bkt", "a/b.tar.gz")
    assert storage.parse_uri("S3://bkt", "F") == ("s3", "bkt", "")
    assert storage.parse_uri("file:///x/a%20b.tar.gz", "F") == ("file", "/x/a b.tar.gz")
    assert storage.parse_uri("file://localhost/x", "F") == ("file", "/x")
    assert storage.parse_uri("rel/m.tar.gz", "F") == ("file", str(tmp_path / "rel/m.tar.gz"))
    assert storage.parse_uri("/abs/m.tar.gz", "F") == ("file", "/abs/m.tar.gz")


@pytest.mark.parametrize("uri, expected", [
    ("gs://bkt/key", "unsupported scheme 'gs://'"),
    ("https://bkt.s3.amazonaws.com/key", "unsupported scheme 'https://'"),
    ("s3:///key", "names no bucket"),
    ("file://otherhost/x", "names host 'otherhost'"),
    ("", "is empty"),
])
def test_parse_uri_rejects_malformed_locations_naming_field_and_value(uri, expected):
    with pytest.raises(ValidationError) as info:
        storage.parse_uri(uri, "InputConfig.S3Uri")
    assert expected in str(info.value)
    assert "InputConfig.S3Uri" in str(info.value)
    assert uri in str(info.value)


def test_fetch_plain_relative_path_copies_file_into_dest_dir(model_file, tmp_path, monkeypatch):
    monkeypatch.chdir(model_file.parent)
    got = storage.fetch("model.tar.gz", tmp_path / "work" / "in")
    assert got == tmp_path / "work" / "in" / "model.tar.gz"
    assert got.read_bytes() == model_file.read_bytes()
    assert os.listdir(got.parent) == ["model.tar.gz"]


def test_fetch_file_uri_with_escaped_characters_copies_file(tmp_path):
    src = tmp_path / "my model.tar.gz"
    src.write_bytes(b"payload")
    got = storage.fetch(src.as_uri(), tmp_path / "dest")
    assert got.name == "my model.tar.gz"
    assert got.read_bytes() == b"payload"


def test_fetch_missing_local_file_raises_input_configuration_error_naming_field_and_path(tmp_path):
    missing = tmp_path / "nope.tar.gz"
    with pytest.raises(InputConfigurationError) as info:
        storage.fetch(str(missing), tmp_path / "dest")
    message = str(info.value)
    assert message.startswith("InputConfiguration: InputConfig.S3Uri")
    assert str(missing) in message and "does not exist" in message
    assert not (tmp_path / "dest" / "nope.tar.gz").exists()


def test_fetch_folder_instead_of_file_is_rejected(tmp_path):
    with pytest.raises(InputConfigurationError, match="is a folder; expected a model archive file"):
        storage.fetch(str(tmp_path), tmp_path / "dest")


def test_put_creates_missing_folders_and_returns_plain_path(model_file, tmp_path):
    out = tmp_path / "out" / "deep"
    uri = storage.put(model_file, str(out), "model-ml_m5.tar.gz")
    assert uri == str(out / "model-ml_m5.tar.gz")
    assert Path(uri).read_bytes() == model_file.read_bytes()
    assert os.listdir(out) == ["model-ml_m5.tar.gz"]


def test_put_to_file_uri_returns_file_uri(model_file, tmp_path):
    out = tmp_path / "out dir"
    uri = storage.put(model_file, out.as_uri(), "compiled.tar.gz")
    assert uri == (out / "compiled.tar.gz").as_uri()
    assert (out / "compiled.tar.gz").read_bytes() == model_file.read_bytes()


def test_put_replaces_an_existing_file(model_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.tar.gz").write_bytes(b"old")
    storage.put(model_file, str(out), "m.tar.gz")
    assert (out / "m.tar.gz").read_bytes() == model_file.read_bytes()


def test_put_gives_the_file_the_usual_umask_mode(model_file, tmp_path):
    old = os.umask(0o022)
    try:
        uri = storage.put(model_file, str(tmp_path / "out"), "m.tar.gz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(uri).st_mode) == 0o644


def test_put_into_folder_under_a_regular_file_raises_storage_error_with_os_reason(model_file, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(StorageError) as info:
        storage.put(model_file, str(blocker / "sub"), "m.tar.gz")
    message = str(info.value)
    assert "OutputConfig.S3OutputLocation" in message
    assert str(blocker / "sub") in message
    assert "Not a directory" in message


def test_put_to_a_path_that_is_a_file_raises_storage_error(model_file, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="is not a folder"):
        storage.put(model_file, str(blocker), "m.tar.gz")


def test_put_into_proc_raises_storage_error_even_for_root(model_file):
    with pytest.raises(StorageError) as info:
        storage.put(model_file, "/proc/neocompile-out", "m.tar.gz")
    assert "/proc/neocompile-out" in str(info.value)


def test_put_failing_at_the_final_rename_leaves_no_file_behind(model_file, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def no_space(src, dst):
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(StorageError, match="No space left on device"):
        storage.put(model_file, str(out), "m.tar.gz")
    assert os.listdir(out) == []


def test_put_failing_mid_copy_leaves_no_partial_file(model_file, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def copy_then_fail(src, dst, length=0):
        dst.write(src.read(100))  # part of the data reaches the temporary file
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(shutil, "copyfileobj", copy_then_fail)
    with pytest.raises(StorageError, match="Input/output error"):
        storage.put(model_file, str(out), "m.tar.gz")
    assert os.listdir(out) == []


def test_put_of_a_vanished_local_file_raises_storage_error_and_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    gone = tmp_path / "gone.tar.gz"
    with pytest.raises(StorageError) as info:
        storage.put(gone, str(out), "m.tar.gz")
    assert str(gone) in str(info.value)
    assert os.listdir(out) == []


def test_put_rejects_a_name_that_is_not_a_plain_file_name(model_file, tmp_path):
    with pytest.raises(ValueError):
        storage.put(model_file, str(tmp_path), "../escape.tar.gz")


def test_check_writable_creates_the_folder_and_leaves_no_probe_file(tmp_path):
    out = tmp_path / "new" / "out"
    storage.check_writable(str(out))
    assert out.is_dir() and os.listdir(out) == []


def test_check_writable_rejects_a_folder_under_a_regular_file(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(StorageError) as info:
        storage.check_writable((blocker / "sub").as_uri())
    assert "OutputConfig.S3OutputLocation" in str(info.value)
    assert "Not a directory" in str(info.value)


def test_discard_partial_removes_the_temp_file_of_a_killed_put_and_keeps_finished_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.tar.gz").write_bytes(b"finished earlier")
    (out / "other.tar.gz").write_bytes(b"unrelated")
    # A child process is killed while copying: its temporary file stays behind.
    code = (
        "import os, shutil, signal, sys; from pathlib import Path; from neocompile import storage\n"
        "def die(src, dst, length=0):\n"
        "    dst.write(src.read(10)); dst.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
        "shutil.copyfileobj = die\n"
        "storage.put(Path(sys.argv[1]), sys.argv[2], 'm.tar.gz')\n"
    )
    src = tmp_path / "src.tar.gz"
    src.write_bytes(b"x" * 1000)
    proc = subprocess.run([sys.executable, "-c", code, str(src), str(out)],
                          cwd=Path(__file__).parents[2], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = [e for e in os.listdir(out) if e.startswith(".m.tar.gz.")]
    assert len(leftovers) == 1

    storage.discard_partial(str(out), "m.tar.gz")
    assert sorted(os.listdir(out)) == ["m.tar.gz", "other.tar.gz"]
    assert (out / "m.tar.gz").read_bytes() == b"finished earlier"


def test_discard_partial_ignores_a_missing_folder(tmp_path):
    storage.discard_partial(str(tmp_path / "never-created"), "m.tar.gz")
