"""Run a compile in a child process group so a deadline (or a stop) really stops it.

TVM compiles in C++ and cannot be interrupted from Python; the only reliable stop is killing the process
group that runs it (SIGTERM, then SIGKILL), as measured in the platform notes.
"""
from __future__ import annotations

import multiprocessing
import os
import queue
import shutil
import signal
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from .errors import JobStopped, JobTimeout, NeoError

# A stop must end a compile within 2 s: TVM does not handle SIGTERM (the default action ends it at once), but a
# child that does gets this long before SIGKILL.
GRACE_SECONDS = 1.0


def _child(request: Any, q: Any, workdir: str) -> None:
    os.setpgid(0, 0)
    _die_with_parent()
    from . import pipeline

    try:
        result = pipeline.run(request, progress=lambda e: q.put(("event", e)), workdir=Path(workdir))
        q.put(("result", result))
    except NeoError as exc:
        q.put(("error", exc))
    except BaseException:  # report, never hang the parent
        q.put(("crash", traceback.format_exc()))


def _die_with_parent() -> None:
    """A supervisor killed with SIGKILL cannot kill its compile: the kernel does it (Linux PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def kill_group(proc: Any) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left after a grace period."""
    for sig, wait in ((signal.SIGTERM, GRACE_SECONDS), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            # Not yet its own group leader (killed right after start): it has no children yet either.
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass
        proc.join(wait)
        if not proc.is_alive():
            return


def run_with_deadline(request: Any, seconds: float, progress=None):
    """Run ``pipeline.run(request)`` in a child; raise JobTimeout when it outlives ``seconds``."""
    return run_supervised(request, progress, deadline=time.time() + seconds, limit=seconds)


def run_supervised(request: Any, progress=None, deadline: float | None = None, limit: float | None = None,
                   should_stop: Callable[[], str | None] | None = None, poll: float = 0.25):
    """Run ``pipeline.run(request)`` in a child process group and return its result.

    ``deadline`` is an epoch time (a job's CompilationStartTime + MaxRuntimeInSeconds, which ``limit`` names in the
    message): past it the group is killed and JobTimeout raised. ``should_stop`` is called every ``poll`` seconds;
    when it returns a reason the group is killed and JobStopped(reason) raised. Either way a pending multipart
    upload is aborted, so nothing half-written stays at the output location.
    """
    from . import pipeline, storage

    p = pipeline.plan(request)  # validate in the parent: bad input fails fast, without a child
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    workdir = tempfile.mkdtemp(prefix="neocompile-")
    proc = ctx.Process(target=_child, args=(request, q, workdir), daemon=True)
    current = "start"

    def end(exc: NeoError) -> NeoError:
        kill_group(proc)
        storage.discard_partial(request.output_location, p.artifact_name)
        return exc

    proc.start()
    try:
        while True:
            left = None if deadline is None else deadline - time.time()
            if left is not None and left <= 0:
                took = f" ({limit:g} s)" if limit is not None else ""
                raise end(JobTimeout(
                    f"The compilation job exceeded StoppingCondition.MaxRuntimeInSeconds{took} during the "
                    f"'{current}' stage and was stopped; no output was written"
                ))
            reason = should_stop() if should_stop else None
            if reason:
                raise end(JobStopped(reason))
            try:
                kind, value = q.get(timeout=poll if left is None else min(left, poll))
            except queue.Empty:
                if not proc.is_alive() and q.empty():
                    raise NeoError(f"The compilation worker died unexpectedly (exit code {proc.exitcode}) during the '{current}' stage")
                continue
            if kind == "event":
                current = value.stage
                if progress:
                    progress(value)
            elif kind == "result":
                return value
            elif kind == "error":
                raise value
            else:
                raise NeoError(f"Internal error in the compilation worker:\n{value}")
    finally:
        if proc.is_alive():
            kill_group(proc)
        shutil.rmtree(workdir, ignore_errors=True)
