"""make test-docker, last step: the image as a SageMaker inference container in a batch transform.

A `neocompile serve` on the host (one local worker) gets a model whose PrimaryContainer.Image is the image under test
and whose ModelDataUrl is the ml_c4 package the containers compiled; its worker runs `docker run IMAGE serve` (the
entrypoint starts `neocompile serve-model` on the model in /opt/ml/model) and sends it the CSV records through
POST /invocations. The predictions must equal the package run in this process.

    python docker/transform_e2e.py IMAGE PACKAGE WORKDIR
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np

from neocompile.runtime import Model


def main(image: str, package: str, work: str) -> int:
    work_dir = Path(work)
    (work_dir / "in").mkdir(parents=True)
    model = Model(package)
    rows = np.random.default_rng(0).standard_normal((3, *model.input_shapes[model.input_names[0]][1:]), dtype=np.float32)
    (work_dir / "in" / "images.csv").write_text("".join(",".join(map(repr, r.ravel().tolist())) + "\n" for r in rows))
    server = subprocess.Popen([sys.executable, "-m", "neocompile", "serve", "--port", "0", "--workers", "1",
                               "--data-dir", str(work_dir / "jobs")], stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().rsplit(" ", 1)[-1].strip()
        sm = boto3.client("sagemaker", endpoint_url=url, region_name="us-east-1", aws_access_key_id="t",
                          aws_secret_access_key="t")
        sm.create_model(ModelName="image-model", PrimaryContainer={"Image": image, "ModelDataUrl": Path(package).absolute().as_uri()})
        sm.create_transform_job(
            TransformJobName="through-the-image", ModelName="image-model", BatchStrategy="MultiRecord",
            TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": (work_dir / "in").as_uri() + "/"}},
                            "ContentType": "text/csv", "SplitType": "Line"},
            TransformOutput={"S3OutputPath": (work_dir / "out").as_uri(), "Accept": "text/csv", "AssembleWith": "Line"},
            TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1})
        end = time.monotonic() + 600
        while (d := sm.describe_transform_job(TransformJobName="through-the-image"))["TransformJobStatus"] == "InProgress":
            if time.monotonic() > end:
                raise SystemExit("docker/test.sh: FAILED: the transform job through the image is still running after 600 s")
            time.sleep(1)
        if d["TransformJobStatus"] != "Completed":
            raise SystemExit(f"docker/test.sh: FAILED: transform through {image}: {d['TransformJobStatus']}: {d.get('FailureReason')}")
        got = np.array([[float(v) for v in line.split(",")] for line in (work_dir / "out" / "images.csv.out").read_text().splitlines()])
        want = np.concatenate([model.run([r[None]])[0].reshape(1, -1) for r in rows])
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-5, atol=1e-6):
            raise SystemExit(f"docker/test.sh: FAILED: {image} as an inference container answered {got} for {want}")
        print(f"docker/test.sh: batch transform through {image} (docker run IMAGE serve: serve-model): "
              f"{len(rows)} records, predictions equal the package's")
        return 0
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
