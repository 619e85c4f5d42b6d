"""Running MetaSchedule on a job's kernels: a trial budget, a deadline, progress, and the best records out.

The kernels tuned are the fused PrimFuncs of the module exactly as the CPU pipeline is about to schedule them
(``cpu.pipeline.prepare``), so a record's workload is what ``apply`` meets at compile time. Kernels that already
have records for the target are not tuned again. Candidates are built by the warm builder (``builder.py``) and
timed here, on this machine, by MetaSchedule's LocalRunner: only a target whose code runs natively can be tuned.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Callable, Iterator

import tvm

from .apply import target_key, workload
from .cache import KEEP, Entry, now_iso

#: Candidates built and timed per round; smaller rounds stop closer to a deadline, bigger ones search better.
TRIALS_PER_ROUND = 32
#: Time kept for compile, verify, package and upload after tuning: this share of what is left, at least the floor.
RESERVE_SHARE, RESERVE_FLOOR_S = 0.25, 60.0
#: Tensor intrinsics MetaSchedule's CPU rules may name, by architecture (the module files under
#: tvm/s_tir/tensor_intrin); the package's __init__ also parses every CUDA intrinsic, which costs 50-130 s.
CPU_INTRINSICS = {"x86_64": ("x86",), "aarch64": ("arm_cpu",), "armv7": ("arm_cpu",)}

Progress = Callable[[str], None]


@dataclasses.dataclass
class TuneResult:
    """What one tuning run did: its records (not yet in the cache) and its numbers for the manifest."""

    entries: list[Entry]
    trials: int  # candidates measured
    tasks: int  # kernels tuned
    skipped_cached: int  # kernels left alone because the cache already has records for them
    stopped: str  # "budget" | "deadline" | "nothing to tune"
    seconds: float


def tuning_deadline(job_deadline: float | None, now: float | None = None) -> float | None:
    """When tuning must stop (``time.monotonic()`` clock) so the rest of the job fits in MaxRuntimeInSeconds."""
    if job_deadline is None:
        return None
    now = time.monotonic() if now is None else now
    left = job_deadline - now
    return now + left - max(RESERVE_FLOOR_S, RESERVE_SHARE * left)


def tune(mod: tvm.IRModule, target: tvm.target.Target, device: Any, trials: int, known: set[str],
         max_trials_per_task: int | None = None, stop_at: float | None = None,
         progress: Progress | None = None, rpc: dict[str, Any] | None = None, seed: int = 0) -> TuneResult:
    """Tune the unscheduled PrimFuncs of ``mod`` (a module as ``cpu.pipeline.prepare`` leaves it) for ``target``
    (the TVM target of ``device``, a registry Target).

    ``known``: workload hashes that already have records (not tuned again). At most ``trials`` candidates are
    measured in all; tuning stops early when the next round would end after ``stop_at`` (monotonic clock).
    ``progress`` gets one line per round: task i/n, trials, best latency so far. Candidates are timed here, or with
    ``rpc`` on the device: {"server": "host:port"} (its TVM RPC server) or {"tracker": "host:port", "key": K} (a
    tracker the device's server registered with as K), and "cores" (default 4), the count it is tuned for.
    """
    from tvm.s_tir import meta_schedule as ms

    progress = progress or (lambda text: None)
    started = time.monotonic()
    key = target_key(target)
    workloads = _workloads(mod, known)
    skipped = len({d for _, d, _ in _all_workloads(mod)} & known)
    if not workloads:
        return TuneResult([], 0, 0, skipped, "nothing to tune", 0.0)
    cores = rpc.get("cores", 4) if rpc else _cores()
    tune_target = _with_cores(target, cores)
    per_task = max_trials_per_task or trials
    quiet = logging.getLogger("neocompile.tuning.metaschedule")
    quiet.setLevel(logging.WARNING)
    with _cpu_intrinsics(device.arch), _quiet_metaschedule(), tempfile.TemporaryDirectory(prefix="neocompile-tuning-") as work_dir:
        strategy, cost_model = _search()
        contexts = [
            ms.TuneContext(mod=work, target=tune_target, space_generator="post-order-apply", search_strategy=strategy,
                           task_name=name, logger=quiet, rand_state=seed + i, num_threads=_cores())
            for i, (name, _, work, _) in enumerate(workloads)
        ]
        watch = _Watch([name for name, *_ in workloads], trials, stop_at, progress)
        from .builder import WarmBuilder

        builder, runner = WarmBuilder(link_for=device if rpc else None), None
        try:
            runner = _runner(rpc)
            # A JSON database, because its files hold records as MetaSchedule itself serializes and reads them back
            # (TuningRecord.as_json in Python cannot serialize the IndexMap of a layout-rewrite step).
            database = ms.database.JSONDatabase(work_dir=work_dir)
            baselines, timed = _template_baselines(workloads, tune_target, device, builder, runner, progress, trials,
                                                   stop_at)
            watch.before = timed
            watch.best = [baselines[n].seconds if n in baselines else float("inf") for n in range(len(workloads))]
            try:
                if trials - timed < 1 or (stop_at is not None and time.monotonic() >= stop_at):
                    raise _NoTrialsLeft()
                ms.tune_tasks(
                    tasks=contexts, task_weights=[float(w) for *_, w in workloads], work_dir=work_dir,
                    max_trials_global=trials - timed, max_trials_per_task=per_task,
                    num_trials_per_iter=min(TRIALS_PER_ROUND, per_task), builder=builder, runner=runner,
                    database=database, cost_model=cost_model, task_scheduler="gradient",
                    # The watch comes last: the default callbacks have filed the round's records when it stops.
                    measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), watch.callback()],
                )
            except _NoTrialsLeft:
                pass
            except Exception:
                if not watch.out_of_time:
                    raise
            # The templates' records go in last: the search does not replay them (MetaSchedule's evolutionary
            # search aborts on a trace with layout rewrites), the best-record pick below compares them.
            for n, base in baselines.items():
                database.commit_tuning_record(base.record(database.commit_workload(workloads[n][2])))
        finally:
            builder.close()
            if runner is not None:
                runner.pool.shutdown()  # its worker process; MetaSchedule leaves it to the garbage collector
        entries = _entries(work_dir, workloads, watch.measured, key, cores,
                           {n: base.knobs for n, base in baselines.items()})
    return TuneResult(entries, sum(watch.measured) + timed, len(workloads), skipped,
                      "deadline" if watch.out_of_time else "budget", round(time.monotonic() - started, 1))


class _NoTrialsLeft(Exception):
    """The templates and their variants used the whole trial budget, or the time for tuning: MetaSchedule's search
    does not run."""


class OutOfTime(Exception):
    """Raised by the measure callback to end tuning at the deadline (caught in ``tune``)."""


class _Watch:
    """The measure callback: progress after each round, and the stop when the next round would miss the deadline."""

    def __init__(self, names: list[str], trials: int, stop_at: float | None, progress: Progress):
        self.names, self.trials, self.stop_at, self.progress = names, trials, stop_at, progress
        self.measured = [0] * len(names)
        self.best = [float("inf")] * len(names)
        self.before = 0  # candidates timed before the search (the templates and their variants), of ``trials``
        self.out_of_time = False
        self.last = time.monotonic()
        self.slowest_round = 0.0

    def callback(self):
        from tvm.ir.utils import derived_object
        from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

        watch = self

        @derived_object
        class Watch(PyMeasureCallback):
            def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
                watch.round(task_id, runner_results)

        return Watch()

    def round(self, task_id: int, runner_results: list[Any]) -> None:
        now = time.monotonic()
        self.slowest_round = max(self.slowest_round, now - self.last)
        self.last = now
        self.measured[task_id] += len(runner_results)
        for result in runner_results:
            if result.error_msg is None and result.run_secs:
                secs = [float(s) for s in result.run_secs]
                self.best[task_id] = min(self.best[task_id], sum(secs) / len(secs))
        best = f"{self.best[task_id] * 1e6:.2f} us" if self.best[task_id] < float("inf") else "none valid yet"
        self.progress(f"tuning task {task_id + 1}/{len(self.names)} {self.names[task_id]}: "
                      f"{self.measured[task_id]} trials, best {best}; {self.before + sum(self.measured)}/{self.trials} trials in all")
        if self.stop_at is not None and now + self.slowest_round > self.stop_at and not self.out_of_time:
            self.out_of_time = True
            self.progress("tuning stopped: the next round would not end within MaxRuntimeInSeconds' share for tuning; "
                          "compiling with the records found so far")
            # The way out of the task scheduler's loop: terminating its tasks from a callback trips the gradient
            # scheduler (it returns the task being joined), so the round's end raises and `tune` catches it.
            raise OutOfTime()


def _all_workloads(mod: tvm.IRModule) -> Iterator[tuple[str, str, tvm.IRModule]]:
    from ..cpu.pipeline import is_scheduled

    for gv, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc) and not is_scheduled(func):
            work, digest = workload(func)
            yield gv.name_hint, digest, work


def _workloads(mod: tvm.IRModule, known: set[str]) -> list[tuple[str, str, tvm.IRModule, int]]:
    """(name, hash, workload, weight) per distinct unscheduled workload without records: weight = its calls."""
    calls = _call_counts(mod)
    out: dict[str, list[Any]] = {}
    for name, digest, work in _all_workloads(mod):
        if digest in known:
            continue
        if digest in out:
            out[digest][3] += calls.get(name, 1)
        else:
            out[digest] = [name, digest, work, calls.get(name, 1)]
    return [tuple(v) for v in out.values()]  # type: ignore[misc]


def _call_counts(mod: tvm.IRModule) -> dict[str, int]:
    from tvm import relax

    counts: dict[str, int] = {}

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Call) and expr.op.same_as(tvm.ir.Op.get("relax.call_tir")):
            callee = expr.args[0]
            if isinstance(callee, tvm.ir.GlobalVar):
                counts[callee.name_hint] = counts.get(callee.name_hint, 0) + 1

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return counts


@dataclasses.dataclass
class Baseline:
    """A kernel as the templates schedule it, at its best: the template's own choice or a faster variant."""

    seconds: float  # mean of the runs
    record: Callable[[Any], Any]  # workload -> its TuningRecord
    how: str
    knobs: dict[str, Any] | None  # the variant's knobs, None for the template's own choice
    digest: int  # the scheduled module's structural hash: variants that schedule a kernel alike are timed once


def _template_baselines(workloads: list[Any], target: tvm.target.Target, device: Any, builder: Any, runner: Any,
                        progress: Progress, budget: int, stop_at: float | None = None) -> tuple[dict[int, Baseline], int]:
    """Time every kernel as the templates schedule it, and its template variants (``cpu.templates.VARIANTS``), as
    MetaSchedule times its candidates; the heaviest kernels (calls x time) get their variants first, within
    ``budget`` candidates in all, the templates' own schedules included (those are always timed), and stopping when
    the next kernel's variants would end after ``stop_at`` (monotonic clock).

    The fastest is filed as its task's last record and is what the search must beat: the best record is then never
    slower than the untuned package (a short search rarely beats a hand-written template, and its best candidate
    would otherwise replace it). A kernel where nothing beats it keeps the template, scheduled by the pipeline with
    the winning variant's knobs (``apply`` attaches them). Returns ({task index: Baseline}, candidates timed); a
    kernel whose template cannot be built or timed gets no baseline."""
    from ..cpu.pipeline import CpuInfo
    from ..cpu.templates import VARIANTS

    info = CpuInfo.from_target(device)
    out: dict[int, Baseline] = {}
    used = 0
    for n, (name, _, work, _) in enumerate(workloads):  # the template's own choice first, for every kernel
        if stop_at is not None and time.monotonic() > stop_at:
            break  # the kernels left get no records: the pipeline schedules them
        timed = _time_schedules(work, target, info, builder, runner, [None])
        used += len(timed)
        if timed:
            out[n] = timed[0]
            progress(f"tuning task {n + 1}/{len(workloads)} {name}: template ({out[n].how}) "
                     f"{out[n].seconds * 1e6:.2f} us, the time to beat")
    order = sorted(out, key=lambda n: -out[n].seconds * workloads[n][3])
    slowest = 0.0
    for n in order:
        started = time.monotonic()
        if used >= budget or (stop_at is not None and started + slowest > stop_at):
            break
        name, work = workloads[n][0], workloads[n][2]
        timed = _time_schedules(work, target, info, builder, runner, list(VARIANTS)[: budget - used], skip=[out[n]])
        used += len(timed)
        slowest = max(slowest, time.monotonic() - started)
        best = min(timed, key=lambda b: b.seconds, default=None)
        if best is not None and best.seconds < out[n].seconds:
            progress(f"tuning task {n + 1}/{len(workloads)} {name}: template variant ({best.how}, knobs {best.knobs}) "
                     f"{best.seconds * 1e6:.2f} us, best of {len(timed) + 1} template variants")
            out[n] = best
    return out, used


def _time_schedules(work: tvm.IRModule, target: tvm.target.Target, info: Any, builder: Any, runner: Any,
                    variants: list[Any], skip: list[Baseline] = ()) -> list[Baseline]:
    """Build and time ``work`` scheduled by the template with each of ``variants`` (None: the pipeline's own choice)
    in one batch; a variant that does not apply, or schedules the kernel the same way as one before it, is dropped."""
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    from ..cpu.pipeline import schedule_primfunc

    seen = {b.digest for b in skip}
    candidates = []
    for knobs in variants:
        try:
            with target:
                how, sch = schedule_primfunc(work["main"], target, info, knobs=knobs)
        except Exception:  # noqa: BLE001 - no schedule: nothing to time
            continue
        if sch is None:
            continue
        digest = tvm_ffi.structural_hash(sch.mod)
        if digest in seen:
            continue
        seen.add(digest)
        candidates.append((knobs, how, sch, digest))
    if not candidates:
        return []
    try:
        built = builder.build([ms.builder.BuilderInput(sch.mod, target) for _, _, sch, _ in candidates])
    except Exception:  # noqa: BLE001
        return []
    out = []
    for (knobs, how, sch, digest), result in zip(candidates, built):
        if result.error_msg:
            continue
        try:
            args_info = ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)
            (future,) = runner.run([ms.runner.RunnerInput(result.artifact_path, "cpu", args_info)])
            ran = future.result()
        except Exception:  # noqa: BLE001 - not timed: not a candidate
            continue
        if ran.error_msg or not ran.run_secs:
            continue
        secs = [float(x) for x in ran.run_secs]

        def record(wl, trace=sch.trace, run_secs=ran.run_secs, info=args_info):  # noqa: ANN001, ANN202
            return ms.database.TuningRecord(trace, wl, run_secs, target, info)

        out.append(Baseline(sum(secs) / len(secs), record, how, knobs.as_dict() if knobs is not None else None, digest))
    return out


