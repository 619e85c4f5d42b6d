"""The job API end to end: a real ``neocompile serve`` (SQLite and PostgreSQL stores) driven by boto3, the aws CLI and
``neocompile jobs``; real compiles, a real S3 server, real processes stopped, killed and restarted."""
from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from unittest import mock

import numpy as np
import psutil
import pytest
from botocore import UNSIGNED
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from neocompile.digest import blake2b_file
from neocompile.runtime import Model
from tests.service.apiserver import REGION, ROLE, ApiProcess, wait_for

CONFIG = '{"data": [1, 3, 64, 64]}'
# A compile that runs for minutes (MetaSchedule tuning), to be stopped or timed out while it runs.
SLOW = '{"tuning": {"trials": 20000}}'


def create(client, name: str, model_uri: str, output: str, options: str | None = None, max_runtime: int = 900, **extra):
    out = {"S3OutputLocation": output, "TargetDevice": "ml_c4"}
    if options:
        out["CompilerOptions"] = options
    return client.create_compilation_job(
        CompilationJobName=name, RoleArn=ROLE,
        InputConfig={"S3Uri": model_uri, "Framework": "ONNX", "DataInputConfig": CONFIG},
        OutputConfig=out, StoppingCondition={"MaxRuntimeInSeconds": max_runtime}, **extra)


def objects(s3_server, bucket: str, prefix: str) -> list[str]:
    return [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


def test_boto3_create_wait_download_and_run(api, model_uri, s3_env, s3_server, tmp_path):
    client = api.client()
    arn = create(client, "resnet-ish-1", model_uri, f"s3://{s3_env}/out", Tags=[{"Key": "team", "Value": "vision"}])["CompilationJobArn"]
    assert arn == "arn:aws:sagemaker:us-west-2:123456789012:compilation-job/resnet-ish-1"
    d = wait_for(client, "resnet-ish-1")
    assert d["CompilationJobStatus"] == "COMPLETED", d["FailureReason"]
    assert d["CreationTime"] <= d["CompilationStartTime"] <= d["CompilationEndTime"] <= d["LastModifiedTime"]
    uri = d["ModelArtifacts"]["S3ModelArtifacts"]
    assert uri == f"s3://{s3_env}/out/model-ml_c4.tar.gz"
    assert json.loads(d["DerivedInformation"]["DerivedDataInputConfig"]) == {"data": [1, 3, 64, 64]}
    assert d["RoleArn"] == ROLE and d["InputConfig"]["Framework"] == "ONNX" and d["StoppingCondition"] == {"MaxRuntimeInSeconds": 900}
    assert d["ResponseMetadata"]["HTTPHeaders"]["x-neocompile-stage"] == "completed"
    assert d["InferenceImage"].startswith("neocompile:")  # ml_* targets: the image that serves packages
    local = tmp_path / "model-ml_c4.tar.gz"
    s3_server.client().download_file(s3_env, "out/model-ml_c4.tar.gz", str(local))
    assert d["ModelDigests"]["ArtifactDigest"] == blake2b_file(local)
    out = Model(str(local)).run({"data": np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)})
    assert np.isfinite(out[0]).all()
    # Tags given at create, then AddTags / DeleteTags on the job's ARN.
    assert client.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "vision"}]
    client.add_tags(ResourceArn=arn, Tags=[{"Key": "stage", "Value": "prod"}])
    client.delete_tags(ResourceArn=arn, TagKeys=["team"])
    assert client.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "stage", "Value": "prod"}]
    summary = client.list_compilation_jobs()["CompilationJobSummaries"][0]
    assert summary["CompilationJobName"] == "resnet-ish-1" and summary["CompilationTargetDevice"] == "ml_c4"
    # The stage progress is in the server's log while the job runs.
    assert "job resnet-ish-1: compile done" in api.log()
    client.delete_compilation_job(CompilationJobName="resnet-ish-1")
    with pytest.raises(client.exceptions.ResourceNotFound):
        client.describe_compilation_job(CompilationJobName="resnet-ish-1")


