"""Compile a Relax module for a registry target and link it with the target's toolchain."""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import CompilationError
from .targets import Target


@dataclasses.dataclass
class CompiledLibrary:
    path: Path
    target: dict[str, Any]  # the TVM target, dict form, as compiled
    device_code: str  # what the accelerator part holds: "none", "cuda-source", ...
    needs: list[str]  # what the package still needs on the device, in plain words
    kernels: dict[str, str] = dataclasses.field(default_factory=dict)  # PrimFunc -> how it was scheduled
    conv_layout: str | None = None  # the layout CPU kernels ran convs in (None: no conv, or no CPU kernels)
    tuning: Any = None  # the job's tuning.session.TuningSession (CPU kernels), None otherwise
    params: Path | None = None  # the weights file beside the library (params.params_path), None: weights embedded
    weights: dict[str, Any] = dataclasses.field(default_factory=dict)  # compiled.meta Model.Weights

    def tuning_summary(self, options: dict[str, Any]) -> dict[str, Any]:
        """``Compilation.Tuning`` for the manifest."""
        if self.tuning is not None:
            return self.tuning.summary(self.kernels)
        requested = options.get("tuning")
        return {"Requested": requested, "Tuned": False, "Trials": 0, "Cache": None, "RecordsApplied": {},
                "Note": "not tuned: tuning applies to CPU kernels (no accelerator, cpu-kernels true)" if requested else None}


def compile_library(mod: Any, target: Target, options: dict[str, Any], out_path: Path,
                    note: Callable[[str], None] | None = None, deadline: float | None = None) -> CompiledLibrary:
    """``tvm.compile`` the module for ``target`` and export one shared library at ``out_path``, its weights in
    ``compiled.params`` beside it for CPU targets (see :mod:`.params`; accelerator targets keep them embedded).
    A caller that passes its only reference to ``mod`` (``compile_library(take(), ...)``) lets its weights go as
    the CPU pipeline folds and packs them.

    For CPU kernels, tuning records from the cache are applied, and with ``options["tuning"]`` MetaSchedule first
    tunes the kernels until its trials or the time before ``deadline`` (monotonic clock) run out; ``note`` gets
    its progress lines."""
    import tvm

    from . import params
    from .device import toolchain

    target_dict = target.target_dict(options)
    fcompile = toolchain.linker(target)  # zig, for the device's glibc floor
    try:
        tvm_target = tvm.target.Target(target_dict)
    except Exception as exc:
        raise CompilationError(f"OutputConfig: TVM rejects the target {target_dict} for {target.name}: {exc}") from exc
    report = session = None
    pipeline: Any = "default"
    steps: list[Callable[[Any], Any]] = []
    if target.accelerator is None and options.get("cpu-kernels", True):
        from .cpu import CpuInfo, KernelReport, lower_passes, weight_steps
        from .tuning.session import TuningSession

        report = KernelReport()
        session = TuningSession(target, options, note, deadline)
        session.tune(mod, tvm_target)
        steps = weight_steps(CpuInfo.from_target(target), report, apply_records=session.apply, layout=session.layout)
        pipeline = lower_passes(tvm_target)
    elif options.get("tuning") and note is not None:
        note("not tuned: tuning applies to CPU kernels (no accelerator, cpu-kernels true)")
    # Weights leave the library for CPU targets: the CPU pipeline lifts them after packing them (params.lift_params,
    # the last weight step); TVM's default pipeline folds no constants, so lifting first is the same. An
    # accelerator's weights would have to be placed on its device by the caller: they stay embedded.
    # The weight steps run here, each on the module the step before made, so that once a caller has handed the
    # module over (nothing else refers to it) the weights before a step are let go after it: tvm.compile would
    # hold its input, the source weights, to the end. The lifted weights are written before the build, which
    # then runs without them (VGG-19: 550 MB less beside LLVM).
    failed = f"TVM failed to compile the model for {target.name}"
    with _raised_as(failed, typed=True), tvm_target, params.lifting(enabled=target.accelerator is None) as lifted:
        if pipeline == "default":
            mod = params.lift_params(mod)
        for step in steps:
            mod = step(mod)
            while getattr(step, "unfinished", False):  # the weight packing, a chunk per run (cpu.weight_steps)
                mod = step(mod)
    weights = params.LiftedParams() if lifted is None else lifted
    with _raised_as(f"Writing the model's weights for {target.name} failed"):
        params_file = weights.save(params.params_path(out_path))
    try:
        with _raised_as(failed, typed=True), tvm_target:
            executable = tvm.compile(mod, tvm_target, relax_pipeline=pipeline)
        del mod
        with _raised_as(f"Linking the compiled model for {target.name} failed", own=True):
            executable.export_library(str(out_path), fcompile=fcompile)
    except CompilationError:
        if params_file is not None:  # no weights file is left beside a library that was never written
            params_file.unlink(missing_ok=True)
        raise
    del executable
    device_code, needs = _device_code(target, out_path)
    kernels = dict(sorted(report.kernels.items())) if report is not None else {}
    return CompiledLibrary(path=out_path, target=target_dict, device_code=device_code, needs=needs, kernels=kernels,
                           tuning=session, params=params_file, weights=weights.manifest(params_file),
                           conv_layout=report.conv_layout if report is not None else None)


