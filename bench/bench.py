"""`make bench`: compile a fixed model set with neocompile and time it against onnxruntime and torch, in one run.

    python bench/bench.py [--quick] [--models resnet50,mlp] [--batches 1,8] [--tune-trials N]
                          [--skip-memory | --memory-only] [--skip-arm] [--budget S] [--compile-only] [--reuse]
                          [--skip-service | --service-only] [--skip-transform | --transform-only]
                          [--skip-rt | --rt-only] [--render]

The models (bench/models.py, plain torch with seeded weights, exported to ONNX opset 17 and packed as Neo's
model.tar.gz) are ResNet-50, MobileNetV2, a BERT-base-sized encoder and an MLP, each at batch 1 and 8 as separate
static-shape packages for this machine's best native target (`neocompile targets --native`). Every package is
compiled through neocompile's Python API in a child process of its own (bench/compile_job.py: wall time, seconds and
peak memory per stage) in up to three variants: `neocompile` (the default compile, untuned templates),
`neocompile-tvm-default` (CompilerOptions cpu-kernels=false: TVM's own default schedules) and `neocompile-tuned`
(CompilerOptions tuning.trials=N, only with --tune-trials / BENCH_TUNE_TRIALS > 0). Latency is measured per thread
count (1 and all usable cores) in a child process per (model, batch, threads) for every variant, onnxruntime and torch
(bench/measure.py), the slowest model is profiled per kernel, VGG-19, ResNet-50 and MobileNetV2 (the floor) are compiled
for the compile-memory test, and one model is compiled for an armv7 and an aarch64 device to count NEON instructions and
time it under qemu (bench/arm.py). The job service (bench/service.py: `neocompile serve` on SQLite and on a throwaway PostgreSQL) is
timed with 8 concurrent boto3 clients on 1,000 stored jobs (Describe, List pages) and for how soon an idle worker
starts a created job. The package's Python runtime binding (python/neocompile_rt.py) is timed against calling the TVM
VM directly on SqueezeNet 1.1 and a tiny model (bench/rt_overhead.py). Results go to bench/results.json,
bench/results.png and the README (bench/report.py).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: `python bench/bench.py`

from bench import frameworks, models, report, rt_overhead, service, transform  # noqa: E402

RESULTS = ROOT / "bench" / "results.json"
PACKAGES = models.WORK / "packages"
ARM_TARGETS = ["rasp3b", "rk3399"]  # armv7 hard-float and aarch64, both Cortex-A53
VARIANTS = {
    "neocompile": {"tuning": False},  # the templates alone: no records from the tuning cache
    "neocompile-tvm-default": {"cpu-kernels": False, "tuning": False},
    "neocompile-tuned": None,  # {"tuning": {"trials": N}}, set from --tune-trials
}
COMPILE_TIMEOUT_S = 4 * 3600
MEASURE_TIMEOUT_S = 3600


def log(text: str) -> None:
    print(f"bench: {text}", flush=True)


def _child(module: str, *args: str, env: dict[str, str] | None = None, timeout: float | None = None) -> dict[str, Any]:
    """Run ``python -m bench.<module> args... RESULT`` and return the JSON it wrote, or ``{"error": ...}``."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        result = Path(tmp) / "result.json"
        try:
            proc = subprocess.run([sys.executable, "-m", f"bench.{module}", *args, str(result)], cwd=ROOT,
                                  env=env, timeout=timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return {"error": f"bench.{module} did not finish within {timeout:g} s"}
        if proc.returncode != 0 or not result.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
            return {"error": f"bench.{module} exited with status {proc.returncode}: " + " | ".join(tail)}
        return json.loads(result.read_text())


def _request_file(tmp: Path, request: dict[str, Any]) -> str:
    path = tmp / f"request-{len(list(tmp.iterdir()))}.json"
    path.write_text(json.dumps(request))
    return str(path)


# --- the steps -----------------------------------------------------------------------------------------------------

def machine_facts() -> dict[str, Any]:
    from importlib.metadata import version

    import tvm

    import neocompile

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), platform.processor())
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))
    return {
        "cpu_model": model,
        "llvm_host_cpu": tvm.get_global_func("target.llvm_get_system_cpu")(),
        "cpu_flags": {f: f in flags for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vnni")},
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": {"neocompile": neocompile.__version__, "tvm": tvm.__version__,
                     **{name: version(name) for name in ("onnxruntime", "torch", "onnx", "numpy")},
                     "python": platform.python_version()},
    }


