"""`make run`'s job-API part: start `neocompile serve`, submit the example through an unmodified boto3 SageMaker
client, wait for it, fetch the package, stop the server.

    python examples/serve_demo.py OUT_DIR TARGET_DEVICE
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3

EXAMPLE = Path(__file__).resolve().parent / "model.tar.gz"


def main(out_dir: str, target: str) -> int:
    out = Path(out_dir).absolute()
    data = out / "service"
    server = subprocess.Popen([sys.executable, "-m", "neocompile", "serve", "--port", "0", "--workers", "1",
                               "--data-dir", str(data)], stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().rsplit(" ", 1)[-1].strip()
        print(f"== neocompile serve at {url} (job store {data}/jobs.db)")
        # No access keys are configured, so the server accepts any signature: placeholder credentials will do.
        client = boto3.client("sagemaker", endpoint_url=url, region_name="us-east-1",
                              aws_access_key_id="demo", aws_secret_access_key="demo")
        name = f"demo-{time.strftime('%H%M%S')}"
        arn = client.create_compilation_job(
            CompilationJobName=name, RoleArn="arn:aws:iam::123456789012:role/demo",
            InputConfig={"S3Uri": EXAMPLE.as_uri(), "Framework": "ONNX", "DataInputConfig": '{"data": [1, 3, 64, 64]}'},
            OutputConfig={"S3OutputLocation": (out / "jobs" / name).as_uri(), "TargetDevice": target},
            StoppingCondition={"MaxRuntimeInSeconds": 900})["CompilationJobArn"]
        print(f"== CreateCompilationJob: {arn}")
        shown = None
        while True:
            job = client.describe_compilation_job(CompilationJobName=name)
            line = f"{job['CompilationJobStatus']} {job['ResponseMetadata']['HTTPHeaders'].get('x-neocompile-stage', '')}"
            if line != shown:
                print(f"   {line}")
                shown = line
            if job["CompilationJobStatus"] in ("COMPLETED", "FAILED", "STOPPED"):
                break
            time.sleep(0.5)
        if job["CompilationJobStatus"] != "COMPLETED":
            print(f"job {name} {job['CompilationJobStatus']}: {job['FailureReason']}", file=sys.stderr)
            return 1
        artifact = Path(job["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("file://"))
        fetched = shutil.copy(artifact, out / f"{name}.tar.gz")
        print(f"== fetched {fetched} ({job['ModelDigests']['ArtifactDigest']})")
        return 0
    finally:
        server.terminate()
        server.wait(30)
        print("== server stopped")


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
