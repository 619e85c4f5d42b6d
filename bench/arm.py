"""ARM packages: are the kernels NEON-vectorized, and how fast do they run under qemu?

``vector_counts`` disassembles a package's ``compiled.so`` with the architecture's binutils objdump (Debian's
``binutils-aarch64-linux-gnu`` / ``binutils-arm-linux-gnueabihf``, or ``llvm-objdump``) and counts its
instructions by class. ``emulated_latency`` runs the package's own ``bin/neo_run`` under qemu-user a few times and
reads the run time the runner measures around the model call (so qemu's start-up and the library load are left out).
"""
from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OBJDUMP = {
    "aarch64": ["aarch64-linux-gnu-objdump", "llvm-objdump"],
    "armv7": ["arm-linux-gnueabihf-objdump", "llvm-objdump"],
    "x86_64": ["objdump", "llvm-objdump"],
}
# aarch64: a SIMD&FP register with an arrangement (v0.4s) or a whole 128-bit q register is a vector operation.
_A64_VECTOR = re.compile(r"\bv\d+\.\d*[bhsd]\b|\bq\d+\b")
_A64_SCALAR_FP = re.compile(r"\b[sd]\d+\b")
# armv7: NEON works on d/q registers with an element type (vadd.f32 q8, ...; vld1.32 {d16-d17}); VFP scalar
# float32 math uses s registers, VFP float64 d registers with .f64.
_A32_Q = re.compile(r"\bq\d+\b")
_A32_D = re.compile(r"\bd\d+\b")
_A32_S = re.compile(r"\bs\d+\b")
_X86_VECTOR = re.compile(r"%[yz]mm\d+")
FMA = {"aarch64": ("fmla", "fmls"), "armv7": ("vfma", "vfms", "vmla", "vmls"), "x86_64": ("vfmadd", "vfmsub", "vfnmadd")}
SCALAR_FMA = {"aarch64": ("fmadd", "fmsub", "fnmadd", "fnmsub")}


def objdump_for(arch: str) -> str | None:
    for tool in OBJDUMP.get(arch, []):
        if shutil.which(tool):
            return tool
    return None


def classify(arch: str, mnemonic: str, operands: str) -> str:
    """'vector', 'scalar-fp' or 'other' for one disassembled instruction."""
    if arch == "aarch64":
        if _A64_VECTOR.search(operands):
            return "vector"
        return "scalar-fp" if mnemonic.startswith("f") and _A64_SCALAR_FP.search(operands) else "other"
    if arch == "armv7":
        if not mnemonic.startswith("v"):
            return "other"
        suffix = mnemonic.split(".", 1)[1] if "." in mnemonic else ""
        if _A32_Q.search(operands) or re.match(r"v(ld|st)[1-4]\.", mnemonic):
            return "vector"
        if _A32_S.search(operands) or suffix.endswith("f64"):
            return "scalar-fp"
        return "vector" if suffix and _A32_D.search(operands) else "other"
    if _X86_VECTOR.search(operands):
        return "vector"
    return "scalar-fp" if re.search(r"s[sd]$", mnemonic) and "%xmm" in operands else "other"


def kernel_names(functions: list[str]) -> set[str]:
    """The functions TVM generated for the model's operators: for every exported PrimFunc ``__tvm_ffi_<name>`` its body
    ``<name>`` / ``<name>_compute_*``; not compiler-rt, libm or libc, which the link adds to the same library."""
    exported = {n.removeprefix("__tvm_ffi_") for n in functions if n.startswith("__tvm_ffi_")}
    return {n for n in functions if n in exported or n.split("_compute_", 1)[0] in exported and "_compute_" in n}