def native_target() -> str:
    cli = Path(sys.executable).parent / "neocompile"
    out = subprocess.run([str(cli), "targets", "--native"], capture_output=True, text=True, check=True).stdout
    lines = out.split()
    if not lines:
        raise SystemExit("bench: no registry device runs natively on this CPU (`neocompile targets --native` is empty)")
    return lines[0]


def variant_options(tune_trials: int) -> dict[str, dict[str, Any]]:
    """Each variant's CompilerOptions, and whether this version of neocompile accepts them."""
    from neocompile import options
    from neocompile.errors import NeoError

    out = {}
    for name, opts in VARIANTS.items():
        entry: dict[str, Any] = {"options": opts}
        if name == "neocompile-tuned":
            entry["options"] = opts = {"tuning": {"trials": tune_trials}} if tune_trials > 0 else None
            entry["budget"] = f"{tune_trials} trials" if tune_trials > 0 else None
            if tune_trials <= 0:
                out[name] = {**entry, "available": False, "reason": "not run (--tune-trials / BENCH_TUNE_TRIALS is 0)"}
                continue
        try:
            options.parse(opts)
            entry["available"] = True
        except NeoError as exc:
            entry.update(available=False, reason=f"this neocompile rejects {json.dumps(opts)}: {exc}")
        out[name] = entry
    return out


