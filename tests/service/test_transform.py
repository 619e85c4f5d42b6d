"""Batch transform end to end: models and transform jobs through boto3 on a real `neocompile serve` (SQLite and
PostgreSQL stores), data and packages on the real S3 server, compiled packages answering for real."""
from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from botocore.exceptions import ClientError, WaiterError

from neocompile.runtime import Model
from tests import xgboost_models
from tests.service.apiserver import REGION, ROLE

RESOURCES = {"InstanceType": "ml.m5.large", "InstanceCount": 1}
CSV_ID = {"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"}


@pytest.fixture
def xgb_model(api, xgb_package, s3_env, s3_server):
    """The XGBoost package registered as model "xgb" (ModelDataUrl on S3); yields (client, booster)."""
    package, booster = xgb_package
    s3_server.client().upload_file(str(package), s3_env, f"models/{package.name}")
    client = api.client()
    arn = client.create_model(ModelName="xgb", ExecutionRoleArn=ROLE,
                              PrimaryContainer={"ModelDataUrl": f"s3://{s3_env}/models/{package.name}"})["ModelArn"]
    assert arn == "arn:aws:sagemaker:us-west-2:123456789012:model/xgb"
    return client, booster


def put(s3_server, bucket: str, key: str, data: bytes) -> None:
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=data)


def get(s3_server, bucket: str, key: str) -> bytes:
    return s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def keys(s3_server, bucket: str, prefix: str) -> list[str]:
    pages = s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


def csv_rows(x: np.ndarray, first: int = 0) -> bytes:
    """Rows "id<i>,f1,...,f6" (empty fields are missing values)."""
    return "".join(",".join([f"id{first + i}"] + ["" if np.isnan(v) else repr(float(v)) for v in row]) + "\n"
                   for i, row in enumerate(x)).encode()


def expected(booster, x: np.ndarray) -> np.ndarray:
    return booster.inplace_predict(x)


def transform(client, name: str, model: str = "xgb", wait: bool = True, **kw) -> dict:
    client.create_transform_job(TransformJobName=name, ModelName=model, TransformResources=RESOURCES, **kw)
    if not wait:
        return {}
    try:  # botocore's own waiter: Completed and Stopped are success, Failed its failure state
        client.get_waiter("transform_job_completed_or_stopped").wait(
            TransformJobName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 300})
    except WaiterError as exc:
        assert "Failed" in str(exc), exc
    return client.describe_transform_job(TransformJobName=name)


def csv_input(bucket: str, prefix: str, **kw) -> dict:
    return {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/{prefix}"}},
            "ContentType": "text/csv", "SplitType": "Line", **kw}


def test_csv_with_an_id_column_gets_id_and_prediction(xgb_model, s3_env, s3_server):
    client, booster = xgb_model
    x = xgboost_models.data(70, seed=3)
    put(s3_server, s3_env, "data/part-a.csv", csv_rows(x[:40]))
    put(s3_server, s3_env, "data/2026/part-b.csv", csv_rows(x[40:], first=40))
    d = transform(client, "csv-ids", TransformInput=csv_input(s3_env, "data/"), BatchStrategy="MultiRecord",
                  TransformOutput={"S3OutputPath": f"s3://{s3_env}/scored", "Accept": "text/csv", "AssembleWith": "Line"},
                  DataProcessing=CSV_ID, Tags=[{"Key": "team", "Value": "risk"}])
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    assert d["DataProcessing"] == CSV_ID and d["TransformStartTime"] <= d["TransformEndTime"]
    # Relative folders kept, one .out per input object, predictions in input order.
    assert keys(s3_server, s3_env, "scored/") == ["scored/2026/part-b.csv.out", "scored/part-a.csv.out"]
    lines = (get(s3_server, s3_env, "scored/part-a.csv.out") + get(s3_server, s3_env, "scored/2026/part-b.csv.out")).decode().splitlines()
    assert [line.split(",")[0] for line in lines] == [f"id{i}" for i in range(70)]
    np.testing.assert_allclose([float(line.split(",")[1]) for line in lines], expected(booster, x), rtol=1e-5, atol=1e-6)
    summary = client.list_transform_jobs()["TransformJobSummaries"][0]
    assert summary["TransformJobName"] == "csv-ids" and summary["TransformJobStatus"] == "Completed"
    assert client.list_tags(ResourceArn=d["TransformJobArn"])["Tags"] == [{"Key": "team", "Value": "risk"}]


