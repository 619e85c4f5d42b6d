"""The benchmark's runtime-overhead section: what the package's Python binding (python/neocompile_rt.py over
lib/libneocompile_rt.so) costs per call on top of calling the TVM Relax VM directly from Python.

Models (plain torch, seeded random weights, exported to ONNX opset 17 in a child process, packed as Neo's
``model.tar.gz`` and cached under ``bench/work/rt-overhead/``): SqueezeNet 1.1 (fire modules written here, no
torchvision; input [1, 3, 224, 224]) and a tiny model (one 16x16 dense layer and a ReLU on [1, 16], whose own cost is
about a microsecond, so the difference is the fixed per-call overhead). Each is compiled for this machine's best
native target (the first of ``neocompile targets --native``) through ``neocompile.compile_model`` in a child
(bench/compile_job.py), cached by a digest of neocompile's sources (the C runtime's included), and extracted.

Measured in ONE child process per model with TVM_NUM_THREADS = NEOCOMPILE_NUM_THREADS = 1 set before tvm is imported
(tvm is imported before the binding loads the package's library: the C API then binds to the same TVM runtime),
interleaved in rounds to cancel drift (the order of the variants rotates from round to round); a round times
``calls`` back-to-back calls of each variant and takes their mean (SqueezeNet: one call each, many rounds, so that
the variants alternate call by call); the medians over rounds are reported:

- ``direct``: ``tvm.runtime.load_module(compiled.so)``, ``relax.VirtualMachine(lib, tvm.cpu())``, the weights from
  ``neocompile.params.load``, the input converted to a tvm tensor once; a call is ``vm["main"](x, *weights)`` (the
  function fetched once) and ``.numpy()`` of its output: what a Python user of TVM does.
- ``binding``: ``neocompile_rt.Model(package, num_threads=1).run(x)`` with a numpy array (returns numpy arrays)
  whose data is 64-byte aligned, which the C runtime borrows.
- ``binding_copied``: the same with an input array that is not 64-byte aligned (a view one element into a larger
  one), which the C runtime copies. numpy's own arrays are one or the other by chance (``check`` says which).
- ``c_api``: the package's ``bin/neo_run --threads 1 --repeat N --warmup M`` (nrt_run alone, the input set once, no
  output copy), started from the child in NEO_RUN_ROUNDS of the rounds; its median there.

Overhead = binding - direct (us, and % of direct), also as the median of the per-round differences (paired, so load
that hits a whole round cancels). Goals (M8 item 4): under 2% on the SqueezeNet-sized model and under 20 us
absolute; judged on the paired figure of the worse binding variant, the % goal on SqueezeNet, the us goal on the tiny
model (on a shared machine a single SqueezeNet call varies by milliseconds). ``breakdown`` times the pieces of the
binding's ``run()`` (argument checks, nrt_set_input, nrt_run, output shape + copy) through its ctypes functions, and
the direct call's two (the VM call, ``.numpy()``).

``python bench/rt_overhead.py [--quick] [--models squeezenet1_1,tiny] [--json OUT]`` runs it alone and prints the
table; bench.py calls :func:`run` and :func:`render`.
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WORK = ROOT / "bench" / "work" / "rt-overhead"
OPSET = 17
GOAL_PCT = 2.0  # of direct, on the SqueezeNet-sized model
GOAL_US = 20.0  # absolute, per call
ALIGN = 64  # the C runtime borrows inputs aligned to this many bytes (kAlign)
VARIANTS = ("direct", "binding", "binding_copied")
NEO_RUN_ROUNDS = 7  # neo_run (a process start and a package load each) runs in this many of the rounds
#: name -> (title, input shape, rounds, seconds per variant and round: a call when a call takes longer)
MODELS = {
    "squeezenet1_1": ("SqueezeNet 1.1", [1, 3, 224, 224], 81, 0.0),
    "tiny": ("tiny: 16x16 dense + ReLU", [1, 16], 61, 0.02),
}


def log(text: str) -> None:
    print(f"bench: rt-overhead: {text}", flush=True)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- the models ------------------------------------------------------------------------------------------------------

def squeezenet1_1():
    """SqueezeNet 1.1 as torchvision defines it (1000 classes, 224x224 input), written in plain torch."""
    import torch

    nn = torch.nn

    class Fire(nn.Module):
        def __init__(self, cin: int, squeeze: int, e1: int, e3: int):
            super().__init__()
            self.squeeze = nn.Conv2d(cin, squeeze, 1)
            self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
            self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)

        def forward(self, x):
            x = torch.relu(self.squeeze(x))
            return torch.cat([torch.relu(self.expand1x1(x)), torch.relu(self.expand3x3(x))], 1)

    class SqueezeNet(nn.Module):
        def __init__(self):
            super().__init__()
            def pool():
                return nn.MaxPool2d(3, 2, ceil_mode=True)

            self.features = nn.Sequential(
                nn.Conv2d(3, 64, 3, 2), nn.ReLU(), pool(), Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), pool(),
                Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), pool(), Fire(256, 48, 192, 192),
                Fire(384, 48, 192, 192), Fire(384, 64, 256, 256), Fire(512, 64, 256, 256))
            self.classifier = nn.Sequential(nn.Conv2d(512, 1000, 1), nn.ReLU(), nn.AdaptiveAvgPool2d((1, 1)))

        def forward(self, x):
            return torch.flatten(self.classifier(self.features(x)), 1)

    return SqueezeNet()


def tiny():
    """One 16x16 dense layer and a ReLU: the model costs about a microsecond."""
    import torch

    return torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU())


BUILDERS = {"squeezenet1_1": squeezenet1_1, "tiny": tiny}


def _model_key() -> str:
    from importlib.metadata import version

    text = "".join(inspect.getsource(f) for f in BUILDERS.values()) + version("torch") + str(OPSET)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _export_main(name: str, onnx_path: str) -> None:
    """In a child (torch stays out of the measuring processes): export ``name`` to ONNX."""
    import warnings

    import torch

    torch.manual_seed(0)
    net = BUILDERS[name]().eval()
    tmp = Path(onnx_path + ".tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(MODELS[name][1]),), str(tmp), input_names=["data"],
                          output_names=["output"], opset_version=OPSET, dynamo=False, do_constant_folding=True)
    tmp.replace(onnx_path)


def build_archive(name: str) -> Path:
    """The model's ``model.tar.gz`` (cached under bench/work/rt-overhead/models-<key>/)."""
    from bench import models

    folder = WORK / f"models-{_model_key()}"
    onnx_path, archive = folder / f"{name}.onnx", folder / f"{name}.tar.gz"
    if not archive.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        log(f"exporting {MODELS[name][0]} to ONNX opset {OPSET}")
        subprocess.run([sys.executable, "-m", "bench.rt_overhead", "--export", name, str(onnx_path)], cwd=ROOT,
                       check=True, stdout=subprocess.DEVNULL)
        models._pack(onnx_path, archive)
    return archive