def _entries(work_dir: str, workloads: list[Any], measured: list[int], key: str, cores: int,
             baselines: dict[int, dict[str, Any] | None] | None = None) -> list[Entry]:
    """The best records per tuned workload, read from the JSON database's files: ``database_workload.json`` holds
    one workload a line, ``database_tuning_record.json`` one ``[workload index, record]`` a line. The first record
    of a task in ``baselines`` is its template's (filed last, after the search): source "template", with the knobs
    of the template variant that won, if one did (``baselines``: {task index: knobs or None})."""
    import json

    import tvm_ffi
    from tvm.s_tir.meta_schedule.database import Workload

    lines = (Path(work_dir) / "database_workload.json").read_text().splitlines()
    stored = [json.loads(line) for line in lines if line.strip()]
    index = {}
    for i, item in enumerate(stored):
        mod = Workload.from_json(item).mod
        for n, (_, _, work, _) in enumerate(workloads):
            if n not in index.values() and tvm_ffi.structural_equal(mod, work):
                index[i] = n
    rows: dict[int, list[dict[str, Any]]] = {}
    lines = [json.loads(line) for line in (Path(work_dir) / "database_tuning_record.json").read_text().splitlines()
             if line.strip()]
    last = {i: pos for pos, (i, _) in enumerate(lines)}
    for pos, (i, record) in enumerate(lines):
        secs = [float(s) for s in (record[1] or [])]  # [trace, run_secs, target, args_info]
        if i in index and secs and all(s < 1e9 for s in secs):  # MetaSchedule files failed runs as 1e10 s
            source = "template" if last[i] == pos and index[i] in (baselines or {}) else "tuned"
            row = {"record": record, "latency_us": round(sum(secs) / len(secs) * 1e6, 4), "source": source,
                   "date": now_iso(), "cores": cores}
            if source == "template" and baselines[index[i]]:
                row["knobs"] = baselines[index[i]]
            rows.setdefault(index[i], []).append(row)
    out = []
    for i, item in enumerate(stored):
        n = index.get(i)
        if n is None or n not in rows:
            continue
        name, digest, _, _ = workloads[n]
        best = sorted(rows[n], key=lambda r: r["latency_us"])[:KEEP]
        out.append(Entry(target=key, workload_hash=digest, workload=item, task=name, records=best,
                         trials=measured[n], tvm=tvm.__version__, updated=now_iso()))
    return out


