"""The Relax pipeline for CPU targets: legalize and fuse, schedule every PrimFunc, pack constant weights."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

import tvm
from tvm import relax, s_tir

from ..params import lift_params
from .constfold import FoldWeightPrepack, fold_constants_numpy
from .fallback import schedule_fallback
from .fast_math import fast_math
from .inplace import SUFFIX as INPLACE, use_inplace
from .layout import channels_last, has_conv
from .rewrites import dead_taps, pad_conv_channels, strided_pointwise_conv
from .templates import Knobs, schedule_anchor


#: The attribute a scheduled PrimFunc carries (templates, dlight, fallback or a tuning record); TVM's own
#: passes use ``tirx.is_scheduled``, which counts as well.
SCHEDULED = "tir.is_scheduled"


def is_scheduled(func: tvm.tirx.PrimFunc) -> bool:
    return func.attrs is not None and any(k in func.attrs and bool(func.attrs[k]) for k in (SCHEDULED, "tirx.is_scheduled"))


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    """What the kernels are shaped by: the target's vector width and vector register count (targets/*.json)."""

    vector_bits: int
    vector_registers: int

    @classmethod
    def from_target(cls, target: Any) -> "CpuInfo":
        cpu = target.cpu or {}
        if "vector_bits" not in cpu or "vector_registers" not in cpu:
            raise ValueError(f"targets/{target.name}.json: cpu.vector_bits and cpu.vector_registers are required for CPU kernels")
        return cls(int(cpu["vector_bits"]), int(cpu["vector_registers"]))

    def lanes(self, bits: int = 32) -> int:
        return max(1, self.vector_bits // bits)


@dataclasses.dataclass
class KernelReport:
    """Which schedule each kernel got: ``{function name: "template: conv2d 6x2x8 packed" | "dlight: Reduction" |
    "fallback" | "tuned" | "unscheduled"}``."""

    kernels: dict[str, str] = dataclasses.field(default_factory=dict)
    #: The layout the convs ran in ("NHWC", "NCHW", "NCHW (why the conversion failed)"); None: no conv.
    conv_layout: str | None = None

    def rename(self, names: set[str]) -> None:
        """Follow SplitLayoutRewritePreproc, which renames a kernel whose weights it packs to ``<name>_prepacked``,
        and the in-place copies (:mod:`.inplace`, ``<name>_inplace``): each kernel of ``names`` made from one of
        the report's has its entry."""
        for name in list(self.kernels):
            bases = (name, f"{name}_prepacked")
            made = sorted(n for n in names if any(n == base or n.startswith(f"{base}{INPLACE}") for base in bases))
            if made and made != [name]:
                how = self.kernels.pop(name)
                self.kernels.update(dict.fromkeys(made, how))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for how in self.kernels.values():
            key = how.split(":")[0]
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items()))


def schedule_module(mod: tvm.IRModule, target: tvm.target.Target, info: CpuInfo, report: KernelReport | None = None) -> tvm.IRModule:
    """Give every unscheduled PrimFunc of a legalized, fused module a CPU schedule."""
    from tvm.s_tir.dlight import cpu as dlight_cpu

    report = report if report is not None else KernelReport()
    rules = [dlight_cpu.GEMV(), dlight_cpu.Reduction()]
    updates = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        name = gv.name_hint
        if is_scheduled(func):  # a tuning record, or a kernel its loader scheduled by hand (and says how)
            how = func.attrs.get(HAND_SCHEDULE) if func.attrs is not None else None
            report.kernels.setdefault(name, f"hand: {how}" if how else "tuned")
            continue
        how, scheduled = _schedule_one(func, target, info, rules)
        report.kernels[name] = how
        if scheduled is not None:
            updates[gv] = scheduled.with_attr(SCHEDULED, True)
    for gv, func in updates.items():
        mod[gv] = func
    return mod


def _schedule_one(func, target, info: CpuInfo, rules) -> tuple[str, Any]:
    how, sch = schedule_primfunc(func, target, info, rules)
    return how, (sch.mod["main"] if sch is not None else None)


def schedule_primfunc(func: tvm.tirx.PrimFunc, target: tvm.target.Target, info: CpuInfo, rules: list | None = None,
                      knobs: Knobs | None = None):
    """(how, schedule) for one PrimFunc as the pipeline schedules it (template, else dlight, else fallback), or
    ("unscheduled", None). The schedule's trace replays on the function: tuning starts from it. With ``knobs``
    only the template is tried, with those knobs (tuning's template variants)."""
    if knobs is not None:
        try:
            return _template(func, target, info, rules, knobs)
        except Exception:  # noqa: BLE001 - the variant does not apply to this kernel
            return None, None
    if rules is None:
        from tvm.s_tir.dlight import cpu as dlight_cpu

        rules = [dlight_cpu.GEMV(), dlight_cpu.Reduction()]
    for attempt in (_template, _dlight, _fallback):
        try:
            how, sch = attempt(func, target, info, rules)
        except Exception as exc:  # noqa: BLE001 - a template that does not fit falls through to the next
            how, sch = None, None
            del exc
        if sch is not None:
            return how, sch
    return "unscheduled", None


