"""A real ``neocompile serve`` process for the tests: started on a free port, stopped, killed and restarted."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import psutil
from botocore.config import Config

REGION = "us-west-2"
ROLE = "arn:aws:iam::123456789012:role/neocompile-tests"


class ApiProcess:
    def __init__(self, data_dir: Path, store: str | None = None, workers: int = 1, keys_file: str | None = None,
                 env: dict[str, str] | None = None):
        self.data_dir, self.store, self.workers, self.keys_file = Path(data_dir), store, workers, keys_file
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.log_path = self.data_dir / "serve.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> "ApiProcess":
        cmd = [sys.executable, "-m", "neocompile", "serve", "--port", "0", "--data-dir", str(self.data_dir),
               "--workers", str(self.workers)]
        if self.store:
            cmd += ["--store", self.store]
        if self.keys_file:
            cmd += ["--access-keys", self.keys_file]
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=self.env)
        line = self.proc.stdout.readline()  # "neocompile serve: listening on http://127.0.0.1:PORT"
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"neocompile serve did not start: {line!r}\n{self.log()}")
        self.url = line.rsplit(" ", 1)[1].strip()
        return self

    def client(self, **kwargs):
        """boto3's SageMaker client on this server, no retries (a test sees each answer)."""
        keys = {"aws_access_key_id": "AKIDTESTS", "aws_secret_access_key": "not-checked"}
        keys.update(kwargs.pop("keys", {}))
        return boto3.client("sagemaker", endpoint_url=self.url, region_name=REGION,
                            config=kwargs.pop("config", Config(retries={"max_attempts": 1, "mode": "standard"})),
                            **keys, **kwargs)

    def worker_pids(self) -> list[int]:
        return [p.pid for p in psutil.Process(self.proc.pid).children() if "worker" in " ".join(p.cmdline())]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.proc.stdout.close()
        # Local workers follow their server (SIGTERM on its death); wait until none is left.
        for _ in range(100):
            if not _workers_of(self.data_dir, self.store):
                break
            time.sleep(0.2)


def _workers_of(data_dir: Path, store: str | None) -> list[psutil.Process]:
    needle = store or str(data_dir)
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "neocompile" in cmd and " worker " in cmd and needle in cmd:
            out.append(p)
    return out


def wait_for(client, name: str, statuses=("COMPLETED", "FAILED", "STOPPED"), timeout: float = 300, poll: float = 0.2,
             stage: str | None = None) -> dict:
    """Poll DescribeCompilationJob until the status is in ``statuses`` (and the stage line contains ``stage``)."""
    end = time.monotonic() + timeout
    while True:
        d = client.describe_compilation_job(CompilationJobName=name)
        line = d["ResponseMetadata"]["HTTPHeaders"].get("x-neocompile-stage", "")
        if d["CompilationJobStatus"] in statuses and (stage is None or stage in line):
            return d
        if time.monotonic() > end:
            raise AssertionError(f"job {name} still {d['CompilationJobStatus']} ({line}) after {timeout} s")
        time.sleep(poll)