def test_aws_cli_drives_the_server(api, model_uri, s3_env, tmp_path):
    env = {**os.environ, "AWS_DEFAULT_REGION": REGION}
    env.pop("AWS_ENDPOINT_URL", None)  # that one points at the S3 server

    def aws(*args: str) -> dict:
        done = subprocess.run([str(Path(sys.executable).parent / "aws"), "sagemaker", *args, "--endpoint-url", api.url,
                               "--output", "json"], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if done.stdout.strip() else {}

    arn = aws("create-compilation-job", "--compilation-job-name", "cli-job", "--role-arn", ROLE,
              "--input-config", json.dumps({"S3Uri": model_uri, "Framework": "ONNX", "DataInputConfig": CONFIG}),
              "--output-config", json.dumps({"S3OutputLocation": f"s3://{s3_env}/cli", "TargetDevice": "ml_c4"}),
              "--stopping-condition", "MaxRuntimeInSeconds=900")["CompilationJobArn"]
    assert arn.endswith(":compilation-job/cli-job")
    end = time.monotonic() + 300
    while (d := aws("describe-compilation-job", "--compilation-job-name", "cli-job"))["CompilationJobStatus"] not in ("COMPLETED", "FAILED"):
        assert time.monotonic() < end
        time.sleep(1)
    assert d["CompilationJobStatus"] == "COMPLETED", d["FailureReason"]
    listed = aws("list-compilation-jobs", "--status-equals", "COMPLETED")
    assert [j["CompilationJobName"] for j in listed["CompilationJobSummaries"]] == ["cli-job"]
    bad = subprocess.run([str(Path(sys.executable).parent / "aws"), "sagemaker", "describe-compilation-job",
                          "--compilation-job-name", "no-such-job", "--endpoint-url", api.url], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "ResourceNotFound" in bad.stderr


def test_stop_ends_a_running_compile_within_two_seconds(api, model_uri, s3_env, s3_server):
    client = api.client()
    create(client, "to-stop", model_uri, f"s3://{s3_env}/stopped", options=SLOW)
    wait_for(client, "to-stop", statuses=("INPROGRESS",), stage="compile", timeout=120)
    with pytest.raises(ClientError) as err:  # a running job cannot be deleted
        client.delete_compilation_job(CompilationJobName="to-stop")
    assert err.value.response["Error"]["Code"] == "ValidationException" and "INPROGRESS" in err.value.response["Error"]["Message"]
    started = time.monotonic()
    client.stop_compilation_job(CompilationJobName="to-stop")
    assert client.describe_compilation_job(CompilationJobName="to-stop")["CompilationJobStatus"] in ("STOPPING", "STOPPED")
    d = wait_for(client, "to-stop", statuses=("STOPPED",), timeout=10, poll=0.05)
    took = time.monotonic() - started
    assert took < 2.0, f"Stop took {took:.2f} s"
    assert d["CompilationEndTime"] >= d["CompilationStartTime"]
    assert objects(s3_server, s3_env, "stopped") == []
    # No compile is left running (multiprocessing's resource tracker is the worker's only child).
    for pid in api.worker_pids():
        assert [c.cmdline() for c in psutil.Process(pid).children(recursive=True)
                if c.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(c.cmdline())] == []
    client.stop_compilation_job(CompilationJobName="to-stop")  # idempotent
    client.delete_compilation_job(CompilationJobName="to-stop")


def test_max_runtime_fails_the_job_with_a_timeout_reason(api, model_uri, s3_env, s3_server):
    client = api.client()
    # Importing the model alone takes longer than 3 s here (tuning would fit itself into the time left instead).
    create(client, "too-slow", model_uri, f"s3://{s3_env}/slow", max_runtime=3)
    d = wait_for(client, "too-slow", timeout=120)
    assert d["CompilationJobStatus"] == "FAILED"
    reason = d["FailureReason"]
    assert reason.startswith("ClientError: The compilation job exceeded StoppingCondition.MaxRuntimeInSeconds") and "stage" in reason
    assert (d["CompilationEndTime"] - d["CompilationStartTime"]).total_seconds() < 3 + 2
    assert objects(s3_server, s3_env, "slow") == []


def test_a_worker_killed_mid_job_is_replaced_and_the_job_rerun(api, model_uri, s3_env):
    client = api.client()
    create(client, "survivor", model_uri, f"s3://{s3_env}/survivor")
    wait_for(client, "survivor", statuses=("INPROGRESS",), stage="load", timeout=120)
    killed = api.worker_pids()
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    killed_at = dt.datetime.now()
    d = wait_for(client, "survivor", timeout=300)
    assert d["CompilationJobStatus"] == "COMPLETED", d["FailureReason"]
    assert not set(api.worker_pids()) & set(killed)
    # Re-queued within the lease (10 s) + one recovery pass (2 s), then run again by the replacement worker.
    line = next(line for line in api.log().splitlines() if "job survivor: INPROGRESS -> STARTING" in line)
    requeued_at = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    assert (requeued_at - killed_at).total_seconds() < 10 + 2 + 1, line


def test_jobs_and_history_survive_a_server_restart(tmp_path, store, model_uri, s3_env):
    first = ApiProcess(tmp_path / "data", store=store, workers=1).start()
    client = first.client()
    create(client, "before", model_uri, f"s3://{s3_env}/before")
    assert wait_for(client, "before")["CompilationJobStatus"] == "COMPLETED"
    create(client, "during", model_uri, f"s3://{s3_env}/during")
    wait_for(client, "during", statuses=("INPROGRESS",), stage="load", timeout=120)
    first.stop(signal.SIGKILL)  # the server dies at once; its workers follow (re-queueing what they ran)
    second = ApiProcess(tmp_path / "data", store=store, workers=1).start()
    try:
        client = second.client()
        assert client.describe_compilation_job(CompilationJobName="before")["CompilationJobStatus"] == "COMPLETED"
        d = wait_for(client, "during", timeout=300)
        assert d["CompilationJobStatus"] == "COMPLETED", d["FailureReason"]
        assert {j["CompilationJobName"] for j in client.list_compilation_jobs()["CompilationJobSummaries"]} == {"before", "during"}
    finally:
        second.stop()


def test_concurrent_creates_of_one_name_have_one_winner(api_only):
    client = api_only.client()

    def attempt(_):
        try:
            return create(client, "contended", "s3://bucket/model.tar.gz", "s3://bucket/out")["CompilationJobArn"]
        except client.exceptions.ResourceInUse as exc:
            return exc.response["Error"]["Code"]

    with cf.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, range(16)))
    assert sum(r.startswith("arn:") for r in results) == 1 and results.count("ResourceInUse") == 15