#: The PrimFunc attribute naming the template knobs tuning chose for a kernel (JSON of :class:`Knobs`); the
#: pipeline's template then schedules it with them.
KNOBS = "neocompile.template_knobs"


def func_knobs(func: tvm.tirx.PrimFunc) -> Knobs | None:
    """The knobs tuning chose for ``func`` (its :data:`KNOBS` attribute), or None."""
    if func.attrs is None or KNOBS not in func.attrs:
        return None
    fields = {f.name for f in dataclasses.fields(Knobs)}
    return Knobs(**{k: v for k, v in json.loads(str(func.attrs[KNOBS])).items() if k in fields})


def _template(func, target, info: CpuInfo, rules, knobs: Knobs | None = None):
    chosen = func_knobs(func) if knobs is None else None
    sch = s_tir.Schedule(func)
    try:
        tile = schedule_anchor(sch, info.vector_bits, info.vector_registers, knobs or chosen)
    except Exception:  # noqa: BLE001 - rows over fused pixels did not fit this kernel's epilogue: along the width
        sch = s_tir.Schedule(func)
        tile = schedule_anchor(sch, info.vector_bits, info.vector_registers,
                               dataclasses.replace(knobs or chosen or Knobs(), fuse_rows=False))
    if tile is None:
        return None, None
    return f"template: {tile.describe()}" + (" (tuned knobs)" if chosen is not None else ""), sch


def _dlight(func, target, info: CpuInfo, rules):
    for rule in rules:
        sch = rule.apply(func, target, False)
        if isinstance(sch, list):
            sch = sch[0] if sch else None
        if sch is not None:
            return f"dlight: {type(rule).__name__}", sch
    return None, None


def _fallback(func, target, info: CpuInfo, rules):
    sch = s_tir.Schedule(func)
    return ("fallback", sch) if schedule_fallback(sch, info.lanes()) else (None, None)


def prepare(mod: tvm.IRModule, target: tvm.target.Target, layout: str = "NHWC", lanes: int | None = None) -> tvm.IRModule:
    """The module right before scheduling: convs channels-last, legalized, fused, constant weights marked
    layout-free; with ``lanes`` (``CpuInfo.lanes()``), convs padded to whole vectors of output channels. Tuning
    (neocompile.tuning) takes its kernels from here, so that its records match what this pipeline schedules."""
    return _legalize(_to_layout(fold_constants_numpy(mod), layout, KernelReport()), target, lanes)


def _to_layout(mod: tvm.IRModule, layout: str, report: KernelReport) -> tvm.IRModule:
    """The convs in ``layout``: "NHWC" converts them (:mod:`.layout`), "NCHW" leaves the model's own; the layout the
    convs run in goes to ``report.conv_layout``. The same step for :func:`prepare` and :func:`weight_steps`, so
    tuned workloads are the ones the pipeline meets."""
    if layout == "NHWC":
        return channels_last(mod, note=lambda text: setattr(report, "conv_layout", text))
    if has_conv(mod):
        report.conv_layout = "NCHW"  # as the model has it (CompilerOptions cpu-layout)
    return mod


def _legalize(mod: tvm.IRModule, target: tvm.target.Target, lanes: int | None = None) -> tvm.IRModule:
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    # exp/erf/tanh/softmax as vectorizable polynomials (TOPI's fast_* forms); the libm calls they replace
    # are scalar and made a BERT FFN's GELU epilogue cost as much as its matmul.
    mod = fast_math(mod)  # TVM's FastMathTransform, also for loops (calls between Relax functions)
    mod = strided_pointwise_conv(dead_taps(mod))
    if lanes is not None and lanes > 1:
        mod = pad_conv_channels(mod, lanes)
    mod = tvm.transform.Sequential(cpu.library_dispatch_passes(target) + cpu.legalize_passes(target))(mod)
    before: dict[str, Any] = {}
    for func in _hand_kernels(mod).values():
        text = str(func.attrs[HAND_SCHEDULE])
        before[text] = None if text in before else func  # two kernels with one text: neither is put back
    mod = relax.transform.AttachAttrLayoutFreeBuffers()(mod)
    mod = _narrow_indices(mod)
    # A hand-scheduled kernel (the XGBoost forest) is put back as it was written: the pass would mark its constant
    # arguments layout-free under a renewed copy of the function, whose symbolic shapes then no longer match its
    # body, and SplitLayoutRewritePreproc would look for layout-rewrite blocks in it.
    for gv, func in _hand_kernels(mod).items():
        original = before.get(str(func.attrs[HAND_SCHEDULE]))
        if original is not None:
            mod[gv] = original
    return mod