# --- compiling -------------------------------------------------------------------------------------------------------

def native_target() -> str:
    """The best native target, as ``neocompile targets --native`` orders them."""
    from neocompile.targets import all_targets

    native = sorted((t for t in all_targets().values() if t.host_is_native() and t.accelerator is None),
                    key=lambda t: (-len(t.cpu.get("host_features") or []), t.name))
    if not native:
        raise RuntimeError("no registry device runs natively on this CPU (`neocompile targets --native` is empty)")
    return native[0].name


def _compiler_digest() -> str:
    """neocompile's sources outside the job service, the C runtime's and the binding's included."""
    import neocompile

    source = Path(neocompile.__file__).parent
    h = hashlib.sha256()
    for f in sorted(p for ext in ("*.py", "*.cc", "*.h") for p in source.rglob(ext)):
        if "service" not in f.relative_to(source).parts:
            h.update(str(f.relative_to(source)).encode() + f.read_bytes())
    return h.hexdigest()[:12]


def _packages_dir() -> Path:
    """Where this run's packages go (the models' and the compiler's digests, taken once per run); older ones go."""
    keep = WORK / f"packages-{_model_key()}-{_compiler_digest()}"
    for old in (*WORK.glob("packages-*"), *WORK.glob("models-*")):
        if old != keep and old.name != f"models-{_model_key()}":
            shutil.rmtree(old, ignore_errors=True)
    return keep


