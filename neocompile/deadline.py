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
from typing import Any

from .errors import JobTimeout, NeoError

GRACE_SECONDS = 5.0


def _child(request: Any, q: Any, workdir: str) -> None:
    os.setpgid(0, 0)
    from . import pipeline

    try:
        result = pipeline.run(request, progress=lambda e: q.put(("event", e)), workdir=Path(workdir))
        q.put(("result", result))
    except NeoError as exc:
        q.put(("error", exc))
    except BaseException:  # report, never hang the parent
        q.put(("crash", traceback.format_exc()))


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
    from . import pipeline, storage

    p = pipeline.plan(request)  # validate in the parent: bad input fails fast, without a child
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    workdir = tempfile.mkdtemp(prefix="neocompile-")
    proc = ctx.Process(target=_child, args=(request, q, workdir), daemon=True)
    deadline = time.monotonic() + seconds
    current = "start"
    proc.start()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                kill_group(proc)
                storage.discard_partial(request.output_location, p.artifact_name)
                raise JobTimeout(
                    f"The compilation job exceeded StoppingCondition.MaxRuntimeInSeconds ({seconds:g} s) during the "
                    f"'{current}' stage and was stopped; no output was written"
                )
            try:
                kind, value = q.get(timeout=min(left, 0.5))
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