def build(name: str, batch: int) -> models.Built:
    """The model's archive, exported in a child (torch stays out of this process)."""
    built = models.paths(name, batch)
    if not (built.onnx.is_file() and built.archive.is_file()):
        log(f"exporting {models.MODELS[name].title} batch {batch} to ONNX")
        subprocess.run([sys.executable, "-m", "bench.models", name, str(batch)], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    return built


def compile_one(built: models.Built, model: str, batch: int, variant: str, target: str, opts: Any,
                reuse: bool, tmp: Path) -> dict[str, Any]:
    """Compile one package in a child; with ``reuse``, an earlier identical job's package and facts are kept."""
    out_dir = PACKAGES / f"{model}-b{batch}-{variant}-{target}"
    request = {"model_uri": str(built.archive), "framework": "ONNX", "output_location": str(out_dir),
               "data_input_config": {built.input_name: built.input_shape}, "target_device": target,
               "compiler_options": opts, "job_name": f"bench-{model}-b{batch}-{variant}".replace("_", "-")}
    result = compile_request(request, out_dir, reuse, tmp)
    if not result.get("reused"):
        result.update(model=model, batch=batch, variant=variant, target=target, onnx_bytes=built.onnx.stat().st_size)
        (out_dir / "bench-compile.json").write_text(json.dumps(result, indent=1))
    return result


def compile_request(request: dict[str, Any], out_dir: Path, reuse: bool, tmp: Path) -> dict[str, Any]:
    """Run one compile job (``neocompile.compile_model`` keyword arguments) in a child; with ``reuse``, an earlier
    identical job's package and facts (out_dir/bench-compile.json) are kept."""
    facts = out_dir / "bench-compile.json"
    if reuse and facts.is_file():
        old = json.loads(facts.read_text())
        if old.get("request") == request and old.get("ok") and Path(old["artifact"]).is_file():
            return {**old, "reused": True}
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = _child("compile_job", _request_file(tmp, request), timeout=COMPILE_TIMEOUT_S)
    result.setdefault("ok", False)
    result.setdefault("seconds", round(time.perf_counter() - t0, 3))
    result.update(request=request)
    if result["ok"]:
        result["package_bytes"] = Path(result["artifact"]).stat().st_size
    facts.write_text(json.dumps(result, indent=1))
    return result


def _compile_line(r: dict[str, Any]) -> str:
    if not r["ok"]:
        return f"{r['model']} b{r['batch']} {r['variant']} -> {r['target']}: FAILED: {r.get('error')}"
    return (f"{r['model']} b{r['batch']} {r['variant']} -> {r['target']}: {r['seconds']:.1f} s, peak "
            f"{r['peak_tree_rss'] / 2**30:.2f} GiB" + (" (reused)" if r.get("reused") else ""))


def thread_env(threads: int) -> dict[str, str]:
    return dict(os.environ, TVM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def measure(built: models.Built, model: str, batch: int, threads: int, packages: dict[str, str], args,
            tmp: Path) -> dict[str, Any]:
    request = {"model": model, "threads": threads, "input_shape": built.input_shape, "input_name": built.input_name,
               "onnx": str(built.onnx), "packages": packages, "budget_s": args.budget, "warmup": args.warmup}
    result = _child("measure", "latency", _request_file(tmp, request), env=thread_env(threads), timeout=MEASURE_TIMEOUT_S)
    return {"model": model, "batch": batch, "threads": threads, "results": result}


def profile_slowest(latency: list[dict[str, Any]], compiles: dict[tuple, dict], args, tmp: Path) -> dict[str, Any] | None:
    """Per-kernel profile of the (model, batch) whose default package is furthest behind onnxruntime at 1 thread."""
    worst = None
    for row in latency:
        ratio = report.ratio(row, "neocompile")
        if row["threads"] == 1 and ratio is not None and (worst is None or ratio > worst[0]):
            worst = (ratio, row)
    if worst is None:
        return None
    ratio, row = worst
    package = compiles[(row["model"], row["batch"], "neocompile")]["artifact"]
    median_ms = row["results"]["neocompile"]["median_ms"]
    runs = max(1, min(50, int(args.budget * 1e3 / max(median_ms, 1e-3))))
    built = build(row["model"], row["batch"])
    log(f"profiling {row['model']} batch {row['batch']} (neocompile {ratio:.1f}x onnxruntime at 1 thread), {runs} runs")
    request = {"package": package, "threads": 1, "input_shape": built.input_shape, "runs": runs, "top": 12}
    result = _child("measure", "profile", _request_file(tmp, request), env=thread_env(1), timeout=MEASURE_TIMEOUT_S)
    return {"model": row["model"], "batch": row["batch"], "threads": 1, "variant": "neocompile",
            "ratio_vs_onnxruntime": ratio, **result}


#: The compile-memory test's models: the issue's two, and the smallest of the set (MobileNetV2, 14 MB) for what a
#: job takes whatever its weights: TVM's library code, LLVM and the linker (the floor in report.goals).
MEMORY_MODELS = ["vgg19", "resnet50", "mobilenet_v2"]


def memory_test(names: list[str], compiles: dict[tuple, dict], target: str, reuse: bool, tmp: Path) -> list[dict[str, Any]]:
    """Compile time and peak memory per stage (RSS and its anonymous part), relative to the ONNX file, for each model
    at batch 1 (default options)."""
    rows = []
    for name in names:
        job = compiles.get((name, 1, "neocompile"))
        if job is None:
            built = build(name, 1)
            log(f"memory test: compiling {models.MODELS[name].title} ({built.onnx.stat().st_size / 1e6:.0f} MB ONNX)")
            job = compile_one(built, name, 1, "neocompile", target, None, reuse, tmp)
            log(_compile_line(job))
        rows.append(job)
    return rows


def arm_part(name: str, variants: dict[str, dict], reuse: bool, runs: int, tmp: Path) -> list[dict[str, Any]]:
    """Compile ``name`` (batch 1) for each ARM target with templates on and off; NEON counts and qemu latency."""
    built = build(name, 1)
    rows = []
    for target in ARM_TARGETS:
        for variant in ("neocompile", "neocompile-tvm-default"):
            if not variants[variant]["available"]:
                rows.append({"model": name, "target": target, "variant": variant, "error": variants[variant]["reason"]})
                continue
            job = compile_one(built, name, 1, variant, target, variants[variant]["options"], reuse, tmp)
            log(_compile_line(job))
            row = {"model": name, "target": target, "variant": variant, "compile": job}
            if job["ok"]:
                row.update(_child("arm", job["artifact"], str(runs), timeout=MEASURE_TIMEOUT_S))
                emu = row.get("emulated", {})
                dis = row.get("disassembly", {})
                log(f"  {target} {variant}: {dis.get('vector', '?')} NEON instructions of {dis.get('instructions', '?')} "
                    f"in {dis.get('kernels', '?')} kernels, emulated {emu.get('median_ms', float('nan')):.1f} ms")
            rows.append(row)
    return rows


def frameworks_part(names: list[str], target: str, reuse: bool, args, tmp: Path) -> list[dict[str, Any]]:
    """Each framework source (bench/frameworks.py) built, compiled from its framework's own file(s) and timed at 1
    thread against that framework and onnxruntime."""
    import hashlib

    key = hashlib.sha256((ROOT / "bench" / "frameworks.py").read_bytes()).hexdigest()[:12]
    rows = []
    for name in names:
        folder = models.WORK / f"frameworks-{key}" / name
        if not (folder / "source.json").is_file():
            log(f"building {frameworks.SOURCES[name]}")
            proc = subprocess.run([sys.executable, "-m", "bench.frameworks", "build", name, str(folder)], cwd=ROOT,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                tail = " | ".join(proc.stderr.strip().splitlines()[-4:])
                log(f"{name}: build FAILED: {tail}")
                rows.append({"source": name, "title": frameworks.SOURCES[name], "error": f"build failed: {tail}"})
                continue
        source = json.loads((folder / "source.json").read_text())
        packages, compiles = {}, {}
        for label, spec in source["packages"].items():
            slug = "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")
            out_dir = PACKAGES / f"{name}-{slug}-{target}"
            request = {"model_uri": str(folder / spec["archive"]), "framework": spec["framework"],
                       "output_location": str(out_dir), "data_input_config": spec["data_input_config"],
                       "target_device": target, "compiler_options": spec.get("compiler_options"),
                       "job_name": f"bench-{name}-{slug}".replace("_", "-")[:63]}
            job = compile_request(request, out_dir, reuse, tmp)
            log(f"{name} {label} -> {target}: " + (f"{job['seconds']:.1f} s, peak {job['peak_tree_rss'] / 2**30:.2f} GiB"
                                                   if job["ok"] else f"FAILED: {job.get('error')}"))
            compiles[label] = {k: job.get(k) for k in ("ok", "seconds", "peak_tree_rss", "error", "reused")}
            if job["ok"]:
                packages[label] = job["artifact"]
                compiles[label]["verification"] = (job.get("verification") or {}).get("status")
        request = {"folder": str(folder), "threads": 1, "packages": packages, "budget_s": args.budget,
                   "warmup": args.warmup}
        result = _child("frameworks", "latency", _request_file(tmp, request), env=thread_env(1),
                        timeout=MEASURE_TIMEOUT_S)
        row = {"source": name, "title": frameworks.SOURCES[name], "threads": 1, "reference": source["reference"],
               "compiles": compiles, "results": result}
        log(report.framework_line(row))
        rows.append(row)
    return rows


# --- main ----------------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="development run: the MLP and MobileNetV2 at batch 1, 1.5 s budgets, the compile-memory "
                        "figures of those two, the ARM part on the MLP")
    p.add_argument("--models", help=f"comma list from {', '.join(models.LATENCY_MODELS)} (default: all; --quick: mlp,mobilenet_v2)")
    p.add_argument("--batches", help="comma list of batch sizes (default 1,8; --quick: 1)")
    p.add_argument("--tune-trials", type=int, default=int(env("BENCH_TUNE_TRIALS", "0")),
                   help="tuning budget of the neocompile-tuned variant in trials (env BENCH_TUNE_TRIALS; 0: not run)")
    p.add_argument("--tune-batches", default="1",
                   help="batch sizes that get a tuned package (default 1: the budget is spent per package)")
    p.add_argument("--budget", type=float, default=float(env("BENCH_BUDGET_S", "0") or 0),
                   help="seconds of timed runs per runtime and measurement (env BENCH_BUDGET_S; default 10, --quick 1.5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs before timing (default 2)")
    p.add_argument("--skip-memory", action="store_true", help="skip the compile-memory test (VGG-19, ResNet-50, the floor) "
                   "(a skipped part keeps the figures of the last run that measured it, marked in carried_over)")
    p.add_argument("--memory-only", action="store_true",
                   help="run only the compile-memory test (VGG-19, ResNet-50, the floor) and merge it into bench/results.json")
    p.add_argument("--skip-arm", action="store_true", help="skip the ARM (NEON, qemu) part")
    p.add_argument("--arm-model", help="model of the ARM part (default mobilenet_v2; --quick: mlp)")
    p.add_argument("--arm-runs", type=int, default=3, help="emulated runs per ARM package (default 3)")
    p.add_argument("--frameworks", default=",".join(frameworks.SOURCES),
                   help=f"framework sources to compile and time (default all: {', '.join(frameworks.SOURCES)}; "
                        "'none' to skip)")
    p.add_argument("--frameworks-only", action="store_true",
                   help="only the framework rows (merged into an existing bench/results.json)")
    p.add_argument("--skip-service", action="store_true",
                   help="skip the job-service part (API latency with 8 clients, worker pick-up; 2-3 min)")
    p.add_argument("--service-only", action="store_true",
                   help="only the job-service part (merged into an existing bench/results.json)")
    p.add_argument("--skip-transform", action="store_true",
                   help="skip the batch-transform part (1,000,000 CSV rows through an XGBoost package vs xgboost; ~1-2 min)")
    p.add_argument("--transform-only", action="store_true",
                   help="only the batch-transform part (merged into an existing bench/results.json)")
    p.add_argument("--skip-rt", action="store_true",
                   help="skip the runtime-binding overhead part (neocompile_rt vs the TVM VM called directly; ~1-2 min)")
    p.add_argument("--rt-only", action="store_true",
                   help="only the runtime-binding overhead part (merged into an existing bench/results.json)")
    p.add_argument("--compile-only", action="store_true",
                   help="compile the packages (tuning included) and stop; a later run with --reuse measures them")
    p.add_argument("--reuse", action="store_true",
                   help="reuse packages (and their compile figures) from an earlier run with the same request")
    p.add_argument("--render", action="store_true",
                   help="measure nothing: redraw the chart and the README section from bench/results.json")
    args = p.parse_args(argv)
    args.tune_batches = [int(b) for b in str(args.tune_batches).split(",") if b.strip()]
    args.models = (args.models.split(",") if args.models else (["mlp", "mobilenet_v2"] if args.quick else models.LATENCY_MODELS))
    unknown = [m for m in args.models if m not in models.MODELS]
    if unknown:
        p.error(f"--models: unknown {unknown}; expected from {', '.join(models.MODELS)}")
    args.batches = [int(b) for b in args.batches.split(",")] if args.batches else ([1] if args.quick else [1, 8])
    args.budget = args.budget or (1.5 if args.quick else 10.0)
    args.arm_model = args.arm_model or ("mlp" if args.quick else "mobilenet_v2")
    if args.arm_model not in models.MODELS:
        p.error(f"--arm-model: unknown '{args.arm_model}'; expected from {', '.join(models.MODELS)}")
    args.memory_models = args.models if args.quick else MEMORY_MODELS
    args.frameworks = [] if args.frameworks.strip() in ("", "none") else args.frameworks.split(",")
    unknown = [f for f in args.frameworks if f not in frameworks.SOURCES]
    if unknown:
        p.error(f"--frameworks: unknown {unknown}; expected from {', '.join(frameworks.SOURCES)} or 'none'")
    return args


def render(results: dict[str, Any]) -> Path | None:
    chart = report.chart(results, ROOT / "bench" / "results.png")
    report.update_readme(results, ROOT / "README.md", chart)
    return chart


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render:
        render(json.loads(RESULTS.read_text()))
        log("redrew bench/results.png and the README section from bench/results.json")
        return
    started = time.time()
    facts = machine_facts()
    target = native_target()
    if args.memory_only:
        memory_only(args, facts, target, started)
        return
    if args.frameworks_only:
        frameworks_only(args, facts, target, started)
        return
    if args.service_only:
        service_only(args, facts, target, started)
        return
    if args.transform_only:
        transform_only(args, facts, target, started)
        return
    if args.rt_only:
        rt_only(args, facts, target, started)
        return
    cores = facts["usable_cores"]
    threads = [1] if cores == 1 else [1, cores]
    variants = variant_options(args.tune_trials)
    # The tuned packages are tuned within the stated budget: their own record cache, emptied when they are compiled
    # anew, so records of an earlier run (or of the user's cache) do not stand in for this run's tuning.
    tuning_cache = models.WORK / "tuning-cache"
    os.environ["NEOCOMPILE_TUNING_CACHE"] = str(tuning_cache)
    if not args.reuse:
        shutil.rmtree(tuning_cache, ignore_errors=True)
    for name, v in variants.items():
        if not v["available"]:
            log(f"variant {name}: {v['reason']}")
    log(f"target {target}; models {', '.join(args.models)}; batches {args.batches}; threads {threads}; "
        f"budget {args.budget:g} s per measurement")
    results: dict[str, Any] = {
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "machine": facts, "target": target,
        "config": {"quick": args.quick, "models": args.models, "batches": args.batches, "threads": threads,
                   "budget_s": args.budget, "warmup": args.warmup, "tune_trials": args.tune_trials,
                   "tune_batches": args.tune_batches,
                   "arm_model": None if args.skip_arm else args.arm_model, "arm_runs": args.arm_runs},
        "variants": variants,
    }
    # A part skipped in this run keeps its results from the last run that measured it (bench/results.json), so a
    # partial run does not erase them; "carried_over" says which, measured when.
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() and not args.quick else {}

    def keep(part: str) -> Any:
        value = previous.get(part)
        if value is not None:
            when = previous.get(f"{part}_measured_at") or previous.get("carried_over", {}).get(part) or previous.get("measured_at")
            results.setdefault("carried_over", {})[part] = when
            if f"{part}_measured_at" in previous:
                results[f"{part}_measured_at"] = previous[f"{part}_measured_at"]
        return value

    with tempfile.TemporaryDirectory(prefix="bench-requests-") as tmp_name:
        tmp = Path(tmp_name)
        compiles: dict[tuple, dict] = {}
        built = {}
        for model in args.models:
            for batch in args.batches:
                built[model, batch] = b = build(model, batch)
                for variant, v in variants.items():
                    # TVM's own schedules are the "before" picture: batch 1 shows it; batch 8 would take an hour.
                    # Tuning costs its budget per package (the batch-8 kernels are other workloads): --tune-batches.
                    if v["available"] and not (variant == "neocompile-tvm-default" and batch > 1) \
                            and not (variant == "neocompile-tuned" and batch not in args.tune_batches):
                        compiles[model, batch, variant] = job = compile_one(b, model, batch, variant, target,
                                                                            v["options"], args.reuse, tmp)
                        log(_compile_line(job))
        results["compiles"] = list(compiles.values())
        if args.compile_only:
            log(f"compiled {len(compiles)} package(s) in {(time.time() - started) / 60:.1f} min; measure them with --reuse")
            return
        latency = []
        for model in args.models:
            for batch in args.batches:
                packages = {variant: job["artifact"] for (m, b, variant), job in compiles.items()
                            if m == model and b == batch and job["ok"]}
                for n in threads:
                    row = measure(built[model, batch], model, batch, n, packages, args, tmp)
                    latency.append(row)
                    log(report.latency_line(row))
        results["latency"] = latency
        results["summary"] = report.summary(latency, threads)
        results["profile"] = profile_slowest(latency, compiles, args, tmp)
        results["memory"] = keep("memory") if args.skip_memory else memory_test(args.memory_models, compiles, target, args.reuse, tmp)
        results["arm"] = keep("arm") if args.skip_arm else arm_part(args.arm_model, variants, args.reuse, args.arm_runs, tmp)
        results["frameworks"] = frameworks_part(args.frameworks, target, args.reuse, args, tmp) if args.frameworks \
            else keep("frameworks")
    results["service"] = keep("service") if args.skip_service else service_part(args)
    results["transform"] = keep("transform") if args.skip_transform else transform_part(args)
    results["runtime_overhead"] = keep("runtime_overhead") if args.skip_rt else rt_part(args)
    results["goals"] = report.goals(results)
    results["bench_seconds"] = round(time.time() - started, 1)
    RESULTS.write_text(json.dumps(results, indent=1, default=str) + "\n")
    chart = render(results)
    for goal in results["goals"]:
        log(f"goal {goal['goal']}: {goal['value']} -> {goal['verdict']}")
    log(f"wrote {RESULTS.relative_to(ROOT)}, the README table" + (f" and {chart.relative_to(ROOT)}" if chart else "")
        + f" in {results['bench_seconds'] / 60:.1f} min")


def service_part(args) -> dict[str, Any]:
    """The job service's latency and pick-up figures (bench/service.py), in this process; a failing store is a row."""
    log("job service: API latency with 8 clients on 1,000 jobs and worker pick-up, SQLite and PostgreSQL")
    section = service.run(quick=args.quick)
    for mode in section["modes"]:
        log("job service " + report.service_line(mode))
    return section


def service_only(args, facts: dict[str, Any], target: str, started: float) -> None:
    """The job-service part alone, merged into the existing results."""
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {
        "machine": facts, "target": target, "config": {}, "variants": {}, "compiles": [], "latency": []}
    results["service"] = service_part(args)
    results["goals"] = report.goals(results)
    RESULTS.write_text(json.dumps(results, indent=1, default=str) + "\n")
    render(results)
    log(f"merged the job-service part into {RESULTS.relative_to(ROOT)} in {(time.time() - started) / 60:.1f} min")


def transform_part(args) -> dict[str, Any]:
    """Batch-transform throughput (bench/transform.py): CSV rows through an XGBoost package vs xgboost itself."""
    rows = 100_000 if args.quick else 1_000_000
    log(f"batch transform: {rows:,} CSV rows x 20 features through an XGBoost package, 1 and all cores, vs xgboost")
    return transform.run(rows=rows)


def transform_only(args, facts: dict[str, Any], target: str, started: float) -> None:
    """The batch-transform part alone, merged into the existing results."""
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {
        "machine": facts, "target": target, "config": {}, "variants": {}, "compiles": [], "latency": []}
    results["transform"] = transform_part(args)
    results["goals"] = report.goals(results)
    RESULTS.write_text(json.dumps(results, indent=1, default=str) + "\n")
    render(results)
    log(f"merged the batch-transform part into {RESULTS.relative_to(ROOT)} in {(time.time() - started) / 60:.1f} min")


def rt_part(args) -> dict[str, Any]:
    """The runtime binding's per-call overhead over the TVM VM called directly (bench/rt_overhead.py)."""
    log("runtime overhead: neocompile_rt.Model.run vs the TVM Relax VM called from Python, SqueezeNet 1.1 and a tiny "
        "model, 1 thread")
    return rt_overhead.run(quick=args.quick)


def rt_only(args, facts: dict[str, Any], target: str, started: float) -> None:
    """The runtime-overhead part alone, merged into the existing results."""
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {
        "machine": facts, "target": target, "config": {}, "variants": {}, "compiles": [], "latency": []}
    results["runtime_overhead"] = rt_part(args)
    results["goals"] = report.goals(results)
    RESULTS.write_text(json.dumps(results, indent=1, default=str) + "\n")
    render(results)
    log(f"merged the runtime-overhead part into {RESULTS.relative_to(ROOT)} in {(time.time() - started) / 60:.1f} min")


def memory_only(args, facts: dict[str, Any], target: str, started: float) -> None:
    """The compile-memory test alone (VGG-19, ResNet-50 and the floor, default options), merged into the existing
    results."""
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {
        "machine": facts, "target": target, "config": {}, "variants": {}, "compiles": [], "latency": []}
    with tempfile.TemporaryDirectory(prefix="bench-requests-") as tmp_name:
        memory = memory_test(MEMORY_MODELS, {}, target, args.reuse, Path(tmp_name))
    results["memory"] = memory
    results["memory_measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    results["goals"] = report.goals(results)
    RESULTS.write_text(json.dumps(results, indent=1, default=str) + "\n")
    render(results)
    for goal in results["goals"]:
        if "memory" in goal["goal"]:
            log(f"goal {goal['goal']}: {goal['value']} -> {goal['verdict']}")
    log(f"merged the compile-memory test into {RESULTS.relative_to(ROOT)} in {(time.time() - started) / 60:.1f} min")


def frameworks_only(args, facts: dict[str, Any], target: str, started: float) -> None:
    """The framework rows alone, merged into the existing results."""
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {
        "machine": facts, "target": target, "config": {}, "variants": {}, "compiles": [], "latency": []}
    with tempfile.TemporaryDirectory(prefix="bench-requests-") as tmp_name:
        rows = frameworks_part(args.frameworks, target, args.reuse, args, Path(tmp_name))
    old = {row["source"]: row for row in results.get("frameworks") or []}
    old.update({row["source"]: row for row in rows})
    results["frameworks"] = [old[name] for name in frameworks.SOURCES if name in old]
    results["frameworks_measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    results["goals"] = report.goals(results)
    RESULTS.write_text(json.dumps(results, indent=1, default=str) + "\n")
    render(results)
    log(f"merged the framework rows into {RESULTS.relative_to(ROOT)} in {(time.time() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