def test_paginator_walks_a_thousand_jobs_while_more_arrive(api_only):
    client = api_only.client()
    names = [f"job-{i:04d}" for i in range(1000)]
    with cf.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: create(client, n, "s3://bucket/model.tar.gz", "s3://bucket/out"), names))
    stop = threading.Event()

    def arrivals():
        i = 0
        while not stop.is_set() and i < 200:
            create(client, f"late-{i:03d}", "s3://bucket/model.tar.gz", "s3://bucket/out")
            i += 1

    feeder = threading.Thread(target=arrivals)
    feeder.start()
    try:
        listed = [(j["CreationTime"], j["CompilationJobName"]) for page in client.get_paginator("list_compilation_jobs")
                  .paginate(PaginationConfig={"PageSize": 37}) for j in page["CompilationJobSummaries"]]
    finally:
        stop.set()
        feeder.join()
    seen = [n for _, n in listed]
    assert len(seen) == len(set(seen)), "a job was listed twice"
    assert sorted(n for n in seen if n.startswith("job-")) == names, "a job was missed"
    assert listed == sorted(listed)  # CreationTime ascending (the default), ties by name
    by_name = [j["CompilationJobName"] for page in client.get_paginator("list_compilation_jobs").paginate(
        NameContains="JOB-09", SortBy="Name", SortOrder="Descending", PaginationConfig={"PageSize": 30})
        for j in page["CompilationJobSummaries"]]
    assert by_name == sorted((n for n in names if "job-09" in n), reverse=True)


def test_list_filters_and_tokens(api_only):
    client = api_only.client()
    for n in ("alpha-1", "beta-1", "alpha-2"):
        create(client, n, "s3://bucket/model.tar.gz", "s3://bucket/out")
        time.sleep(0.02)
    client.stop_compilation_job(CompilationJobName="beta-1")  # queued: STOPPED at once
    jobs = {j["CompilationJobName"]: j for j in client.list_compilation_jobs()["CompilationJobSummaries"]}
    assert jobs["beta-1"]["CompilationJobStatus"] == "STOPPED" and jobs["alpha-1"]["CompilationJobStatus"] == "STARTING"
    names = lambda **kw: [j["CompilationJobName"] for j in client.list_compilation_jobs(**kw)["CompilationJobSummaries"]]  # noqa: E731
    assert names(StatusEquals="STOPPED") == ["beta-1"]
    assert names(NameContains="alpha", SortOrder="Descending") == ["alpha-2", "alpha-1"]
    assert names(CreationTimeAfter=jobs["alpha-1"]["CreationTime"]) == ["beta-1", "alpha-2"]  # strictly after
    assert names(CreationTimeBefore=jobs["alpha-2"]["CreationTime"]) == ["alpha-1", "beta-1"]
    assert names(LastModifiedTimeAfter=jobs["alpha-2"]["LastModifiedTime"]) == ["beta-1"]
    assert names(SortBy="Status") == ["alpha-1", "alpha-2", "beta-1"]  # STARTING < STOPPED, then by name
    page = client.list_compilation_jobs(MaxResults=1)
    token = page["NextToken"]
    for bad, why in ((token[:-2] + ("00" if token[-2:] != "00" else "11"), "altered"), ("garbage", "altered")):
        with pytest.raises(ClientError) as err:
            client.list_compilation_jobs(MaxResults=1, NextToken=bad)
        assert err.value.response["Error"]["Code"] == "ValidationException" and why in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:  # a token is bound to its filters and order
        client.list_compilation_jobs(MaxResults=1, NextToken=token, SortBy="Name")
    assert "other filters" in err.value.response["Error"]["Message"]