def _runner(rpc: dict[str, Any] | None) -> Any:
    """MetaSchedule's LocalRunner (one worker process timing candidates here) or RPCRunner (on the device)."""
    from tvm.s_tir import meta_schedule as ms

    if rpc is None:
        # Each candidate is timed as it runs inside a model: once per measurement, ten measurements, with every
        # argument but the first (the input the kernel before has just written) flushed from the caches: its
        # weights and its output are cold in a model's run. Timed warm and repeated, schedules that lean on a
        # cached weight panel won and then lost in the model (ResNet-50 tuned 1.040 -> 1.022x onnxruntime, and
        # tuning 40% faster). The flush is TVM's x86 one (clflush), for the host's own runner only.
        cold = ms.runner.EvaluatorConfig(number=1, repeat=10, min_repeat_ms=0, enable_cpu_cache_flush=_x86())
        return ms.runner.LocalRunner(timeout_sec=30, evaluator_config=cold)
    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=100, enable_cpu_cache_flush=False)
    host, _, port = (rpc.get("server") or rpc["tracker"]).rpartition(":")
    # RPCConfig only knows trackers: for a server reached directly it carries the server's address, and
    # connect_server opens the session.
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=rpc.get("key", "server"),
                                 session_timeout_sec=120)
    return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator, max_workers=1,
                               f_create_session=connect_server if "server" in rpc else None)


