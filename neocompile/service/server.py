"""``neocompile serve`` and ``neocompile worker``: wire the store, the HTTP API, recovery and worker processes together.

``serve`` runs the API and, with ``--workers N``, N local ``neocompile worker`` processes that it restarts when they
die. With a PostgreSQL store (``--store postgresql://...`` or NEOCOMPILE_STORE_URL) any number of servers and
workers on any machines share the jobs; the embedded default is a SQLite file in the data directory.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .jobs import JobService
from .store import open_store

log = logging.getLogger("neocompile.service")

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def default_data_dir() -> Path:
    """``$NEOCOMPILE_DATA_DIR``, else the user's state directory (XDG): ``~/.local/state/neocompile``."""
    if os.environ.get("NEOCOMPILE_DATA_DIR"):
        return Path(os.environ["NEOCOMPILE_DATA_DIR"])
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "neocompile"


def store_url(data_dir: str | None, store: str | None) -> str:
    """The job store: ``--store``, else NEOCOMPILE_STORE_URL, else ``<data dir>/jobs.db`` (SQLite)."""
    url = store or os.environ.get("NEOCOMPILE_STORE_URL")
    if url:
        return url
    return str(Path(data_dir or default_data_dir()).expanduser().absolute() / "jobs.db")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s[%(process)d] %(message)s")


class LocalWorkers:
    """N ``neocompile worker`` processes on this machine, restarted when one dies (its job is recovered by lease)."""

    def __init__(self, count: int, url: str):
        self.count, self.url = count, url
        self.procs: list[subprocess.Popen] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="workers", daemon=True)

    def _spawn(self, index: int) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "neocompile", "worker", "--store", self.url]
        return subprocess.Popen(cmd, preexec_fn=_term_with_parent)

    def start(self) -> None:
        self.procs = [self._spawn(i) for i in range(self.count)]
        log.info("started %d local worker process(es): pids %s", self.count, [p.pid for p in self.procs])
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None and not self._stop.is_set():
                    log.warning("worker pid %d exited with %s; starting another", proc.pid, proc.returncode)
                    self.procs[i] = self._spawn(i)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM (a worker re-queues its running job and exits), then SIGKILL what is left."""
        self._stop.set()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + grace
        for proc in self.procs:
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def serve(host: str, port: int, data_dir: str | None, workers: int, store: str | None, keys_file: str | None,
          out=sys.stdout) -> int:
    from . import sigv4
    from .protocol import ApiServer
    from .worker import recover_forever

    keys = sigv4.load_keys(keys_file)
    if not keys and host not in LOOPBACK:
        raise SystemExit(f"neocompile serve: no access keys are configured, so the API binds 127.0.0.1 only; --host {host} "
                         "needs keys (--access-keys FILE, NEOCOMPILE_ACCESS_KEYS_FILE or NEOCOMPILE_ACCESS_KEY_ID + "
                         "NEOCOMPILE_SECRET_ACCESS_KEY) so that every request is signed")
    url = store_url(data_dir, store)
    job_store = open_store(url)
    service = JobService(job_store)
    server = ApiServer((host, port), service, keys)
    stop = threading.Event()
    threading.Thread(target=recover_forever, args=(service, stop), name="recover", daemon=True).start()
    local = LocalWorkers(workers, url) if workers > 0 else None
    if local:
        local.start()
    auth = (f"SigV4 required ({len(keys)} access key(s))" if keys
            else "authentication off (no access keys configured): bound to 127.0.0.1 only")
    print(f"neocompile serve: listening on {server.url}", file=out, flush=True)
    print(f"  job store: {_redact(url)}; local workers: {workers}; {auth}", file=out, flush=True)

    def shutdown(signum, frame):  # noqa: ARG001
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    try:
        server.serve_forever()
    finally:
        stop.set()
        if local:
            local.stop()
        server.server_close()
        job_store.close()
    return 0


def run_worker(data_dir: str | None, store: str | None) -> int:
    from .worker import Worker

    worker = Worker(open_store(store_url(data_dir, store)))

    def shutdown(signum, frame):  # noqa: ARG001
        worker.shutdown()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    worker.run()
    return 0


def _term_with_parent() -> None:
    """A local worker gets SIGTERM (re-queue its job, exit) when its server dies, even by SIGKILL."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def _redact(url: str) -> str:
    """A PostgreSQL URL without its password."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url