def compile_package(name: str, archive: Path, target: str, packages: Path) -> dict[str, Any]:
    """Compile in a child (bench/compile_job.py) and extract; cached. Returns the package folder and compile facts."""
    out_dir = packages / f"{name}-{target}"
    facts_path = out_dir / "bench-compile.json"
    folder = out_dir / "package"
    if facts_path.is_file() and (folder / "compiled.meta").is_file():
        facts = json.loads(facts_path.read_text())
        if facts.get("ok"):
            return {**facts, "package": str(folder), "reused": True}
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    request = {"model_uri": str(archive), "framework": "ONNX", "output_location": str(out_dir),
               "data_input_config": {"data": MODELS[name][1]}, "target_device": target,
               "job_name": f"bench-rt-{name}".replace("_", "-")}
    log(f"compiling {MODELS[name][0]} for {target}")
    with tempfile.TemporaryDirectory(prefix="bench-rt-") as tmp:
        req, res = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps(request))
        proc = subprocess.run([sys.executable, "-m", "bench.compile_job", str(req), str(res)], cwd=ROOT,
                              capture_output=True, text=True, timeout=3600, check=False)
        if proc.returncode != 0 or not res.is_file():
            raise RuntimeError(f"compiling {name} failed: {(proc.stderr or proc.stdout)[-2000:]}")
        result = json.loads(res.read_text())
    if not result.get("ok"):
        raise RuntimeError(f"compiling {name} failed: {result.get('error')}")
    folder.mkdir()
    with tarfile.open(result["artifact"]) as tar:
        tar.extractall(folder, filter="data")
    facts = {"ok": True, "artifact": result["artifact"], "seconds": result["seconds"], "target": target,
             "verification": (result.get("verification") or {}).get("status")}
    facts_path.write_text(json.dumps(facts, indent=1))
    log(f"compiled {MODELS[name][0]} in {result['seconds']:.1f} s (verification {facts['verification']})")
    return {**facts, "package": str(folder), "reused": False}


# --- measuring (in the child) ----------------------------------------------------------------------------------------

def _aligned(x):
    """A copy of ``x`` whose data starts on an ALIGN-byte boundary."""
    import numpy as np

    raw = np.empty(x.nbytes + ALIGN, np.uint8)
    offset = (-raw.ctypes.data) % ALIGN
    out = raw[offset:offset + x.nbytes].view(x.dtype).reshape(x.shape)
    out[...] = x
    return out


def _unaligned(x):
    """A C-contiguous copy of ``x`` whose data starts one element past an ALIGN-byte boundary."""
    import numpy as np

    raw = np.empty(x.nbytes + 2 * ALIGN, np.uint8)
    offset = (-raw.ctypes.data) % ALIGN + x.itemsize
    out = raw[offset:offset + x.nbytes].view(x.dtype).reshape(x.shape)
    out[...] = x
    return out


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _per_call_us(fn, calls: int) -> float:
    clock = time.perf_counter
    t0 = clock()
    for _ in range(calls):
        fn()
    return (clock() - t0) / calls * 1e6