def test_json_lines_with_features_and_ids(xgb_model, s3_env, s3_server):
    client, booster = xgb_model
    x = xgboost_models.data(25, seed=4, missing=0)
    lines = [json.dumps({"id": f"r{i}", "features": row.tolist(), "note": "kept out"}) for i, row in enumerate(x)]
    put(s3_server, s3_env, "jl/records.jsonl", ("\n".join(lines) + "\n").encode())
    d = transform(client, "jsonl", BatchStrategy="MultiRecord",
                  TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{s3_env}/jl/"}},
                                  "ContentType": "application/jsonlines", "SplitType": "Line"},
                  TransformOutput={"S3OutputPath": f"s3://{s3_env}/jl-out", "Accept": "application/jsonlines",
                                   "AssembleWith": "Line"},
                  DataProcessing={"InputFilter": "$.features", "JoinSource": "Input",
                                  "OutputFilter": "$['id','SageMakerOutput']"})
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    out = [json.loads(line) for line in get(s3_server, s3_env, "jl-out/records.jsonl.out").decode().splitlines()]
    assert [sorted(o) for o in out] == [["SageMakerOutput", "id"]] * 25 and [o["id"] for o in out] == [f"r{i}" for i in range(25)]
    np.testing.assert_allclose([np.ravel(o["SageMakerOutput"])[0] for o in out], expected(booster, x), rtol=1e-5, atol=1e-6)


def test_an_image_classifier_fed_npy_whole_objects(api, cnn_package, s3_env, s3_server):
    client = api.client()
    s3_server.client().upload_file(str(cnn_package), s3_env, "models/cnn.tar.gz")
    client.create_model(ModelName="cnn", ExecutionRoleArn=ROLE,
                        PrimaryContainer={"ModelDataUrl": f"s3://{s3_env}/models/cnn.tar.gz"})
    images = np.random.default_rng(5).standard_normal((3, 1, 3, 32, 32), dtype=np.float32)
    for i, image in enumerate(images):
        buf = io.BytesIO()
        np.save(buf, image)
        put(s3_server, s3_env, f"images/img{i}.npy", buf.getvalue())
    d = transform(client, "images", model="cnn",
                  TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{s3_env}/images/"}},
                                  "ContentType": "application/x-npy"},
                  TransformOutput={"S3OutputPath": f"s3://{s3_env}/labels", "Accept": "application/x-npy"})
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    model = Model(str(cnn_package))
    for i, image in enumerate(images):
        got = np.load(io.BytesIO(get(s3_server, s3_env, f"labels/img{i}.npy.out")))
        np.testing.assert_allclose(got, model.run({"data": image})[0], rtol=1e-5, atol=1e-6)


def test_gzip_csv_in_small_multirecord_payloads(xgb_model, s3_env, s3_server):
    client, booster = xgb_model
    x = xgboost_models.data(30000, seed=6)
    raw = "".join(",".join("" if np.isnan(v) else repr(float(v)) for v in row) + "\n" for row in x).encode()
    assert len(raw) > 2 << 20  # several 1 MB payloads
    put(s3_server, s3_env, "big/rows.csv.gz", gzip.compress(raw))
    d = transform(client, "gz", TransformInput=csv_input(s3_env, "big/", CompressionType="Gzip"),
                  BatchStrategy="MultiRecord", MaxPayloadInMB=1,
                  TransformOutput={"S3OutputPath": f"s3://{s3_env}/big-out", "Accept": "text/csv", "AssembleWith": "Line"})
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    got = np.array(get(s3_server, s3_env, "big-out/rows.csv.gz.out").decode().split(), dtype=np.float64)
    np.testing.assert_allclose(got, expected(booster, x), rtol=1e-5, atol=1e-6)