def test_bad_requests_get_aws_errors_and_never_a_5xx(api_only):
    client = api_only.client()

    def code_and_message(call, **kw):
        with pytest.raises(ClientError) as err:
            call(**kw)
        e = err.value.response
        assert e["ResponseMetadata"]["HTTPStatusCode"] == 400, e
        return e["Error"]["Code"], e["Error"]["Message"]

    good = dict(CompilationJobName="ok", RoleArn=ROLE, InputConfig={"S3Uri": "s3://b/m.tar.gz", "Framework": "ONNX"},
                OutputConfig={"S3OutputLocation": "s3://b/o", "TargetDevice": "ml_c4"}, StoppingCondition={})
    code, msg = code_and_message(client.create_compilation_job, **{**good, "CompilationJobName": "bad_name!"})
    assert code == "ValidationException" and msg.startswith("1 validation error detected: Value 'bad_name!' at 'compilationJobName'")
    code, msg = code_and_message(client.create_compilation_job, **{**good, "OutputConfig": {"S3OutputLocation": "s3://b/o", "TargetDevice": "nope"},
                                                                  "RoleArn": "arn:aws:iam::1:role/x"})
    assert msg.startswith("2 validation errors detected: ") and "outputConfig.targetDevice" in msg and "Member must satisfy enum value set" in msg
    code, msg = code_and_message(client.create_compilation_job, **{**good, "ModelPackageVersionArn":
                                                                  "arn:aws:sagemaker:us-west-2:123456789012:model-package/p/1"})
    assert code == "ValidationException" and "ModelPackageVersionArn" in msg
    code, msg = code_and_message(client.create_compilation_job, **{**good, "StoppingCondition": {"MaxRuntimeInSeconds": 2419201}})
    assert "stoppingCondition.maxRuntimeInSeconds" in msg
    assert code_and_message(client.list_compilation_jobs, MaxResults=101)[1].endswith("Member must have value less than or equal to 100")
    assert code_and_message(client.describe_compilation_job, CompilationJobName="ghost") == ("ResourceNotFound", "Could not find compilation job 'ghost'.")
    assert code_and_message(client.stop_compilation_job, CompilationJobName="ghost")[0] == "ResourceNotFound"
    assert code_and_message(client.add_tags, ResourceArn="arn:aws:sagemaker:us-west-2:123456789012:compilation-job/ghost",
                            Tags=[{"Key": "k", "Value": "v"}])[0] == "ResourceNotFound"
    assert code_and_message(client.list_training_jobs)[0] == "UnknownOperationException"

    def raw(body: bytes, headers: dict, method: str = "POST", path: str = "/"):
        req = urllib.request.Request(api_only.url + path, data=body if method == "POST" else None, method=method,
                                     headers={"Content-Type": "application/x-amz-json-1.1", **headers})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    target = {"X-Amz-Target": "SageMaker.ListCompilationJobs"}
    assert raw(b"{not json", target) == (400, {"__type": "SerializationException", "message": mock.ANY})
    assert raw(b"[]", target)[1]["__type"] == "ValidationException"
    assert raw(b"{}", {})[1]["__type"] == "UnknownOperationException"
    assert raw(b"{}", {"X-Amz-Target": "Other.ListCompilationJobs"})[0] == 400
    assert raw(b"{}", target, path="/elsewhere")[0] == 404
    status, body = raw(b" " * (2 << 20), target)
    assert status == 413 and "at most" in body["message"]
    assert raw(b"", {}, method="GET", path="/ping") == (200, {"Status": "ok", "Version": mock.ANY})