def vector_counts(library: Path, arch: str) -> dict[str, Any]:
    """Instruction classes in the model's kernels (see :func:`is_kernel`) of ``library``, summed and per kernel."""
    tool = objdump_for(arch)
    if tool is None:
        return {"error": f"no objdump for {arch} on PATH (looked for {', '.join(OBJDUMP.get(arch, []))})"}
    text = subprocess.run([tool, "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True,
                          check=True).stdout
    fma_names = FMA.get(arch, ())
    functions: dict[str, dict[str, int]] = {}
    current = None
    for line in text.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if header:
            current = functions.setdefault(header.group(1), dict.fromkeys(
                ("instructions", "vector", "vector_fma", "scalar_fp", "scalar_fma"), 0))
            continue
        parts = line.split("\t")
        if current is None or len(parts) < 2 or not re.match(r"^\s*[0-9a-f]+:$", parts[0]):
            continue
        mnemonic, operands = parts[1].strip(), parts[2] if len(parts) > 2 else ""
        kind = classify(arch, mnemonic, operands)
        current["instructions"] += 1
        fma = mnemonic.startswith(fma_names + SCALAR_FMA.get(arch, ()))
        if kind == "vector":
            current["vector"] += 1
            current["vector_fma"] += fma
        elif kind == "scalar-fp":
            current["scalar_fp"] += 1
            current["scalar_fma"] += fma
    names = kernel_names(list(functions))
    kernels = {name: c for name, c in functions.items() if name in names}
    totals = {key: sum(c[key] for c in kernels.values()) for key in
              ("instructions", "vector", "vector_fma", "scalar_fp", "scalar_fma")}
    math = {n: c for n, c in kernels.items() if c["vector"] or c["scalar_fp"]}
    return {
        "tool": tool, **totals,
        "library_instructions": sum(c["instructions"] for c in functions.values()),
        "vector_share": totals["vector"] / max(totals["instructions"], 1),
        "kernels": len(kernels),
        "kernels_with_fp": len(math),
        "kernels_vectorized": sum(1 for c in math.values() if c["vector"]),
        "kernels_scalar_only": sorted(n for n, c in math.items() if not c["vector"])[:20],
    }


def emulated_latency(package: str, runs: int, threads: int = 1) -> dict[str, Any]:
    """Median model-call time of ``package`` under qemu (its bin/neo_run, as the compile job's verification runs it)."""
    from bench import models
    from neocompile.device.runner import driver_command, emulator_prefix, read_outputs, write_inputs
    from neocompile.runtime import Model

    model = Model(package, emulate=True)
    target = model.emulated_target
    x = models.sample_input(model.input_shapes[model.input_names[0]])
    run_s, wall_s, outputs = [], [], None
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="bench-emu-") as tmp:
            io_dir = Path(tmp)
            write_inputs(io_dir, [x])
            cmd, env = driver_command(model.path / "bin" / "neo_run", model.path / "compiled.so", io_dir, target,
                                      model.path / "lib")
            env = dict(env, TVM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=1800)
            wall_s.append(time.perf_counter() - t0)
            timing = dict(line.split() for line in (io_dir / "timing.txt").read_text().splitlines() if line.strip())
            run_s.append(float(timing["run_s"]))
            outputs = read_outputs(io_dir)
    return {"emulator": " ".join(emulator_prefix(target)),
            "runs": runs, "threads": threads, "median_ms": statistics.median(run_s) * 1e3,
            "process_median_s": statistics.median(wall_s), "output": outputs[0] if outputs else None}


def analyse(package: str, runs: int) -> dict[str, Any]:
    """Vector counts and emulated latency of one ARM package (the parent compares variants)."""
    from neocompile.runtime import Model

    model = Model(package, emulate=True)
    arch = model.meta["Compilation"]["Arch"]
    out = {"arch": arch, "target": model.meta["Compilation"]["TargetDevice"], "mcpu": model.meta["Compilation"]["Mcpu"],
           "disassembly": vector_counts(model.path / "compiled.so", arch)}
    try:
        emu = emulated_latency(package, runs)
        emu.pop("output")
        out["emulated"] = emu
    except Exception as exc:  # noqa: BLE001 - reported in the table
        out["emulated"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


if __name__ == "__main__":  # python -m bench.arm PACKAGE RUNS RESULT.json
    import json

    Path(sys.argv[3]).write_text(json.dumps(analyse(sys.argv[1], int(sys.argv[2])), indent=1))