def test_failures_name_the_object_and_record_and_spare_the_other_objects(xgb_model, s3_env, s3_server):
    client, _ = xgb_model
    x = xgboost_models.data(10, seed=7)
    put(s3_server, s3_env, "mixed/a-good.csv", csv_rows(x))
    put(s3_server, s3_env, "mixed/b-bad.csv", csv_rows(x[:3]) + b"id3,1.0,not-a-number,3,4,5,6\n")
    d = transform(client, "mixed", TransformInput=csv_input(s3_env, "mixed/"), BatchStrategy="SingleRecord",
                  TransformOutput={"S3OutputPath": f"s3://{s3_env}/mixed-out", "Accept": "text/csv", "AssembleWith": "Line"},
                  DataProcessing=CSV_ID)
    assert d["TransformJobStatus"] == "Failed"
    assert f"s3://{s3_env}/mixed/b-bad.csv" in d["FailureReason"] and "record 4" in d["FailureReason"], d["FailureReason"]
    assert keys(s3_server, s3_env, "mixed-out/") == ["mixed-out/a-good.csv.out"]  # the failed object has no .out
    # A record larger than MaxPayloadInMB, and an OutputFilter index beyond the joined record.
    put(s3_server, s3_env, "huge/one.csv", b"id0," + b"1," * 600_000 + b"1\n")
    d = transform(client, "huge", TransformInput=csv_input(s3_env, "huge/"), BatchStrategy="SingleRecord", MaxPayloadInMB=1,
                  TransformOutput={"S3OutputPath": f"s3://{s3_env}/huge-out", "AssembleWith": "Line", "Accept": "text/csv"})
    assert d["TransformJobStatus"] == "Failed" and "huge/one.csv" in d["FailureReason"] and "record 1" in d["FailureReason"]
    assert "MaxPayloadInMB" in d["FailureReason"] or "1 MB" in d["FailureReason"], d["FailureReason"]
    d = transform(client, "beyond", TransformInput=csv_input(s3_env, "mixed/a-good"), BatchStrategy="MultiRecord",
                  TransformOutput={"S3OutputPath": f"s3://{s3_env}/beyond-out", "Accept": "text/csv", "AssembleWith": "Line"},
                  DataProcessing={"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,9]"})
    assert d["TransformJobStatus"] == "Failed" and "record 1" in d["FailureReason"], d["FailureReason"]
    assert keys(s3_server, s3_env, "beyond-out/") == []


def test_bad_requests_are_refused_at_create(xgb_model, s3_env, s3_server):
    client, _ = xgb_model
    put(s3_server, s3_env, "in/x.csv", b"1,2,3,4,5,6\n")

    def refused(**kw) -> str:
        body = dict(TransformJobName="bad", ModelName="xgb", TransformInput=csv_input(s3_env, "in/"),
                    TransformOutput={"S3OutputPath": f"s3://{s3_env}/o", "AssembleWith": "Line", "Accept": "text/csv"},
                    TransformResources=RESOURCES)
        body.update(kw)
        with pytest.raises(ClientError) as err:
            client.create_transform_job(**body)
        assert err.value.response["Error"]["Code"] == "ValidationException", err.value.response
        return err.value.response["Error"]["Message"]

    assert refused(ModelName="ghost") == 'Could not find model "arn:aws:sagemaker:us-west-2:123456789012:model/ghost".'
    msg = refused(DataProcessing={"OutputFilter": "$[0:2,246:]"})
    assert "Invalid JsonPath: $[0:2,246:]: only single range filters of format (eg: [1:5]) are supported" in msg
    assert "InputFilter" in refused(DataProcessing={"InputFilter": "features"})  # no leading $
    assert "BatchStrategy" in refused(BatchStrategy="MultiRecord", TransformInput={**csv_input(s3_env, "in/"), "SplitType": "None"})
    assert "No S3 objects found" in refused(TransformInput=csv_input(s3_env, "nothing-here/"))
    assert "enum value set" in refused(TransformInput={**csv_input(s3_env, "in/"), "SplitType": "Words"})
    with pytest.raises(ClientError) as err:
        client.describe_transform_job(TransformJobName="ghost")
    assert err.value.response["Error"]["Code"] == "ValidationException"  # as AWS (the waiter relies on it)
    with pytest.raises(ClientError) as err:
        client.create_model(ModelName="xgb", PrimaryContainer={"ModelDataUrl": f"s3://{s3_env}/m.tar.gz"})
    assert err.value.response["Error"]["Message"].startswith('Cannot create already existing model "arn:aws:sagemaker:')