def test_signatures_are_verified_when_keys_are_configured(tmp_path, store):
    keys = tmp_path / "keys"
    keys.write_text("[team]\naws_access_key_id = AKIDTEAM\naws_secret_access_key = team-secret\n")
    server = ApiProcess(tmp_path / "data", store=store, workers=0, keys_file=str(keys)).start()
    try:
        assert "SigV4 required (1 access key(s))" in server.proc.stdout.readline()
        good = server.client(keys={"aws_access_key_id": "AKIDTEAM", "aws_secret_access_key": "team-secret"})
        assert good.list_compilation_jobs()["CompilationJobSummaries"] == []

        def code(client) -> tuple[str, int]:
            with pytest.raises(ClientError) as err:
                client.list_compilation_jobs()
            return err.value.response["Error"]["Code"], err.value.response["ResponseMetadata"]["HTTPStatusCode"]

        assert code(server.client(keys={"aws_access_key_id": "AKIDOTHER", "aws_secret_access_key": "x"})) == ("UnrecognizedClientException", 400)
        assert code(server.client(keys={"aws_access_key_id": "AKIDTEAM", "aws_secret_access_key": "wrong"})) == ("InvalidSignatureException", 400)
        assert code(server.client(config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}))) == (
            "MissingAuthenticationTokenException", 403)
        # A request signed 6 minutes ago (a replay, or a skewed clock).
        request = AWSRequest("POST", server.url + "/", data=b"{}", headers={
            "X-Amz-Target": "SageMaker.ListCompilationJobs", "Content-Type": "application/x-amz-json-1.1"})
        stale = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=6)
        with mock.patch("botocore.auth.get_current_datetime", lambda *a, **k: stale):
            SigV4Auth(Credentials("AKIDTEAM", "team-secret"), "sagemaker", REGION).add_auth(request)
        req = urllib.request.Request(server.url + "/", data=b"{}", headers=dict(request.headers.items()), method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        body = json.loads(err.value.read())
        assert err.value.code == 400 and body["__type"] == "InvalidSignatureException" and "Signature expired" in body["message"]
    finally:
        server.stop()


def test_without_keys_the_server_refuses_to_listen_beyond_loopback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "neocompile", "serve", "--host", "0.0.0.0", "--port", "0",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if not k.startswith("NEOCOMPILE_ACCESS")})
    assert done.returncode != 0 and "binds 127.0.0.1 only" in done.stderr


def test_neocompile_jobs_commands(api, model_uri, s3_env):
    env = {**os.environ, "NEOCOMPILE_ENDPOINT_URL": api.url, "AWS_DEFAULT_REGION": REGION}

    def jobs(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "neocompile", "jobs", *args], capture_output=True, text=True,
                              env=env, timeout=300)

    done = jobs("create", "--job-name", "via-cli", "--framework", "ONNX", "--model-uri", model_uri, "--data-input-config",
                CONFIG, "--target-device", "ml_c4", "--output-location", f"s3://{s3_env}/jobs-cli", "--wait")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["arn:aws:sagemaker:us-west-2:123456789012:compilation-job/via-cli",
                                        f"s3://{s3_env}/jobs-cli/model-ml_c4.tar.gz"]
    assert "via-cli COMPLETED" in done.stderr  # the progress lines `wait` showed
    described = json.loads(jobs("describe", "via-cli", "--json").stdout)
    assert described["CompilationJobStatus"] == "COMPLETED" and described["Stage"] == "completed"
    assert "via-cli" in jobs("list").stdout
    failed = jobs("create", "--job-name", "no-model", "--framework", "ONNX", "--model-uri", f"s3://{s3_env}/missing.tar.gz",
                  "--data-input-config", CONFIG, "--target-device", "ml_c4", "--output-location", f"s3://{s3_env}/x", "--wait")
    assert failed.returncode == 1 and "no-model FAILED: ClientError: InputConfiguration: " in failed.stderr
    missing = jobs("describe", "ghost")
    assert missing.returncode == 1 and "ResourceNotFound" in missing.stderr


def test_standalone_workers_take_jobs_from_a_shared_postgres_store(tmp_path, postgres_db, model_uri, s3_env):
    """Scale-out: an API-only server and two `neocompile worker` processes that know only the store's URL."""
    server = ApiProcess(tmp_path / "data", store=postgres_db, workers=0).start()
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    workers = [subprocess.Popen([sys.executable, "-m", "neocompile", "worker", "--store", postgres_db],
                                stderr=log.open("w")) for log in logs]
    try:
        client = server.client()
        for name in ("left", "right"):
            create(client, name, model_uri, f"s3://{s3_env}/{name}")
        for name in ("left", "right"):
            d = wait_for(client, name, timeout=300)
            assert d["CompilationJobStatus"] == "COMPLETED", d["FailureReason"]
        assert sorted(log.read_text().count(": taken by ") for log in logs) == [1, 1]  # one job each
    finally:
        for proc in workers:
            proc.terminate()
            proc.wait(30)
        server.stop()
