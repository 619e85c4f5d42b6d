"""Replacing a module's PrimFuncs by their tuned schedules from the cache, and the keys that find them.

A kernel is looked up by the structural hash of its workload (the fused PrimFunc as MetaSchedule normalizes it,
with the ``layout_free_buffers`` the pipeline attached) and the canonical target; a hash match is confirmed with
structural equality before the record's trace is replayed. A trace that no longer applies (another TVM version)
is skipped for the next record, and a kernel without one falls through to the templates.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import tvm
import tvm_ffi

from ..cpu.pipeline import KNOBS, SCHEDULED, is_scheduled
from .cache import Entry, TuningCache


def target_key(target: Any) -> str:
    """The canonical string of a TVM target (dict, string or Target) that records are filed under."""
    if not isinstance(target, tvm.target.Target):
        target = tvm.target.Target(target)
    return json.dumps(_plain(target.export()), sort_keys=True, separators=(",", ":"))


def workload(func: tvm.tirx.PrimFunc) -> tuple[tvm.IRModule, str]:
    """The workload module MetaSchedule tunes for ``func`` and its hash (16 hex digits)."""
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    mod = _normalize_mod(func)
    return mod, f"{tvm_ffi.structural_hash(mod) & (2**64 - 1):016x}"


@dataclasses.dataclass
class Applied:
    """A kernel that got a tuned schedule: from which record set, and how fast it measured."""

    kernel: str
    workload_hash: str
    latency_us: float
    source: str  # "tuned" here, "imported", ...; "template": tuning kept the template (not replaced); "template
    # variant": the template with the knobs tuning chose


def apply_records(mod: tvm.IRModule, target: Any, cache: TuningCache, applied: list[Applied] | None = None) -> tvm.IRModule:
    """Give every PrimFunc of ``mod`` that has records in ``cache`` for ``target`` its best tuned schedule, marked
    scheduled so that the templates leave it alone; append what was applied to ``applied``."""
    key = target_key(target)
    available = cache.hashes(key)
    if not available:
        return mod
    updates = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc) or is_scheduled(func):
            continue
        work, digest = workload(func)
        if digest not in available:
            continue
        entry = cache.get(digest, key)
        if entry is not None and entry.records and entry.records[0].get("source") == "template":
            # Tuning measured nothing faster than the template: the pipeline schedules it, with the knobs of the
            # template variant that measured fastest, if one did.
            best = entry.records[0]
            knobs = best.get("knobs")
            if knobs:
                updates[gv] = func.with_attr(KNOBS, json.dumps(knobs, sort_keys=True))
            if applied is not None:
                applied.append(Applied(gv.name_hint, digest, float(best["latency_us"]), "template variant" if knobs else "template"))
            continue
        scheduled = best_schedule(entry, work) if entry is not None else None
        if scheduled is None:
            continue
        func_out, record = scheduled
        if func.attrs is None or "global_symbol" not in func.attrs:
            func_out = func_out.without_attr("global_symbol")  # normalization named it "main"; the module must not
        updates[gv] = func_out.with_attr(SCHEDULED, True)
        if applied is not None:
            applied.append(Applied(gv.name_hint, digest, float(record["latency_us"]), str(record.get("source", "tuned"))))
    for gv, func in updates.items():
        mod[gv] = func
    return mod


def best_schedule(entry: Entry, work: tvm.IRModule) -> tuple[tvm.tirx.PrimFunc, dict[str, Any]] | None:
    """The first of ``entry``'s records whose trace replays on ``work`` (confirmed to be the same workload)."""
    from tvm import s_tir
    from tvm.s_tir.meta_schedule.database import TuningRecord, Workload

    try:
        stored = Workload.from_json(entry.workload)
    except Exception:  # noqa: BLE001 - a damaged entry is no entry
        return None
    if not tvm_ffi.structural_equal(stored.mod, work):
        return None  # a hash collision
    for record in entry.records:
        try:
            trace = TuningRecord.from_json(record["record"], stored).trace
            sch = s_tir.Schedule(work)
            trace.apply_to_schedule(sch, remove_postproc=False)
            return sch.mod["main"], record
        except Exception:  # noqa: BLE001 - a trace from another TVM version: try the next one
            continue
    return None


def check_entry(entry: Entry) -> str | None:
    """Why an entry cannot be used (its workload or a record does not parse), or None."""
    from tvm.s_tir.meta_schedule.database import TuningRecord, Workload

    try:
        stored = Workload.from_json(entry.workload)
    except Exception as exc:  # noqa: BLE001
        return f"its workload does not parse ({_last_line(exc)})"
    if f"{tvm_ffi.structural_hash(stored.mod) & (2**64 - 1):016x}" != entry.workload_hash:
        return f"workload_hash {entry.workload_hash} does not match its workload"
    for i, record in enumerate(entry.records):
        try:
            TuningRecord.from_json(record["record"], stored)
        except Exception as exc:  # noqa: BLE001
            return f"records[{i}] does not parse ({_last_line(exc)})"
    try:
        tvm.target.Target(json.loads(entry.target))
    except Exception as exc:  # noqa: BLE001
        return f"target {entry.target!r} is not a TVM target ({_last_line(exc)})"
    return None



def _plain(value: Any) -> Any:
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and hasattr(value, "__getitem__") and not isinstance(value, str)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


def _last_line(exc: BaseException) -> str:
    lines = [l for l in str(exc).splitlines() if l.strip()]
    return lines[-1] if lines else type(exc).__name__