def check_cpu(target: Target, options: dict[str, Any]) -> None:
    """Refuse an ``mcpu`` LLVM does not know for the target's triple (LLVM would silently fall back to generic)."""
    mcpu = options.get("mcpu")
    if not mcpu:
        return
    import tvm

    if not tvm.get_global_func("target.llvm_is_valid_cpu")(mcpu, target.triple):
        archlist = tvm.get_global_func("target.llvm_get_cpu_archlist")(tvm.target.Target(target.host))
        raise CompilationError(
            f"OutputConfig.CompilerOptions.mcpu: '{mcpu}' is not a CPU LLVM knows for {target.triple} ({target.name}); "
            f"expected one of {', '.join(sorted(map(str, archlist)))}"
        )


_SOURCE_MARKERS = {"cuda": b'extern "C" __global__', "opencl": b"__kernel"}


def _device_code(target: Target, library: Path) -> tuple[str, list[str]]:
    """What the accelerator part of the library is, and what the device needs to run it, in plain words.

    Without a GPU driver at build time TVM embeds device *source* (CUDA C, OpenCL C), not binaries: the
    library is inspected rather than assumed.
    """
    if target.accelerator is None:
        return "none", []
    kind = target.accelerator.get("kind")
    marker = _SOURCE_MARKERS.get(kind)
    if marker is None or marker not in library.read_bytes():
        return f"{kind}-binary", [f"A TVM runtime with {kind} support on the device."]
    if kind == "cuda":
        return "cuda-source", [
            f"CUDA device code was not compiled to a cubin for {target.accelerator.get('arch')} (no GPU toolchain at build time): "
            "the library embeds CUDA source that must be compiled at load time (NVRTC via TVM's Python runtime).",
            "A TVM runtime built with CUDA (libtvm_runtime_cuda.so) and a CUDA 12+ driver on the device.",
        ]
    if kind == "opencl":
        return "opencl-source", [
            "An OpenCL-enabled TVM runtime on the device (the PyPI wheel's runtime has no OpenCL) and the Intel OpenCL driver.",
        ]
    return f"{kind}-source", [f"A TVM runtime with {kind} support on the device."]


@contextlib.contextmanager
def _raised_as(what: str, typed: bool = False, own: bool = False) -> Iterator[None]:
    """An error inside becomes ``CompilationError("<what>: [<type>: ]<its first line>")``; with ``own``, a
    CompilationError raised inside (the linker's own message) passes as it is."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - any failure of TVM or the toolchain is the job's CompilationError
        if own and isinstance(exc, CompilationError):
            raise
        raise CompilationError(f"{what}: {type(exc).__name__ + ': ' if typed else ''}{_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # TVM errors carry long C++ tracebacks; the last non-empty line is the message.
    lines = [l for l in text.splitlines() if l.strip()]
    return lines[-1] if lines else type(exc).__name__