def _neo_run(folder: Path, calls: int) -> float:
    """nrt_run's median in us by the package's bin/neo_run (a process of its own, 1 thread)."""
    warmup = max(1, min(calls // 10, 50))
    proc = subprocess.run([str(folder / "bin" / "neo_run"), "--threads", "1", "--repeat", str(calls), "--warmup",
                           str(warmup), str(folder)], capture_output=True, text=True, timeout=600,
                          check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("neo_run:") and "median" in line:
            return float(line.split("median", 1)[1].split("ms", 1)[0]) * 1e3
    raise RuntimeError(f"neo_run printed no timing (status {proc.returncode}): {proc.stderr[-500:]}")


def _measure_main(request_path: str, result_path: str) -> None:
    """In a child started with TVM_NUM_THREADS=1: time the variants of one package in interleaved rounds."""
    request = json.loads(Path(request_path).read_text())
    load_before = _load()
    import numpy as np
    import tvm  # before the binding loads lib/libneocompile_rt.so: one TVM runtime in the process
    from tvm import relax

    from neocompile import params
    from neocompile.device.python import neocompile_rt

    folder = Path(request["package"])
    meta = json.loads((folder / "compiled.meta").read_text())
    spec = meta["Model"]["Inputs"][0]
    x = np.random.default_rng(0).standard_normal(spec["shape"]).astype(spec["dtype"])
    x_aligned, x_copied = _aligned(x), _unaligned(x)

    lib = tvm.runtime.load_module(str(folder / "compiled.so"))
    vm = relax.VirtualMachine(lib, tvm.cpu())
    args = (tvm.runtime.tensor(x), *params.load(folder / "compiled.so", meta["Model"].get("Weights")))
    main = vm["main"]

    model = neocompile_rt.Model(str(folder), num_threads=1)
    run = model.run
    fns = {"direct": lambda: main(*args).numpy(), "binding": lambda: run(x_aligned),
           "binding_copied": lambda: run(x_copied)}

    ref = fns["direct"]()
    outs = {"binding": run(x_aligned)[0]}
    check: dict[str, Any] = {"binding_input_borrowed": model._borrowed(spec["name"])}
    outs["binding_copied"] = run(x_copied)[0]
    check["copied_input_borrowed"] = model._borrowed(spec["name"])
    check.update({k: float(np.abs(v - ref).max()) for k, v in outs.items()})
    check["output_shape"] = list(ref.shape)
    check["numpy_input_aligned"] = x.ctypes.data % ALIGN == 0  # numpy's own array: borrowed only if so

    # Calls per round: about budget_s per variant.
    for fn in fns.values():  # warm-up
        for _ in range(3):
            fn()
    t = _per_call_us(fns["direct"], 5) * 1e-6
    calls = max(1, min(20000, int(request["budget_s"] / max(t, 1e-7))))
    rounds = request["rounds"]
    per: dict[str, list[float]] = {k: [] for k in (*VARIANTS, "c_api")}
    names = list(fns)
    every = max(1, rounds // NEO_RUN_ROUNDS)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            per[name].append(_per_call_us(fns[name], calls))
        if request.get("neo_run", True) and r % every == 0 and len(per["c_api"]) < NEO_RUN_ROUNDS:
            per["c_api"].append(_neo_run(folder, max(calls, 10)))

    # The binding's run() in pieces, through its own ctypes functions (private attributes: a bench-only look).
    breakdown: dict[str, Any] = {}
    try:
        handle, ins, o = model._handle, model._inputs[0], model._outputs[0]
        set_input, nrt_run = model._set_input, model._run
        output_shape, get_output = model._output_shape, model._get_output
        addr = neocompile_rt._address
        n = max(10, calls)

        def piece_set(arr):
            return lambda: set_input(handle, ins.index, addr(arr), ins.dtype_bytes, ins.ndim, ins.c_shape)

        def piece_out():
            o.c_ndim.value = 64
            output_shape(handle, o.index, o.c_ndim, o.c_shape)
            out = np.empty(o.c_shape[:o.c_ndim.value], o.dtype)
            get_output(handle, o.index, addr(out), out.nbytes)

        pieces = {"check_inputs (_order)": lambda: model._order(x_aligned),
                  "nrt_set_input (copy)": piece_set(x_copied), "nrt_set_input (borrow)": piece_set(x_aligned),
                  "nrt_run": lambda: nrt_run(handle),
                  "output shape + np.empty + nrt_get_output": piece_out,
                  "direct: vm['main'](x, *weights)": lambda: main(*args)}
        result_tensor = main(*args)
        pieces["direct: .numpy()"] = result_tensor.numpy
        reps = {k: [] for k in pieces}
        for _ in range(3):
            for k, fn in pieces.items():
                reps[k].append(_per_call_us(fn, n))
        breakdown = {k: round(_median(v), 3) for k, v in reps.items()}
    except Exception as exc:  # noqa: BLE001 - the breakdown is optional
        breakdown = {"error": f"{type(exc).__name__}: {exc}"}

    med = {k: round(_median(v), 3) for k, v in per.items() if v}
    best = {k: round(min(v), 3) for k, v in per.items() if v}
    diffs = [b - d for b, d in zip(per["binding"], per["direct"])]
    diffs_copied = [b - d for b, d in zip(per["binding_copied"], per["direct"])]
    result = {
        "calls_per_round": calls, "rounds": rounds, "median_us": med, "min_us": best,
        "rounds_us": {k: [round(v, 3) for v in vs] for k, vs in per.items() if vs},
        "overhead_us": round(med["binding"] - med["direct"], 3),
        "overhead_pct": round((med["binding"] - med["direct"]) / med["direct"] * 100, 3),
        "paired_overhead_us": round(_median(diffs), 3),
        "paired_overhead_spread_us": [round(min(diffs), 3), round(max(diffs), 3)],
        "copied_overhead_us": round(med["binding_copied"] - med["direct"], 3),
        "binding_over_c_api_us": round(med["binding"] - med["c_api"], 3) if "c_api" in med else None,
        "paired_copied_overhead_us": round(_median(diffs_copied), 3),
        "paired_overhead_pct": round(_median([b / d - 1 for b, d in zip(per["binding"], per["direct"])]) * 100, 3),
        "paired_copied_overhead_pct": round(
            _median([b / d - 1 for b, d in zip(per["binding_copied"], per["direct"])]) * 100, 3),
        "check": check, "breakdown": breakdown, "runtime_version": model.version,
        "load_average_before": load_before, "load_average_after": _load(),
    }
    model.close()
    Path(result_path).write_text(json.dumps(result, indent=1))


def measure(name: str, package: str, budget_s: float, rounds: int) -> dict[str, Any]:
    env = dict(os.environ, TVM_NUM_THREADS="1", NEOCOMPILE_NUM_THREADS="1", OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory(prefix="bench-rt-") as tmp:
        req, res = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps({"package": package, "budget_s": budget_s, "rounds": rounds}))
        proc = subprocess.run([sys.executable, "-m", "bench.rt_overhead", "--measure", str(req), str(res)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False)
        if proc.returncode != 0 or not res.is_file():
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
            return {"error": f"the measuring child exited with status {proc.returncode}: {tail}"}
        return json.loads(res.read_text())


# --- the section -----------------------------------------------------------------------------------------------------

def verdicts(name: str, row: dict[str, Any]) -> dict[str, bool]:
    """The goals, judged on the paired estimates (the median of the per-round differences: drift cancels) of the
    worse binding variant: the % goal on the SqueezeNet-sized model, the us goal on the tiny one (where the model
    itself costs about a microsecond; a single SqueezeNet call varies by milliseconds on a shared machine)."""
    if name == "squeezenet1_1":
        return {"under_2pct": max(row["paired_overhead_pct"], row["paired_copied_overhead_pct"]) < GOAL_PCT}
    return {"under_20us": max(row["paired_overhead_us"], row["paired_copied_overhead_us"]) < GOAL_US}


def run(quick: bool = False, models: list[str] | None = None) -> dict[str, Any]:
    """Build, compile and measure each model; a JSON-able dict (see the module's docstring)."""
    import numpy as np

    started = time.time()
    target = native_target()
    section: dict[str, Any] = {
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)), "target": target,
        "goal_pct": GOAL_PCT, "goal_us": GOAL_US, "threads": 1, "numpy": np.__version__,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(), "models": []}
    packages = None
    for name in models or list(MODELS):
        title, shape, rounds, budget = MODELS[name]
        if quick:
            rounds, budget = max(5, rounds // 3), budget / 2
        row: dict[str, Any] = {"model": name, "title": title, "input_shape": shape}
        try:
            packages = packages or _packages_dir()
            pkg = compile_package(name, build_archive(name), target, packages)
            row["compile"] = {k: pkg[k] for k in ("seconds", "verification", "reused")}
            row.update(measure(name, pkg["package"], budget, rounds))
        except Exception as exc:  # noqa: BLE001 - a failure is a row
            row["error"] = f"{type(exc).__name__}: {exc}"
        if "error" not in row:
            row["goals"] = verdicts(name, row)
        log(line(row))
        section["models"].append(row)
    section["seconds"] = round(time.time() - started, 1)
    return section


def _us(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if abs(v) < 100 else f"{v:,.0f}"


def line(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"{row['model']}: ERROR {row['error']}"
    m = row["median_us"]
    return (f"{row['model']}: direct {_us(m['direct'])} us, binding {_us(m['binding'])} us (input copied "
            f"{_us(m['binding_copied'])} us), neo_run {_us(m.get('c_api'))} us; overhead paired "
            f"{row['paired_overhead_us']:+.2f} us ({row['paired_overhead_pct']:+.2f}%), input copied "
            f"{row['paired_copied_overhead_us']:+.2f} us ({row['paired_copied_overhead_pct']:+.2f}%); medians' "
            f"difference {row['overhead_us']:+.2f} us; goals {row['goals']}")


def render(result: dict[str, Any]) -> str:
    """The section as markdown: one row per model, where the time goes, how it was measured."""
    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("met" if ok else "not met")

    lines = [
        (f"Runtime binding overhead (bench/rt_overhead.py; measured {result['measured_at']}, packages for "
         f"`{result['target']}`, 1 thread): the package's Python binding `neocompile_rt.Model(...).run(x)` "
         "(python/neocompile_rt.py over lib/libneocompile_rt.so) against calling the TVM Relax VM directly from "
         f"Python. Goal: overhead < {result['goal_pct']:g}% on a SqueezeNet-sized model and < {result['goal_us']:g} us "
         "a call (judged on the tiny model, whose own run costs about a microsecond). Median us per call; overhead = "
         "binding - direct, paired round by round (binding with a 64-byte aligned input, which the C runtime "
         "borrows / with an input it copies); a negative overhead: the binding is faster."),
        "",
        ("| model | TVM VM direct | binding | binding, input copied | C API alone (neo_run) | overhead us "
         f"| overhead % | < {result['goal_pct']:g}% | < {result['goal_us']:g} us | max \\|diff\\| | load |"),
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---|",
    ]
    for row in result["models"]:
        if "error" in row:
            lines.append(f"| {row['title']} | failed: {str(row['error'])[:200]} | | | | | | | | | |")
            continue
        m, g = row["median_us"], row["goals"]
        diff = max(row["check"]["binding"], row["check"]["binding_copied"])
        lines.append(
            f"| {row['title']} {row['input_shape']} | {_us(m['direct'])} | {_us(m['binding'])} | "
            f"{_us(m['binding_copied'])} | {_us(m.get('c_api'))} | {row['paired_overhead_us']:+.2f} / "
            f"{row['paired_copied_overhead_us']:+.2f} | {row['paired_overhead_pct']:+.2f}% / "
            f"{row['paired_copied_overhead_pct']:+.2f}% | {verdict(g.get('under_2pct'))} | "
            f"{verdict(g.get('under_20us'))} | {diff:.1e} | "
            f"{row['load_average_before'][0]:.1f}/{row['load_average_after'][0]:.1f} |")
    pieces = [r for r in result["models"] if "error" not in r and "error" not in (r.get("breakdown") or {"error": 1})]
    if pieces:
        keys = list(pieces[0]["breakdown"])
        lines += ["", ("Where the time goes (us per call, each piece alone in a loop): the binding's `run()` through "
                       "its own ctypes functions, and the direct call's two halves:"), "",
                  "| model | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
        for r in pieces:
            lines.append(f"| {r['title']} | " + " | ".join(_us(r["breakdown"].get(k)) for k in keys) + " |")
    rows = [r for r in result["models"] if "error" not in r]
    calls = ", ".join(f"{r['title'].split(':')[0]}: {r['rounds']} rounds of {r['calls_per_round']:,} call(s)"
                      for r in rows)
    numpy_aligned = ", ".join(f"{r['title'].split(':')[0]} {'aligned' if r['check']['numpy_input_aligned'] else 'not'}"
                              for r in rows)
    best = "; ".join(f"{r['title'].split(':')[0]} direct {_us(r['min_us']['direct'])}, binding "
                     f"{_us(r['min_us']['binding'])}, input copied {_us(r['min_us']['binding_copied'])}"
                     for r in rows)
    loads = [x for r in rows for x in (r["load_average_before"][0], r["load_average_after"][0])]
    above = "; ".join(f"{r['title'].split(':')[0]} {r['binding_over_c_api_us']:+,.2f} us" for r in rows
                      if r.get("binding_over_c_api_us") is not None and r["model"] != "squeezenet1_1") or "-"
    lines += [
        "",
        ("How measured: each model (plain torch, seeded random weights; SqueezeNet 1.1's fire modules written in "
         "bench/rt_overhead.py, the tiny model one 16x16 dense layer and a ReLU) is exported to ONNX opset 17, packed "
         "as model.tar.gz, compiled with `neocompile.compile_model` for the native target and extracted. One child "
         "process per model, started with TVM_NUM_THREADS = NEOCOMPILE_NUM_THREADS = 1, imports tvm before the "
         "binding loads the package's library (one TVM runtime in the process) and times the variants interleaved in "
         "rounds, the order rotating from round to round, each round timing back-to-back calls of each variant and "
         f"taking their mean ({calls}); the table gives the medians over rounds, and the paired overhead the median "
         "of the per-round differences (binding - direct in the same round; % = the median per-round ratio - 1), "
         "which cancels the drift of a shared machine. TVM VM direct: `vm = relax.VirtualMachine("
         "tvm.runtime.load_module('compiled.so'), tvm.cpu())`, the weights from `neocompile.params.load`, the input "
         "converted to a tvm tensor once; a call is `vm['main'](x, *weights)` (the function fetched once) and "
         "`.numpy()` of its output. Binding: `neocompile_rt.Model(package, num_threads=1).run(x)` with a numpy array, "
         "returning numpy arrays, given a 64-byte aligned array (borrowed by the C runtime) and, in the input-copied "
         "column, one an element off that alignment (copied); numpy's own arrays are either by chance (this run: "
         f"{numpy_aligned}). C API "
         f"alone: the package's `bin/neo_run --threads 1 --repeat N` (nrt_run only, input set once, no output copy), "
         f"started from the child in {NEO_RUN_ROUNDS} of the rounds, median of its medians; the binding's median "
         f"above it ({above}) is what Python, ctypes, the argument checks and the output copy add to the C API "
         "(on SqueezeNet lost in the noise: neo_run runs in processes of its own). max |diff| = the "
         "binding's outputs against the direct call's. Load = the 1-minute load average before / after, on "
         f"{result.get('cores', '?')} usable core(s): at a load of {max(loads, default=0):.1f} other jobs stretch "
         "single SqueezeNet calls by far more than the 2% goal from call to call, hence the paired medians; the "
         "fastest rounds (us: "
         f"{best}) and the pieces above (the binding's own work is the pieces other than nrt_run, against the "
         "direct call's `.numpy()`) are the other figures to read. The section took "
         f"{result['seconds']:.0f} s."),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--export"]:
        _export_main(argv[1], argv[2])
        return
    if argv[:1] == ["--measure"]:
        _measure_main(argv[1], argv[2])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="5 rounds at half the time per round")
    p.add_argument("--models", help=f"comma list from {', '.join(MODELS)} (default: all)")
    p.add_argument("--json", type=Path, help="also write the result as JSON here")
    args = p.parse_args(argv)
    result = run(args.quick, args.models.split(",") if args.models else None)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(render(result))


if __name__ == "__main__":
    main()
