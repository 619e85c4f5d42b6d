"""`make bench`: compile a ResNet-50-sized ONNX model for this machine's target and time it against onnxruntime.

Writes bench/results.json and the benchmark table in README.md (between the bench markers). Latency is
the median of repeated batch-1 runs, measured for TVM and onnxruntime in the same child process, one
child per thread count (1 and 2), so both sides see the same machine state.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
MIN_RUNS, MAX_RUNS, BUDGET_S = 5, 200, 60.0


def _timed(fn, budget=BUDGET_S):
    fn()  # warm-up
    times, start = [], time.perf_counter()
    while len(times) < MAX_RUNS and (len(times) < MIN_RUNS or time.perf_counter() - start < budget):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3, "runs": len(times)}


def measure(package: str, onnx_path: str, threads: int) -> dict:
    """Runs in a child with TVM_NUM_THREADS/OMP set: both runtimes, same inputs."""
    import numpy as np
    import onnxruntime as ort

    from neocompile.runtime import Model

    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    model = Model(package)
    ort_out = sess.run(None, {"data": x})[0]
    tvm_out = model.run({"data": x})[0]
    return {
        "threads": threads,
        "onnxruntime": _timed(lambda: sess.run(None, {"data": x})),
        "tvm": _timed(lambda: model.run({"data": x})),
        "max_abs_diff": float(np.abs(ort_out - tvm_out).max()),
    }


def main() -> None:
    import onnx
    import onnxruntime
    import tvm

    import neocompile
    from neocompile import modelzoo
    from neocompile.targets import all_targets

    native = sorted((t for t in all_targets().values() if t.host_is_native() and t.accelerator is None),
                    key=lambda t: (-len(t.cpu.get("host_features") or []), t.name))
    target = native[0].name
    work = Path(tempfile.mkdtemp(prefix="neocompile-bench-"))
    model = modelzoo.resnet(depth=50)
    onnx_path = work / "resnet50.onnx"
    onnx.save(model, onnx_path)
    archive = modelzoo.onnx_archive(work / "resnet50.tar.gz", model)
    params = sum(int(np_size(i)) for i in model.graph.initializer)
    print(f"bench: ResNet-50 ({params / 1e6:.1f} M params, random weights) -> {target}", flush=True)
    # The compile runs as the real command in a child, so its wall time and peak memory are the job's own
    # (RUSAGE_CHILDREN's maxrss: the largest reaped descendant; it is the first child this script starts).
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "compile-model"), "--framework", "ONNX", "--model-uri", str(archive),
         "--data-input-config", '{"data":[1,3,224,224]}', "--target-device", target, "--output-location",
         str(work / "out"), "--job-name", "bench-resnet50", "--json", "--quiet"],
        stdout=subprocess.PIPE, text=True)
    compile_total = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"bench: compile-model failed with status {proc.returncode}")
    compile_peak_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux reports kilobytes
    result = json.loads(proc.stdout)
    package = Path(result["S3ModelArtifacts"])
    rows = []
    for threads in (1, 2):
        env = dict(os.environ, TVM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
        code = f"import json,sys; sys.path.insert(0,{str(ROOT)!r}); from bench.bench import measure; print(json.dumps(measure({str(package)!r},{str(onnx_path)!r},{threads})))"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"bench: {threads} thread(s): tvm {row['tvm']['median_ms']:.1f} ms, onnxruntime {row['onnxruntime']['median_ms']:.2f} ms", flush=True)
        rows.append(row)
    results = {
        "model": "ResNet-50 v1 (ONNX opset 17, random weights, batch 1, 3x224x224)",
        "params_millions": round(params / 1e6, 2),
        "target": target,
        "host_cpu": tvm.get_global_func("target.llvm_get_system_cpu")(),
        "machine": f"{platform.machine()}, {os.cpu_count()} vCPU",
        "versions": {"tvm": tvm.__version__, "onnxruntime": onnxruntime.__version__, "neocompile": neocompile.__version__},
        "compile_seconds_total": round(compile_total, 2),
        "compile_peak_rss_bytes": compile_peak_rss,
        "stage_seconds": result["Timings"],
        "package_bytes": package.stat().st_size,
        "onnx_bytes": onnx_path.stat().st_size,
        "verification": {k: result["Verification"].get(k) for k in ("status", "mode")},
        "latency": rows,
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    _update_readme(results)
    print(f"bench: wrote {RESULTS.relative_to(ROOT)} and the README table")


def np_size(init) -> int:
    n = 1
    for d in init.dims:
        n *= d
    return n


def _update_readme(r: dict) -> None:
    lines = [
        START,
        f"Measured {r['measured_at']} on {r['machine']} (LLVM host CPU `{r['host_cpu']}`), TVM {r['versions']['tvm']}, "
        f"onnxruntime {r['versions']['onnxruntime']}; {r['model']}, compiled for `{r['target']}` with no tuning.",
        "",
        "| what | neocompile (TVM) | onnxruntime | ratio TVM / ORT |",
        "|---|---|---|---|",
    ]
    for row in r["latency"]:
        t, o = row["tvm"]["median_ms"], row["onnxruntime"]["median_ms"]
        lines.append(f"| latency, batch 1, {row['threads']} thread(s), median | {t:.1f} ms ({row['tvm']['runs']} runs) | "
                     f"{o:.2f} ms ({row['onnxruntime']['runs']} runs) | {t / o:.1f}x |")
    lines += [
        f"| compile time (whole job: fetch..upload) | {r['compile_seconds_total']:.1f} s (TVM compile stage {r['stage_seconds']['compile']:.1f} s) | - | - |",
        f"| compile peak memory (RSS of the compile-model process) | {r['compile_peak_rss_bytes'] / 2**30:.2f} GiB | - | - |",
        f"| size | package {r['package_bytes'] / 1e6:.1f} MB (model + runtime + runner) | ONNX file {r['onnx_bytes'] / 1e6:.1f} MB | - |",
        END,
    ]
    text = README.read_text()
    if START in text and END in text:
        text = text[: text.index(START)] + "\n".join(lines) + text[text.index(END) + len(END):]
    else:
        text += "\n" + "\n".join(lines) + "\n"
    README.write_text(text)


if __name__ == "__main__":
    main()
