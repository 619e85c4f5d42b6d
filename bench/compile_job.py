"""One compile job, run in its own child process so that its wall time and memory are the job's alone.

``python -m bench.compile_job REQUEST.json RESULT.json`` calls :func:`neocompile.compile_model` with the request's
arguments and writes the result: stage seconds (the API's progress callback), the peak RSS of this process's whole
tree (itself + the load sandbox + the verification runner, summed) sampled during each stage, and
``getrusage`` maxrss of this process (RUSAGE_SELF) and of its largest reaped child (RUSAGE_CHILDREN) at the end of
each stage. A failure is a result too: ``{"ok": false, "error": ...}``.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
import traceback
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree_rss(root: int) -> tuple[int, int]:
    """Resident bytes of ``root`` and all its descendants, and the anonymous part of them (resident less the pages
    mapped from files: TVM's 259 MB library is most of those), read from /proc; processes may vanish meanwhile."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    total = anon = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                fields = f.read().split()
            total += int(fields[1]) * PAGE
            anon += (int(fields[1]) - int(fields[2])) * PAGE  # resident less shared (file-backed and shmem)
        except (OSError, IndexError, ValueError):
            pass
        todo.extend(parents.get(pid, []))
    return total, anon


class Sampler(threading.Thread):
    """Samples the tree's RSS (and its anonymous part) every ``interval`` seconds; ``take()`` returns the peaks
    since the last call."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = self.overall = self.peak_anon = self.overall_anon = 0
        self.lock, self.stopped = threading.Lock(), threading.Event()

    def _add(self, rss: int, anon: int) -> None:
        with self.lock:
            self.peak, self.overall = max(self.peak, rss), max(self.overall, rss)
            self.peak_anon, self.overall_anon = max(self.peak_anon, anon), max(self.overall_anon, anon)

    def run(self) -> None:
        me = os.getpid()
        while not self.stopped.wait(self.interval):
            self._add(*_tree_rss(me))

    def take(self) -> tuple[int, int]:
        self._add(*_tree_rss(os.getpid()))
        with self.lock:
            peaks = self.peak, self.peak_anon
            self.peak = self.peak_anon = 0
        return peaks


def _maxrss() -> dict[str, int]:
    return {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux reports kilobytes
            "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}


def main(request_path: str, result_path: str) -> None:
    request = json.loads(Path(request_path).read_text())
    sampler = Sampler()
    sampler.start()
    stages: dict[str, dict] = {}

    def progress(event) -> None:
        if event.status == "start":
            sampler.take()  # the peak of the gap between stages belongs to none of them
        elif event.status in ("done", "failed"):
            rss, anon = sampler.take()
            stages[event.stage] = {"seconds": round(event.seconds, 3), "peak_tree_rss": rss, "peak_tree_anon": anon,
                                   "maxrss": _maxrss(), "status": event.status}

    import neocompile
    from neocompile.errors import NeoError

    t0 = time.perf_counter()
    try:
        result = neocompile.compile_model(progress=progress, **request)
        out = {"ok": True, "artifact": result.artifact_uri, "timings": result.timings,
               "verification": {k: result.verification.get(k) for k in ("status", "mode", "reason", "outputs")}}
    except Exception as exc:  # a failed job is a bench result, reported with its message
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
               "traceback": traceback.format_exc(limit=8) if not isinstance(exc, NeoError) else None}
    out["seconds"] = round(time.perf_counter() - t0, 3)
    sampler.stopped.set()
    out["stages"] = stages
    out["peak_tree_rss"] = sampler.overall
    out["peak_tree_anon"] = sampler.overall_anon
    out["maxrss"] = _maxrss()
    Path(result_path).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
