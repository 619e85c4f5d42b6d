"""What one compile job does with tuning: tune when asked and possible, apply cached records, report.

``compiler.compile_library`` makes a session per CPU compile: ``tune`` before ``tvm.compile``, ``apply`` as the
CPU pipeline's ``apply_records`` hook, ``commit`` after the package verified (a record never reaches the cache
from a job whose output was wrong), ``summary`` for ``compiled.meta`` ``Compilation.Tuning``.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from ..errors import NeoError
from .cache import Entry, TuningCache

Note = Callable[[str], None]


class _WithPending:
    """The cache as ``apply_records`` reads it, plus this job's records that are not committed yet."""

    def __init__(self, cache: TuningCache | None, pending: list[Entry], note: Note):
        self.cache, self.pending, self.note = cache, {(e.workload_hash, e.target): e for e in pending}, note

    def hashes(self, target: str) -> set[str]:
        found = {h for (h, t) in self.pending if t == target}
        if self.cache is not None:
            try:
                found |= self.cache.hashes(target)
            except NeoError as exc:
                self.note(f"tuning cache {self.cache.location} unreadable, compiling without its records: {exc}")
                self.cache = None
        return found

    def get(self, workload_hash: str, target: str) -> Entry | None:
        mine = self.pending.get((workload_hash, target))
        try:
            theirs = self.cache.get(workload_hash, target) if self.cache is not None else None
        except NeoError as exc:
            self.note(f"tuning cache {self.cache.location}: {exc}")
            theirs = None
        if mine is not None and theirs is not None:
            return theirs.merged(mine)
        return mine or theirs


class TuningSession:
    """Tuning for one job: ``options["tuning"]`` is ``{"trials": N, ...}``, ``False`` (ignore the cache) or absent."""

    def __init__(self, target: Any, options: dict[str, Any], note: Note | None = None, deadline: float | None = None):
        self.target = target  # the registry Target
        self.request = options.get("tuning")
        self.layout = options.get("cpu-layout", "NHWC")  # the kernels' conv layout: tuned workloads follow it
        self.note = note or (lambda text: None)
        self.deadline = deadline
        self.cache = TuningCache() if self.request is not False else None
        self.pending: list[Entry] = []
        self.applied: list[Any] = []
        self.result: Any = None
        self.why_not: str | None = None

    def tune(self, mod: Any, tvm_target: Any) -> None:
        """Run MetaSchedule on the module's kernels when the job asks for it and this machine can time them."""
        if not isinstance(self.request, dict):
            return
        rpc = self.request.get("rpc")
        if rpc is None and not self.target.host_is_native():
            # Timings under qemu say nothing about a Cortex-A53: the device's records come from the device itself
            # (tuning.rpc, or records measured there and brought in with `neocompile tuning import`).
            self.why_not = (f"not tuned: {self.target.name}'s code cannot be timed on this machine (MetaSchedule measures "
                            "candidates on the CPU that runs them; emulated timings would not reflect the device); "
                            "templates and any imported records are used (to time on the device: tuning.rpc)")
            self.note(self.why_not)
            return
        from .tune import tune, tuning_deadline

        stop_at = tuning_deadline(self.deadline)
        if stop_at is not None and stop_at <= time.monotonic():
            self.why_not = "not tuned: no time left for tuning within MaxRuntimeInSeconds"
            self.note(self.why_not)
            return
        from ..cpu.pipeline import CpuInfo, prepare
        from .apply import target_key

        with tvm_target:
            prepared = prepare(mod, tvm_target, self.layout, CpuInfo.from_target(self.target).lanes())
        known = _WithPending(self.cache, [], self.note).hashes(target_key(tvm_target))
        trials = int(self.request["trials"])
        where = (f" on the device, RPC server {rpc['server']}" if rpc and "server" in rpc
                 else f" on the device, RPC tracker {rpc['tracker']} key {rpc['key']}" if rpc else "")
        self.note(f"tuning with MetaSchedule{where}: {trials} trials"
                  + (f", until {max(0, stop_at - time.monotonic()):.0f} s from now at the latest" if stop_at else ""))
        try:
            self.result = tune(prepared, tvm_target, self.target, trials, known,
                               max_trials_per_task=self.request.get("max-trials-per-task"), stop_at=stop_at,
                               progress=self.note, rpc=rpc)
        except Exception as exc:  # noqa: BLE001 - tuning only ever makes a job faster: compile without it
            lines = [l for l in str(exc).splitlines() if l.strip()]
            self.why_not = f"tuning failed, compiled without it: {type(exc).__name__}: {lines[-1] if lines else ''}"
            self.note(self.why_not)
            return
        self.pending = self.result.entries
        self.note(f"tuned {self.result.tasks} kernel(s) in {self.result.seconds:g} s, {self.result.trials} trials "
                  f"({self.result.skipped_cached} already in the cache)")

    def apply(self, mod: Any) -> Any:
        """The CPU pipeline's ``apply_records`` hook."""
        import tvm

        from .apply import apply_records

        if self.cache is None and not self.pending:
            return mod
        self.applied = []
        return apply_records(mod, tvm.target.Target.current(), _WithPending(self.cache, self.pending, self.note), self.applied)

    def commit(self) -> None:
        """Merge this job's records into the cache (after the package verified); a failure is only a note."""
        if not self.pending or self.cache is None:
            return
        try:
            for entry in self.pending:
                self.cache.put(entry)
        except NeoError as exc:
            self.note(f"tuning records not saved to {self.cache.location}: {exc}")
            return
        self.note(f"saved records of {len(self.pending)} kernel(s) to the tuning cache ({self.cache.kind})")
        self.pending = []

    def summary(self, kernels: dict[str, str]) -> dict[str, Any]:
        """``Compilation.Tuning``: what was asked, what ran, and which kernels came from records (with their time)."""
        applied, kept = {}, {}
        for a in self.applied:
            name = a.kernel if a.kernel in kernels or f"{a.kernel}_prepacked" not in kernels else f"{a.kernel}_prepacked"
            (kept if a.source == "template" else applied)[name] = {"LatencyUs": a.latency_us, "Source": a.source}
        r = self.result
        return {
            "Requested": self.request,
            "Tuned": bool(r and r.trials),
            "Note": self.why_not or (f"stopped at the deadline after {r.trials} trials" if r and r.stopped == "deadline" else None),
            "Trials": r.trials if r else 0,
            "TasksTuned": r.tasks if r else 0,
            "Cache": self.cache.kind if self.cache is not None else None,
            "RecordsApplied": dict(sorted(applied.items())),
            # Kernels whose tuning found nothing faster than the template: they keep it (time as measured then).
            "TemplatesKept": {k: v["LatencyUs"] for k, v in sorted(kept.items())},
        }