def test_models_list_describe_delete(api, s3_env):
    client = api.client()
    for name in ("alpha", "beta", "alpha-two"):
        client.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": f"s3://{s3_env}/{name}.tar.gz"})
        time.sleep(0.01)
    assert [m["ModelName"] for m in client.list_models()["Models"]] == ["alpha-two", "beta", "alpha"]  # newest first
    assert [m["ModelName"] for m in client.list_models(NameContains="ALPHA", SortBy="Name", SortOrder="Ascending")["Models"]] == ["alpha", "alpha-two"]
    first = client.list_models(SortOrder="Ascending")["Models"][0]
    assert [m["ModelName"] for m in client.list_models(CreationTimeAfter=first["CreationTime"], SortOrder="Ascending")["Models"]] == [
        "alpha", "beta", "alpha-two"]  # ListModels' CreationTimeAfter is ">="
    assert client.describe_model(ModelName="beta")["PrimaryContainer"] == {"ModelDataUrl": f"s3://{s3_env}/beta.tar.gz"}
    client.delete_model(ModelName="beta")
    with pytest.raises(ClientError) as err:
        client.describe_model(ModelName="beta")
    assert err.value.response["Error"]["Message"] == 'Could not find model "arn:aws:sagemaker:us-east-1:123456789012:model/beta".'


def big_job_input(s3_server, bucket: str, prefix: str, objects: int = 12, rows: int = 400) -> None:
    x = xgboost_models.data(rows, seed=8)
    for i in range(objects):
        put(s3_server, bucket, f"{prefix}/part-{i:02d}.csv", csv_rows(x))


