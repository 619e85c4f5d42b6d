"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, a temporary data directory, a free port.

``postgres_url`` (session) starts one cluster per test session and yields the URL of its ``neocompile`` database;
``postgres_db`` (per test) creates a fresh, empty database on it and yields that one's URL. Register them in a
conftest.py with ``from tests.service.pg import postgres_db, postgres_url  # noqa: F401``.
"""
from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "neocompile"  # the cluster's superuser; local TCP connections are trusted
DATABASE = "neocompile"
_SETTINGS = {
    "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",  # a throwaway: speed over durability
    "max_connections": "300",  # every store opens a pool, every serve_jobs another
    "listen_addresses": "127.0.0.1",
}


def find_bin_dir() -> Path:
    """The directory of initdb/pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    versions = {Path(p).parts[-3]: Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")}
    found = [versions[v] for v in sorted(versions, key=lambda v: int(v) if v.isdigit() else 0)]
    if not found:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH nor in /usr/lib/postgresql/*/bin: "
                           "`make test` installs Debian's postgresql package (or: apt-get install postgresql)")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """One running postmaster in ``root`` (data/, sockets, log), as the ``postgres`` user when we are root."""

    def __init__(self, bin_dir: Path, root: Path):
        self.bin_dir, self.root = bin_dir, root
        self.data, self.log = root / "data", root / "postgres.log"
        self.port = 0
        # initdb and postgres refuse to run as root: hand the directory to Debian's postgres system user.
        self.user = None
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root, and there is no `postgres` user to run PostgreSQL as "
                                   "(Debian's postgresql package creates it: `make test` installs it)") from None
            self.user = pw.pw_uid
            os.chown(root, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        kwargs = {"user": self.user, "group": pwd.getpwuid(self.user).pw_gid, "extra_groups": []} if self.user is not None else {}
        proc = subprocess.run([str(self.bin_dir / args[0]), *args[1:]], cwd=self.root, capture_output=True, text=True,
                              env={**os.environ, "LC_ALL": "C"}, **kwargs)
        if check and proc.returncode:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stdout}{proc.stderr}{log}")
        return proc

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "--no-sync", "--no-instructions",
                  "--encoding=UTF8", "--locale=C")
        options = " ".join(f"-c {k}={v}" for k, v in _SETTINGS.items())
        for attempt in range(5):  # another process may take the free port between the probe and the bind
            self.port = _free_port()
            proc = self._run("pg_ctl", "start", "-D", str(self.data), "-w", "-t", "30", "-l", str(self.log),
                             "-o", f"{options} -p {self.port} -c unix_socket_directories='{self.root}'", check=attempt == 4)
            if proc.returncode == 0:
                return

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", check=False)

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"


def start_cluster() -> tuple[Cluster, Path]:
    """Start a cluster in a fresh directory and create the ``neocompile`` database; the caller stops it."""
    bin_dir = find_bin_dir()
    # Not under pytest's tmp_path: its parents are root-only (0700), which the postgres user could not enter.
    root = Path(tempfile.mkdtemp(prefix="neocompile-pg-"))
    cluster = Cluster(bin_dir, root)
    try:
        cluster.start()
        create_database(cluster.url("postgres"), DATABASE)
    except BaseException:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return cluster, root


def create_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')


def drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # FORCE: ends connections a test left open


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster for the session: yields ``postgresql://neocompile@127.0.0.1:PORT/neocompile``."""
    started = time.monotonic()
    try:
        cluster, root = start_cluster()
    except RuntimeError as exc:  # no binaries, or it would not start: fail (never skip) with the reason
        problem = str(exc)
    else:
        problem = None
    if problem:
        pytest.fail(problem, pytrace=False)
    print(f"\nPostgreSQL cluster on port {cluster.port} started in {time.monotonic() - started:.2f} s")
    try:
        yield cluster.url()
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


_database_numbers = itertools.count()


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database on the session's cluster (dropped after the test): yields its URL."""
    name = f"test_{os.getpid()}_{next(_database_numbers)}"
    admin_url = postgres_url.rsplit("/", 1)[0] + "/postgres"
    create_database(admin_url, name)
    try:
        yield postgres_url.rsplit("/", 1)[0] + "/" + name
    finally:
        drop_database(admin_url, name)
