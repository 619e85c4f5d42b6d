"""Latency and per-operator profiles, each measured in a child process started for one thread count.

``python -m bench.measure latency|profile REQUEST.json RESULT.json``. The parent sets TVM_NUM_THREADS /
OMP_NUM_THREADS / MKL_NUM_THREADS before this process starts, so every runtime's thread pool is sized from the start;
on top of that onnxruntime gets ``intra_op_num_threads`` (inter-op 1), torch ``set_num_threads`` (inter-op 1) and
neocompile ``Model(..., num_threads=N)`` where this version of the runtime has it.

Every runtime gets the same seeded input. Runs are timed in interleaved rounds (each runtime in turn, a slice of its
budget per round) so that a change in the machine's load during the measurement hits all of them alike; the result
is the median over all timed runs, after warm-up runs that are not counted (and one more untimed run at the start of
each slice, since the previous runtime's worker threads may still be spinning). A runtime whose single run takes longer
than a slice gets no extra warm-up and one timed run per round.
"""
from __future__ import annotations

import functools
import inspect
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROUNDS = 3
MIN_RUNS = 3  # per runtime, whatever the budget
MAX_RUNS = 1000


def _open_model(path: str, threads: int):
    from neocompile.runtime import Model

    if "num_threads" in inspect.signature(Model.__init__).parameters:
        return Model(path, num_threads=threads), "Model(num_threads)"
    return Model(path), "TVM_NUM_THREADS"


def _run_package(model, inputs):
    return model.run(inputs)[0]


def _runners(req: dict[str, Any]) -> tuple[dict[str, Callable[[], Any]], dict[str, str], dict[str, str]]:
    """name -> a call that runs the model once on the input; and how each got its thread count."""
    from bench import models

    threads = req["threads"]
    x = models.sample_input(req["input_shape"])
    runners: dict[str, Callable[[], Any]] = {}
    how: dict[str, str] = {}
    errors: dict[str, str] = {}

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(req["onnx"], opts, providers=["CPUExecutionProvider"])
    runners["onnxruntime"] = lambda: sess.run(None, {req["input_name"]: x})[0]
    how["onnxruntime"] = "intra_op_num_threads"

    for variant, package in req["packages"].items():
        try:
            model, how[variant] = _open_model(package, threads)
        except Exception as exc:  # reported per variant; the others still run
            errors[variant] = f"{type(exc).__name__}: {exc}"
            continue
        runners[variant] = functools.partial(_run_package, model, {req["input_name"]: x})

    if req.get("torch", True):
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set in this process
            pass
        net = models.torch_model(req["model"])
        tx = torch.from_numpy(x)

        def run_torch():
            with torch.inference_mode():
                return net(tx).numpy()

        runners["torch"] = run_torch
        how["torch"] = "torch.set_num_threads"
    return runners, how, errors


def latency(req: dict[str, Any]) -> dict[str, Any]:
    """Median latency of onnxruntime, each neocompile package and torch on one input, and their max |diff| vs ORT."""
    runners, how, errors = _runners(req)
    return timed(runners, how, errors, req["budget_s"], req["warmup"], "onnxruntime")


def timed(runners: dict[str, Callable[[], Any]], how: dict[str, str], errors: dict[str, str], budget: float,
          warmup: int, reference_name: str) -> dict[str, Any]:
    """Time ``runners`` in interleaved rounds (module docstring); each result's max |diff| is against the output of
    ``reference_name`` (whose name the result keys carry: ``max_abs_diff_vs_<reference>``)."""
    import numpy as np

    reference = np.asarray(runners[reference_name]())
    key = "max_abs_diff_vs_ort" if reference_name == "onnxruntime" else f"max_abs_diff_vs_{reference_name}"
    out: dict[str, Any] = {name: {"error": msg} for name, msg in errors.items()}
    times: dict[str, list[float]] = {}
    slow: set[str] = set()  # one run takes longer than a round's slice: no extra warm-up, one timed run a round
    for name, fn in runners.items():
        try:
            t0 = time.perf_counter()
            got = np.asarray(fn())
            if time.perf_counter() - t0 > budget / ROUNDS:
                slow.add(name)
            for _ in range(0 if name in slow else max(warmup - 1, 0)):
                fn()
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        times[name] = []
        out[name] = {"threads_via": how[name], key: float(np.abs(got.astype(np.float64) - reference).max()),
                     "output_scale": float(np.abs(reference).max())}
    load = os.getloadavg()
    for _ in range(ROUNDS):
        for name in times:
            fn = runners[name]
            if name not in slow:
                fn()  # untimed: the previous runtime's threads may still be spinning
            start = time.perf_counter()
            while True:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
                if len(times[name]) >= MAX_RUNS or time.perf_counter() - start >= budget / ROUNDS:
                    break
    for name, ts in times.items():
        while len(ts) < MIN_RUNS:
            t0 = time.perf_counter()
            runners[name]()
            ts.append(time.perf_counter() - t0)
        out[name].update(median_ms=statistics.median(ts) * 1e3, min_ms=min(ts) * 1e3, runs=len(ts))
    # Other processes on the machine are the main source of noise: the 1-minute load before and after.
    out["load_average"] = [round(load[0], 2), round(os.getloadavg()[0], 2)]
    return out


def profile(req: dict[str, Any]) -> dict[str, Any]:
    """Per-kernel time of one package: every call the Relax VM makes is timed through its instrument hook
    (TVM 0.27 has no VM profiler), summed per kernel over ``runs`` runs after a warm-up, top ``top`` kernels."""
    import numpy as np
    import tvm
    from tvm import relax

    from bench import models
    from neocompile import params

    model, _ = _open_model(req["package"], req["threads"])
    lib = tvm.runtime.load_module(str(Path(model.path) / "compiled.so"))
    dev = tvm.cpu()
    vm = relax.VirtualMachine(lib, dev)
    x = tvm.runtime.tensor(np.ascontiguousarray(models.sample_input(req["input_shape"])), dev)
    weights = params.load(Path(model.path) / "compiled.so", model.meta["Model"].get("Weights"))  # after the input
    vm["main"](x, *weights)  # warm-up, uninstrumented

    totals: dict[str, list[float]] = {}
    started: list[tuple[str, float]] = []

    def instrument(func, symbol, before, ret, *args):
        now = time.perf_counter()
        if before:
            started.append((str(symbol), now))
        else:
            name, t0 = started.pop()
            entry = totals.setdefault(name, [0.0, 0])
            entry[0] += now - t0
            entry[1] += 1
        return 0  # VMInstrumentReturnKind.NO_OP

    vm.set_instrument(instrument)
    runs, t0 = req["runs"], time.perf_counter()
    for _ in range(runs):
        vm["main"](x, *weights)
    wall = (time.perf_counter() - t0) / runs
    covered = sum(v[0] for v in totals.values()) / runs
    rows = sorted(({"kernel": k, "ms": v[0] / runs * 1e3, "calls": v[1] // runs} for k, v in totals.items()),
                  key=lambda r: -r["ms"])
    for r in rows:
        r["share"] = r["ms"] / (wall * 1e3)
    return {"runs": runs, "wall_ms": wall * 1e3, "kernel_ms": covered * 1e3, "kernels": len(rows),
            "top": rows[: req.get("top", 10)]}


if __name__ == "__main__":
    kind, request, result = sys.argv[1:4]
    args = json.loads(Path(request).read_text())
    Path(result).write_text(json.dumps({"latency": latency, "profile": profile}[kind](args), indent=1))
