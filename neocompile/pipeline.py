"""The one compile path: fetch -> extract -> load -> compile -> verify -> package -> upload.

The CLI, the Python API (and later the HTTP job API and the worker) are thin callers of ``run``.
"""
from __future__ import annotations

import dataclasses
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from . import __version__, archive, datainput, options as options_mod, package, sandbox, storage
from .compiler import check_cpu, compile_library
from .device import floors as device_floors
from .device.runner import rt_abi
from .digest import blake2b_file
from .errors import JobTimeout, ValidationError
from .loaders import get_loader
from .targets import Target, get_target, resolve_platform
from .verify import default_tolerance, skipped, verify

STAGES = ("fetch", "extract", "load", "compile", "verify", "package", "upload")
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
FRAMEWORK_VERSION = re.compile(r"^[0-9]\.[A-Za-z0-9.]+$")


@dataclasses.dataclass
class StageEvent:
    stage: str
    status: str  # "start" | "note" | "done" | "failed"
    seconds: float = 0.0
    detail: str = ""


Progress = Callable[[StageEvent], None]


@dataclasses.dataclass
class CompilationRequest:
    """What CreateCompilationJob carries, flattened."""

    model_uri: str
    framework: str
    output_location: str
    data_input_config: Any = None
    target_device: str | None = None
    target_platform: dict[str, Any] | None = None
    compiler_options: Any = None
    job_name: str | None = None
    framework_version: str | None = None
    max_runtime_seconds: int | None = None

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> "CompilationRequest":
        """Build a request from a CreateCompilationJob request body (InputConfig/OutputConfig/StoppingCondition)."""
        if not isinstance(body, dict):
            raise ValidationError("CreateCompilationJob request: expected a JSON object")
        known = {"CompilationJobName", "RoleArn", "ModelPackageVersionArn", "InputConfig", "OutputConfig", "VpcConfig", "StoppingCondition", "Tags"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise ValidationError(f"CreateCompilationJob request: unknown field(s) {unknown}; expected {sorted(known)}")
        if body.get("ModelPackageVersionArn"):
            raise ValidationError("ModelPackageVersionArn: model packages are not supported; give InputConfig instead")
        inp, out = body.get("InputConfig"), body.get("OutputConfig")
        if not isinstance(inp, dict):
            raise ValidationError("InputConfig: missing; expected {S3Uri, Framework[, DataInputConfig, FrameworkVersion]}")
        if not isinstance(out, dict):
            raise ValidationError("OutputConfig: missing; expected {S3OutputLocation, TargetDevice | TargetPlatform[, CompilerOptions]}")
        for field, value in (("InputConfig.S3Uri", inp.get("S3Uri")), ("InputConfig.Framework", inp.get("Framework")), ("OutputConfig.S3OutputLocation", out.get("S3OutputLocation"))):
            if not value:
                raise ValidationError(f"{field}: missing; it is required")
        stop = body.get("StoppingCondition") or {}
        if not isinstance(stop, dict):
            raise ValidationError("StoppingCondition: expected a structure such as {\"MaxRuntimeInSeconds\": 900}")
        return cls(
            model_uri=inp["S3Uri"],
            framework=inp["Framework"],
            data_input_config=inp.get("DataInputConfig"),
            framework_version=inp.get("FrameworkVersion"),
            output_location=out["S3OutputLocation"],
            target_device=out.get("TargetDevice"),
            target_platform=out.get("TargetPlatform"),
            compiler_options=out.get("CompilerOptions"),
            job_name=body.get("CompilationJobName"),
            max_runtime_seconds=stop.get("MaxRuntimeInSeconds"),
        )


@dataclasses.dataclass
class Plan:
    """A validated request: everything resolved that can be checked before any download."""

    request: CompilationRequest
    job_name: str
    target: Target
    options: dict[str, Any]
    loader: Any
    shapes: dict[str, tuple[int, ...]] | None
    artifact_name: str


@dataclasses.dataclass
class CompilationResult:
    """What a job gives back. Per-job facts (name, time, stage timings, verification seconds) live here and not in
    the package, so that two builds of the same input are byte-identical packages with equal digests."""

    job_name: str
    artifact_uri: str
    artifact_digest: str
    meta: dict[str, Any]
    verification: dict[str, Any]
    timings: dict[str, float]
    derived_data_input_config: dict[str, list[int]]
    created_time: str = ""


def plan(request: CompilationRequest) -> Plan:
    """Validate the request (framework, target, options, DataInputConfig, names); no I/O but the registry."""
    job_name = request.job_name or f"neocompile-{time.strftime('%Y%m%d-%H%M%S')}"
    if not JOB_NAME.match(job_name):
        raise ValidationError(
            f"CompilationJobName: '{job_name}' is not valid; expected 1-63 letters, digits and hyphens, "
            "starting and ending with a letter or digit (pattern [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62})"
        )
    loader = get_loader(request.framework)
    version = request.framework_version
    if version is not None and not (isinstance(version, str) and 3 <= len(version) <= 10 and FRAMEWORK_VERSION.match(version)):
        raise ValidationError(
            f"InputConfig.FrameworkVersion: {version!r} is not valid; expected 3-10 characters matching [0-9]\\.[A-Za-z0-9.]+ (e.g. '1.13')"
        )
    if request.target_device and request.target_platform:
        raise ValidationError("OutputConfig: TargetDevice and TargetPlatform are mutually exclusive; give one of them")
    if request.target_device:
        target = get_target(request.target_device)
    elif request.target_platform:
        target = resolve_platform(request.target_platform)
    else:
        raise ValidationError("OutputConfig: one of TargetDevice or TargetPlatform is required")
    opts = options_mod.parse(request.compiler_options)
    check_cpu(target, opts)
    if target.platform.get("Accelerator") == "NVIDIA" and request.target_platform:
        missing = [k for k in ("gpu-code", "trt-ver", "cuda-ver") if k not in opts]
        if missing:
            raise ValidationError(
                f"OutputConfig.CompilerOptions: TargetPlatform with Accelerator NVIDIA requires {', '.join(missing)}; "
                "expected e.g. {'gpu-code': 'sm_53', 'trt-ver': '8.2.1', 'cuda-ver': '10.2'}"
            )
    if request.max_runtime_seconds is not None and (
        isinstance(request.max_runtime_seconds, bool) or not isinstance(request.max_runtime_seconds, int) or request.max_runtime_seconds < 1
    ):
        raise ValidationError(
            f"StoppingCondition.MaxRuntimeInSeconds: {request.max_runtime_seconds!r} is not valid; expected an integer >= 1"
        )
    shapes = datainput.parse(request.data_input_config, loader.name, allow_list=loader.accepts_list)
    return Plan(
        request=request,
        job_name=job_name,
        target=target,
        options=opts,
        loader=loader,
        shapes=shapes,
        artifact_name=package.package_name(request.model_uri, target.name),
    )


class _Stages:
    """Times stages and reports them to the progress callback."""

    def __init__(self, progress: Progress | None, deadline: float | None):
        self.progress = progress or (lambda e: None)
        self.deadline = deadline
        self.timings: dict[str, float] = {}

    def __call__(self, name: str):
        return _Stage(self, name)


class _Stage:
    def __init__(self, owner: _Stages, name: str):
        self.owner, self.name, self.detail = owner, name, ""

    def __enter__(self):
        if self.owner.deadline is not None and time.monotonic() > self.owner.deadline:
            raise JobTimeout(f"The compilation job exceeded StoppingCondition.MaxRuntimeInSeconds before the '{self.name}' "
                             "stage and was stopped; no output was written")
        self.start = time.perf_counter()
        self.owner.progress(StageEvent(self.name, "start"))
        return self

    def __exit__(self, exc_type, exc, tb):
        took = time.perf_counter() - self.start
        self.owner.timings[self.name] = round(took, 3)
        self.owner.progress(StageEvent(self.name, "failed" if exc else "done", took, str(exc) if exc else self.detail))
        return False


def run(request: CompilationRequest, progress: Progress | None = None, workdir: Path | None = None) -> CompilationResult:
    """Run the whole compile path for one request. Raises a NeoError subclass on any user-facing failure."""
    p = plan(request)
    deadline = time.monotonic() + request.max_runtime_seconds if request.max_runtime_seconds else None
    stage = _Stages(progress, deadline)
    storage.check_writable(request.output_location)
    owned = workdir is None
    work = Path(tempfile.mkdtemp(prefix="neocompile-")) if owned else Path(workdir)
    try:
        return _run(p, stage, work)
    finally:
        if owned:
            shutil.rmtree(work, ignore_errors=True)


def _run(p: Plan, stage: _Stages, work: Path) -> CompilationResult:
    req, target = p.request, p.target
    created = package.now_iso()
    with stage("fetch") as s:
        archive_path = storage.fetch(req.model_uri, work / "input")
        s.detail = f"{archive_path.stat().st_size} bytes"
    with stage("extract") as s:
        root = archive.extract(archive_path, work / "model")
        model_file = p.loader.find_model(root)
        s.detail = str(model_file.relative_to(root))
    with stage("load") as s:
        # Untrusted files are opened only in a confined child process; see sandbox.py.
        loaded, s.detail = sandbox.load_model(p.loader, root, p.shapes, p.options, stage.deadline)
    staging = work / "package"
    staging.mkdir()
    with stage("compile") as s:
        # Handed over, not shared: compile_library lets the source weights go as it packs them (the library and
        # compiled.params hold what runs).
        compiled = compile_library(_take_module(loaded), target, p.options, staging / package.LIBRARY,
                                   note=lambda text: stage.progress(StageEvent("compile", "note", detail=text)),
                                   deadline=stage.deadline)
        s.detail = f"{target.name}: {compiled.target}"
    _return_freed_memory()  # the compile's freed heap, before the runner loads the weights beside this process
    with stage("verify") as s:
        bundled, runtime_note = _bundle_runtime(target, staging, lambda text: stage.progress(StageEvent("verify", "note", detail=text)))
        report = _verify(p, loaded, compiled, staging if "bin/neo_run" in bundled else None)
        s.detail = f"{report['status']} ({report.get('mode') or report.get('reason')})"
        if compiled.tuning is not None:  # only a verified (or unverifiable) package's records reach the cache
            compiled.tuning.note = lambda text: stage.progress(StageEvent("verify", "note", detail=text))
            compiled.tuning.commit()
    with stage("package") as s:
        package.write_report(staging, report)
        floors = device_floors.package_floors(staging)
        device_floors.check(floors, target)  # a package its device's OS cannot load is a failed job
        meta = package.write_meta(staging, _meta(p, loaded, compiled, report, bundled, runtime_note, floors))
        tarball = package.make_tarball(staging, work / p.artifact_name)
        digest = blake2b_file(tarball)
        s.detail = f"{p.artifact_name}, {tarball.stat().st_size} bytes"
    with stage("upload") as s:
        uri = storage.put(tarball, req.output_location, p.artifact_name)
        s.detail = uri
    return CompilationResult(
        job_name=p.job_name,
        artifact_uri=uri,
        artifact_digest=digest,
        meta=meta,
        verification=report,
        timings=dict(stage.timings),
        derived_data_input_config=loaded.data_input_config,
        created_time=created,
    )


def _bundle_runtime(target: Target, staging: Path, note: Callable[[str], None]) -> tuple[list[str], str]:
    """Put the target's runtime into the package folder: the TVM runtime and the C API (lib/), the runner
    (bin/neo_run), the C header (include/) and the Python binding (python/)."""
    from .device import runner, tvm_runtime

    if not tvm_runtime.is_cached(target.arch):
        note(f"building the {target.arch} TVM runtime for glibc {tvm_runtime.build_spec(target.arch)['glibc']} "
             "once (zig, from the wheel's C++ sources: a few minutes, then cached)")
    # No package ships without its runtime and runner: a failure to build them fails the job.
    driver = runner.build_driver(target)  # in a folder with the runtime libraries and the C API it runs on
    return package.add_runtime(staging, driver.parent, driver), ""


def _return_freed_memory() -> None:
    """Give the heap the compile freed back to the OS (glibc keeps it for reuse otherwise: ResNet-50, 28 MB)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _take_module(loaded) -> Any:
    """``loaded.mod``, no longer referred to by ``loaded``: passed straight as an argument, the callee holds the only
    reference."""
    mod, loaded.mod = loaded.mod, None
    return mod


def _verify(p: Plan, loaded, compiled, package_dir: Path | None) -> dict[str, Any]:
    """Run the package where it can run (natively or under emulation) next to the source framework."""
    from .device import runner
    from .runtime import run_library

    target = p.target
    names = [o.name for o in loaded.outputs]
    tol = _tolerance(p.options, loaded.precision)
    if not p.options.get("verify", True):
        return skipped("disabled by CompilerOptions verify=false")
    if loaded.reference is None:
        return skipped(f"no reference runtime for {loaded.framework}")
    if target.accelerator is not None:
        return skipped(f"the model runs on the {target.accelerator['kind']} accelerator, which this machine cannot run")
    if target.host_is_native():
        mode = "native" if package_dir is None else "native: bin/neo_run"
    else:
        ok, why = runner.can_emulate(target)
        if not ok or package_dir is None:
            return skipped(why if not ok else "no runtime for the target's architecture to run it with")
        cpu = target.cpu.get("emulate_cpu")
        mode = f"emulated: {target.emulator['command']}" + (f" -cpu {cpu}" if cpu else "") + " bin/neo_run"
    if package_dir is None:
        run = lambda xs: run_library(compiled.path, xs)  # noqa: E731  (in-process Python runtime)
    else:
        run = lambda xs: runner.run_library(compiled.path, target, xs, package_dir=package_dir)  # noqa: E731
    report = verify(run, loaded.reference, loaded.inputs, names, mode, missing=loaded.missing_values, **tol)
    # Shapes the importer could not infer statically are taken from the verified run; dimensions named after a
    # symbolic input dimension (an XGBoost model's rows "N") stay symbolic.
    named = {d for spec in loaded.inputs for d in spec.shape or () if isinstance(d, str)}
    for i, row in enumerate(report.get("outputs", [])):
        spec = loaded.outputs[i] if i < len(loaded.outputs) else None
        if spec is not None and (spec.shape is None or not all(isinstance(d, int) or d in named for d in spec.shape)):
            loaded.outputs[i] = dataclasses.replace(spec, shape=tuple(row["shape"]))
    return report


def _tolerance(options: dict[str, Any], precision: str) -> dict[str, Any]:
    """rtol/atol from CompilerOptions where given, the rest derived from the model's precision; and where they came from."""
    rtol, atol, why = default_tolerance(precision)
    given = [k for k in ("verify-rtol", "verify-atol") if k in options]
    if given:
        why = f"CompilerOptions {' and '.join(given)}" + (f"; otherwise the {why}" if len(given) < 2 else "")
    return {"rtol": options.get("verify-rtol", rtol), "atol": options.get("verify-atol", atol), "tolerance_source": why}


def _meta(p: Plan, loaded, compiled, report: dict[str, Any], bundled: list[str], runtime_note: str,
          floors: dict[str, Any]) -> dict[str, Any]:
    from .device import toolchain
    from .device.tvm_runtime import runtime_versions

    target = p.target
    versions = runtime_versions()
    return {
        "Requirements": {
            "TargetDevice": target.name.upper(),
            "TargetDeviceType": target.device_type,
            # The true floors over every ELF file in the package (model, runtime, runner); Model and neo_run
            # refuse to load on an older glibc.
            "MinGlibc": f"GLIBC_{floors['GLIBC']}" if floors["GLIBC"] else None,
            "MinGlibcxx": f"GLIBCXX_{floors['GLIBCXX']}" if floors["GLIBCXX"] else None,
            "ReferenceOS": {"Name": target.os["reference"], "Glibc": target.glibc_floor, "Glibcxx": target.glibcxx_floor},
            "FileFloors": floors["Files"],
            # x86 CPU flags (as /proc/cpuinfo names them) the code assumes; runtime.Model checks them.
            "CpuFeatures": target.cpu.get("host_features") or [],
            "Runtime": f"apache-tvm {versions.get('tvm')} (Relax VM), apache-tvm-ffi {versions.get('tvm-ffi')}",
            "DeviceNeeds": compiled.needs,
        },
        "Compilation": {
            "Compiler": f"neocompile {__version__}",
            "TVMVersion": versions.get("tvm"),
            "TVMFFIVersion": versions.get("tvm-ffi"),
            "TargetDevice": target.name,
            "TargetPlatform": target.platform,
            "Target": compiled.target,
            "Triple": target.triple,
            "Arch": target.arch,
            "FloatABI": target.float_abi,
            "Mcpu": compiled.target.get("host", compiled.target).get("mcpu"),
            # The thread count the kernels were scheduled for (the target's num-cores); null: any, all cores at run time.
            "NumThreads": compiled.target.get("host", compiled.target).get("num-cores"),
            "Toolchain": f"zig {toolchain.zig_version()} ({target.zig_triple})",
            "DeviceCode": compiled.device_code,
            # How each kernel (fused PrimFunc) was scheduled: "template: ...", "dlight: ...", "fallback", "tuned".
            "Kernels": compiled.kernels,
            # The activation layout the CPU kernels ran 2-D convs in ("NHWC" unless cpu-layout NCHW or the
            # conversion failed, with why); null when there is no conv. Inputs and outputs keep the model's layout.
            "ConvLayout": compiled.conv_layout,
            # Whether MetaSchedule ran (trials, kernels), the cache kind, and the kernels scheduled from records.
            "Tuning": compiled.tuning_summary(p.options),
            "Framework": loaded.framework,
            "FrameworkVersion": p.request.framework_version or loaded.framework_version,
            "SourceFrameworkVersion": loaded.framework_version,
            "ImportRoute": loaded.route,
            # The routes tried first that did not take the model, and why (empty when the first one did).
            "ImportRoutesFailed": loaded.routes_failed,
            "CompilerOptions": p.options,
            "DataInputConfig": loaded.data_input_config,
        },
        "Model": {
            "Inputs": [s.to_meta() for s in loaded.inputs],
            "Outputs": [s.to_meta() for s in loaded.outputs],
            # Framework facts beyond the signature (an XGBoost model's objective, classes, trees), if the loader has any.
            **({"Details": loaded.model_details} if loaded.model_details else {}),
            # Where the weights are: "external" in compiled.params (passed after the inputs, by name "main:<i>"),
            # or "embedded" in compiled.so (accelerator targets, packages of older versions).
            "Weights": compiled.weights or {"Storage": "embedded", "File": None, "Parameters": {}, "Bytes": 0},
        },
        "Runtime": {"Bundled": bundled, "Note": runtime_note or None,
                    # The package's C API and its Python binding, when bundled (CPU targets).
                    "API": ({"Library": "lib/libneocompile_rt.so", "Header": "include/neocompile_rt.h",
                             "Python": "python/neocompile_rt.py", "ABI": rt_abi()}
                            if "lib/libneocompile_rt.so" in bundled else None)},
        "Verification": {k: report[k] for k in ("status", "mode", "reason") if k in report},
    }