def test_stop_during_a_large_job_leaves_no_partial_output(xgb_model, s3_env, s3_server):
    client, _ = xgb_model
    big_job_input(s3_server, s3_env, "many")
    transform(client, "to-stop", wait=False, TransformInput=csv_input(s3_env, "many/"), BatchStrategy="SingleRecord",
              TransformOutput={"S3OutputPath": f"s3://{s3_env}/many-out", "AssembleWith": "Line", "Accept": "text/csv"},
              DataProcessing=CSV_ID)
    end = time.monotonic() + 240
    while not keys(s3_server, s3_env, "many-out/"):
        assert time.monotonic() < end and client.describe_transform_job(TransformJobName="to-stop")["TransformJobStatus"] == "InProgress"
        time.sleep(0.1)
    client.stop_transform_job(TransformJobName="to-stop")
    d = client.get_waiter("transform_job_completed_or_stopped").wait(TransformJobName="to-stop", WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    d = client.describe_transform_job(TransformJobName="to-stop")
    assert d["TransformJobStatus"] == "Stopped"
    written = keys(s3_server, s3_env, "many-out/")
    assert 0 < len(written) < 12
    for key in written:  # every .out there is whole
        assert len(get(s3_server, s3_env, key).decode().splitlines()) == 400


def test_a_worker_killed_mid_transform_is_replaced_and_the_job_completes(xgb_model, api, s3_env, s3_server):
    client, _ = xgb_model
    big_job_input(s3_server, s3_env, "crash", objects=6)
    transform(client, "survivor", wait=False, TransformInput=csv_input(s3_env, "crash/"), BatchStrategy="SingleRecord",
              TransformOutput={"S3OutputPath": f"s3://{s3_env}/crash-out", "AssembleWith": "Line", "Accept": "text/csv"},
              DataProcessing=CSV_ID)
    end = time.monotonic() + 240
    while "transform" not in client.describe_transform_job(TransformJobName="survivor")["ResponseMetadata"]["HTTPHeaders"].get("x-neocompile-stage", ""):
        assert time.monotonic() < end
        time.sleep(0.1)
    for pid in api.worker_pids():
        os.kill(pid, signal.SIGKILL)
    client.get_waiter("transform_job_completed_or_stopped").wait(TransformJobName="survivor", WaiterConfig={"Delay": 1, "MaxAttempts": 300})
    d = client.describe_transform_job(TransformJobName="survivor")
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    assert len(keys(s3_server, s3_env, "crash-out/")) == 6
    assert "transform job survivor: INPROGRESS -> STARTING" in api.log()


def test_models_and_transform_commands(xgb_model, api, s3_env, s3_server, tmp_path):
    x = xgboost_models.data(12, seed=9)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "rows.csv").write_bytes(csv_rows(x))
    env = {**os.environ, "NEOCOMPILE_ENDPOINT_URL": api.url, "AWS_DEFAULT_REGION": REGION}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "neocompile", *args], capture_output=True, text=True, env=env, timeout=300)

    assert "xgb" in cli("models", "list").stdout
    done = cli("transform", "create", "cli-job", "--model-name", "xgb", "--input", str(tmp_path / "in"),
               "--content-type", "text/csv", "--split-type", "Line", "--output", str(tmp_path / "out"),
               "--accept", "text/csv", "--assemble-with", "Line", "--batch-strategy", "MultiRecord",
               "--input-filter", "$[1:]", "--join-source", "Input", "--output-filter", "$[0,-1]", "--wait")
    assert done.returncode == 0, done.stderr
    assert "cli-job Completed" in done.stderr
    lines = (tmp_path / "out" / "rows.csv.out").read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == [f"id{i}" for i in range(12)]
    np.testing.assert_allclose([float(line.split(",")[1]) for line in lines], xgb_model[1].inplace_predict(x), rtol=1e-5)
    assert json.loads(cli("transform", "describe", "cli-job").stdout)["TransformJobStatus"] == "Completed"
    missing = cli("models", "describe", "ghost")
    assert missing.returncode == 1 and "Could not find model" in missing.stderr


def test_a_model_image_without_a_container_engine_fails_the_job_clearly(tmp_path, store, s3_env, s3_server):
    """PrimaryContainer.Image runs in docker or podman; a worker with neither says so (CI machines have none; here
    the engine is pointed at a path that does not exist, so the test means the same with docker installed)."""
    from tests.service.apiserver import ApiProcess

    server = ApiProcess(tmp_path / "data", store=store, workers=1,
                        env={"NEOCOMPILE_CONTAINER_ENGINE": str(tmp_path / "no-such-engine")}).start()
    try:
        client = server.client()
        client.create_model(ModelName="imaged", PrimaryContainer={"Image": "registry.example/scorer:1"})
        put(s3_server, s3_env, "img-in/x.csv", b"1,2,3\n")
        d = transform(client, "imaged-job", model="imaged", TransformInput=csv_input(s3_env, "img-in/"),
                      TransformOutput={"S3OutputPath": f"s3://{s3_env}/img-out"})
        assert d["TransformJobStatus"] == "Failed"
        assert "PrimaryContainer.Image 'registry.example/scorer:1' must run in a container engine" in d["FailureReason"]
        assert "not found" in d["FailureReason"]
    finally:
        server.stop()