def _narrow_indices(mod: tvm.IRModule) -> tvm.IRModule:
    """Index every kernel whose buffers all have static shapes under 2**31 elements in int32 (as NarrowDataType
    would at build time anyway): the loop hint the templates place (``fallback.PARTITION``) only reaches
    LoopPartition when no int64 loop variable is renamed on the way."""
    narrow = tvm.tirx.transform.ForceNarrowIndexToInt32()
    small = [(gv, func) for gv, func in mod.functions.items() if isinstance(func, tvm.tirx.PrimFunc) and _fits_int32(func)]
    for gv, func in small:
        try:
            mod[gv] = narrow(tvm.IRModule({gv: func}))[gv.name_hint]
        except RuntimeError:  # the pass refuses int64 data (token ids): that kernel keeps int64 indices
            pass
    return mod


def _fits_int32(func: tvm.tirx.PrimFunc) -> bool:
    for param in func.params:
        size = 1
        for dim in param.shape if isinstance(param.ty, tvm.tirx.BufferType) else ():
            if not isinstance(dim, tvm.tirx.IntImm):
                return False  # a symbolic shape: its index type stays as the caller gives it
            size *= int(dim.value)
        if size >= 2**31:
            return False
    return True


#: The attribute of a PrimFunc a loader scheduled by hand (the XGBoost forest): its text says how, for the
#: manifest's Kernels; the pipeline neither schedules it nor packs its constant arguments.
HAND_SCHEDULE = "neocompile.schedule"


def _hand_kernels(mod: tvm.IRModule) -> dict[Any, Any]:
    return {gv: func for gv, func in mod.functions.items()
            if isinstance(func, tvm.tirx.PrimFunc) and func.attrs is not None and HAND_SCHEDULE in func.attrs}


def weight_steps(info: CpuInfo, report: KernelReport,
                 apply_records: Callable[[tvm.IRModule], tvm.IRModule] | None = None,
                 layout: str = "NHWC") -> list[Callable[[tvm.IRModule], tvm.IRModule]]:
    """The CPU pipeline up to its packed weights lifted into parameters, one step (module -> module) at a time, to be
    run under the target: ``for step in steps: mod = step(mod)``, and again on its own output while
    ``step.unfinished`` (the weight packing, which packs a chunk per run; a caller that does not repeat it leaves
    the rest to FoldConstant, slower). A caller that owns the module lets each step's input go when the next
    begins, so a weight is held at most twice (before and after its folding or packing) rather than once per step;
    ``tvm.compile`` would hold its input to the end. ``lower_passes`` does the rest.

    ``apply_records`` (tuning) may replace PrimFuncs by tuned ones, marked ``tir.is_scheduled``, before the
    templates run on the rest. ``layout`` "NHWC" first runs the convs channels-last (:mod:`.layout`)."""

    def legalize(mod: tvm.IRModule) -> tvm.IRModule:  # prepare(), after its numpy folding
        return _legalize(mod, tvm.target.Target.current(), info.lanes())

    def schedule(mod: tvm.IRModule) -> tvm.IRModule:
        if apply_records is not None:
            mod = apply_records(mod)
        return schedule_module(mod, tvm.target.Target.current(), info, report)

    def lift(mod: tvm.IRModule) -> tvm.IRModule:
        report.rename({gv.name_hint for gv in mod.get_global_vars()})
        return lift_params(mod)  # packed weights become parameters, written to compiled.params (neocompile.params)

    # Constant weights read through a layout-rewrite block are packed here, once, at compile time.
    def to_layout(mod: tvm.IRModule) -> tvm.IRModule:
        return _to_layout(mod, layout, report)

    # A kernel whose output may go over an input that dies with it (a residual add's) gets an in-place copy
    # (:mod:`.inplace`); reshape kernels become views first, so that a tensor with a view is never written over.
    return [fold_constants_numpy, to_layout, legalize, schedule, relax.transform.SplitLayoutRewritePreproc(), FoldWeightPrepack(),
            relax.transform.FoldConstant(), relax.transform.RewriteDataflowReshape(), relax.transform.CanonicalizeBindings(),
            use_inplace, relax.transform.DeadCodeElimination(), lift]


def lower_passes(target: tvm.target.Target) -> tvm.transform.Pass:
    """The rest of the CPU pipeline after :func:`weight_steps`: the CPU backend's dataflow lowering and finalizing."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    return tvm.transform.Sequential(cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target))


def relax_pipeline(info: CpuInfo, report: KernelReport, apply_records: Callable[[tvm.IRModule], tvm.IRModule] | None = None,
                   layout: str = "NHWC"):
    """The Relax pipeline for ``tvm.compile``: the CPU backend's own passes with scheduling in between
    (:func:`weight_steps`, then :func:`lower_passes`, as one pass)."""

    @tvm.transform.module_pass(opt_level=0, name="neocompile.cpu")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        for step in weight_steps(info, report, apply_records, layout):
            mod = step(mod)
            while getattr(step, "unfinished", False):
                mod = step(mod)
        return lower_passes(tvm.target.Target.current())(mod)

    return _pipeline