def _x86() -> bool:
    import platform

    return platform.machine().lower() in ("x86_64", "amd64")


def connect_server(config: Any) -> Any:
    """RPCRunner's session factory for a device's RPC server reached without a tracker (runs in its worker)."""
    from tvm import rpc

    return rpc.connect(config.tracker_host, config.tracker_port, session_timeout=config.session_timeout_sec)


def _search() -> tuple[Any, str]:
    """MetaSchedule's evolutionary search guided by its XGBoost cost model when xgboost is installed; without it the
    cost model would be random, and random sampling of the design space (replay-trace) finds as much for less."""
    import importlib.util

    if importlib.util.find_spec("xgboost") is not None:
        return "evolutionary", "xgb"
    return "replay-trace", "random"


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def _with_cores(target: tvm.target.Target, cores: int) -> tvm.target.Target:
    """MetaSchedule's parallelization rules need ``num-cores``; a target without one is tuned for ``cores``."""
    config = dict(target.export())
    if not config.get("num-cores"):
        config["num-cores"] = cores
    return tvm.target.Target(config)


@contextlib.contextmanager
def _cpu_intrinsics(arch: str) -> Iterator[None]:
    """Register the CPU tensor intrinsics for ``arch`` without the rest of ``tvm.s_tir.tensor_intrin``.

    TuneContext imports ``tvm.s_tir.tensor_intrin``, whose __init__ parses every CUDA intrinsic (50-130 s here).
    While the contexts are made a bare package stands in for it holding only the CPU modules; afterwards it is
    removed, so a later real import runs the package (the CPU modules, already imported, are not registered twice).
    """
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        yield
        return
    import tvm.s_tir

    stand_in = types.ModuleType(name)
    stand_in.__path__ = [str(Path(tvm.s_tir.__file__).parent / "tensor_intrin")]
    sys.modules[name] = stand_in
    try:
        for sub in CPU_INTRINSICS.get(arch, ()):
            importlib.import_module(f"{name}.{sub}")
        yield
    finally:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]


@contextlib.contextmanager
def _quiet_metaschedule() -> Iterator[None]:
    """MetaSchedule logs every round as tables at INFO: progress is ours to report."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    saved = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(saved)
