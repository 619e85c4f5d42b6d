"""Shared pytest fixtures. Fixtures start real servers; see tests/s3server.py for the S3 one."""
from __future__ import annotations

import itertools
import os
import string
from collections.abc import Iterator

import pytest

from tests.s3server import S3Server, start_s3_server
from tests.torchvision_ops import declare_torchvision_ops


_TORCHVISION_OPS = declare_torchvision_ops()


@pytest.fixture(scope="session", autouse=True)
def _tvm_before_any_package_runtime() -> None:
    """Python's tvm is imported first, as neocompile.runtime.Model does: a package's own TVM runtime, loaded through
    its binding (tests/device/test_rt_binding.py) into this process before tvm, would make every later `import tvm`
    fail (neocompile_rt refuses it: two TVM runtimes in one process abort it)."""
    import tvm  # noqa: F401


@pytest.fixture(scope="session", autouse=True)
def _own_tuning_cache(tmp_path_factory) -> Iterator[None]:
    """Compiles in the tests never read the developer's tuning cache: records there would change the kernels."""
    saved = os.environ.get("NEOCOMPILE_TUNING_CACHE")
    os.environ["NEOCOMPILE_TUNING_CACHE"] = str(tmp_path_factory.mktemp("tuning-cache"))
    yield
    if saved is None:
        os.environ.pop("NEOCOMPILE_TUNING_CACHE", None)
    else:
        os.environ["NEOCOMPILE_TUNING_CACHE"] = saved


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """A real SeaweedFS S3 server on free loopback ports, enforcing `.access_key`/`.secret_key`.

    Yields an object with `.endpoint_url`, `.access_key`, `.secret_key`, `.client()` and `.env`
    (the AWS_* variables a child process needs). Stopped at the end of the session.
    """
    try:
        server = start_s3_server(tmp_path_factory.mktemp("seaweedfs"))
    except RuntimeError as exc:  # no binary, or it would not start: fail (never skip) with the reason
        problem = str(exc)
    else:
        problem = None
    if problem:
        pytest.fail(problem, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


_bucket_numbers = itertools.count()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch, request) -> Iterator[str]:
    """Point boto3 in this process at `s3_server` (AWS_* env vars) and yield a fresh, empty bucket.

    The host's ~/.aws files and instance metadata are masked so that only the server's keys count.
    """
    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION",
                "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        monkeypatch.delenv(var, raising=False)
    for var in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(var, os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var, value in s3_server.env.items():
        monkeypatch.setenv(var, value)
    allowed = string.ascii_lowercase + string.digits + "-"
    name = "".join(c if c in allowed else "-" for c in request.node.name.lower())
    bucket = f"test-{next(_bucket_numbers)}-{name}"[:63].rstrip("-")
    s3_server.client().create_bucket(Bucket=bucket)
    yield bucket
