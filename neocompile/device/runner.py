"""The package's runner ``bin/neo_run``: building it, and running a compiled model with it here.

The C++ driver ``driver/neo_run.cc`` is built with zig for the target's architecture and glibc floor against the
TVM runtime of :mod:`.tvm_runtime`, and run natively when the target's architecture is the host's, otherwise under
qemu-user (``target.emulator``) with the target's sysroot and emulated CPU. Inputs and outputs travel as raw
little-endian files described by ``inputs.txt`` / ``outputs.txt`` lines: ``<dtype> <ndim> <dims...> <path>``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import NeoError, VerificationError
from ..targets import cpu_flags
from . import toolchain
from .tvm_runtime import (RuntimeUnavailable, build_spec, host_arch, is_cached, locked, runtime_cache_dir, runtime_libraries,
                          runtime_versions, staging)

DRIVER_SOURCE = Path(__file__).resolve().parent / "driver" / "neo_run.cc"

#: Driver dtypes (TVM's spelling) <-> numpy.
_DTYPES = {
    "float16": np.float16, "float32": np.float32, "float64": np.float64,
    "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
    "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
    "bool": np.bool_,
}

class EmulationUnavailable(VerificationError):
    """A piece needed to run the model (toolchain, emulator, runtime) is missing: the model was not run."""


def _include_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("tvm_ffi")
    if spec is None or not spec.submodule_search_locations:
        raise EmulationUnavailable("apache-tvm-ffi is not installed: its C++ headers are needed to build the driver")
    inc = Path(list(spec.submodule_search_locations)[0]) / "include"
    if not (inc / "tvm" / "ffi" / "function.h").is_file():
        raise EmulationUnavailable(f"The apache-tvm-ffi C++ headers are missing (looked in {inc})")
    return inc


#: The C API of the package runtime (lib/libneocompile_rt.so) and its header, shipped as include/neocompile_rt.h.
RT_SOURCE = Path(__file__).resolve().parent / "driver" / "neocompile_rt.cc"
RT_HEADER = Path(__file__).resolve().parent / "driver" / "include" / "neocompile_rt.h"
#: The numpy-only Python binding over the C API, shipped as python/neocompile_rt.py.
RT_PYTHON = Path(__file__).resolve().parent / "python" / "neocompile_rt.py"
RT_LIBRARY = "libneocompile_rt.so"
#: Only the C API leaves the library, under an ELF symbol version per ABI (nrt_load@@NEOCOMPILE_RT_1); its libc++
#: and the tvm-ffi C++ layer it is built with stay private.
_RT_EXPORTS = "NEOCOMPILE_RT_{abi} {{\n  global: nrt_*;\n  local: *;\n}};\n"


def rt_abi() -> int:
    """NRT_ABI_VERSION of the C API header."""
    import re

    match = re.search(r"#define NRT_ABI_VERSION (\d+)", RT_HEADER.read_text())
    if not match:
        raise EmulationUnavailable(f"{RT_HEADER} defines no NRT_ABI_VERSION")
    return int(match.group(1))


def build_driver(target) -> Path:
    """``neo_run`` for ``target``'s architecture, in a folder that also holds what it runs on: the C API
    ``libneocompile_rt.so`` and the TVM runtime libraries (hard links to :mod:`.tvm_runtime`'s cache). Both are
    built with zig for the architecture's glibc floor; the folder is keyed by a hash of the sources and commands,
    written to a staging sibling and renamed, so it is complete whenever it exists. A package takes the whole
    folder (``lib/`` and ``bin/neo_run``)."""
    try:
        libs = runtime_libraries(target.arch)
        spec = build_spec(target.arch)
        cxx = toolchain.cxx(spec["zig_target"], spec["glibc"], spec["baseline_cpu"])
    except NeoError as exc:
        raise EmulationUnavailable(f"Cannot build the model driver for {target.name}: {exc}") from exc
    include = _include_dir()
    flags = ["-std=c++17", "-O2", "-g0", "-s"]
    versions = runtime_versions()
    version_text = f"neocompile-rt {rt_abi()} (apache-tvm {versions['tvm']}, apache-tvm-ffi {versions['tvm-ffi']})"
    digest = hashlib.sha256()
    for source in (DRIVER_SOURCE, RT_SOURCE, RT_HEADER):
        digest.update(source.read_bytes())
    for header in sorted((include / "tvm" / "ffi").rglob("*.h")):
        digest.update(header.read_bytes())
    digest.update(repr((cxx[1:], flags, _RT_EXPORTS, version_text, toolchain.zig_version())).encode())
    final = libs / f"bundle-{digest.hexdigest()[:16]}"
    exe = final / "neo_run"
    if exe.is_file():
        return exe
    with locked(final):
        if exe.is_file():
            return exe
        with staging(final) as tmp:
            for lib in sorted(libs.glob("*.so")):
                try:
                    os.link(lib, tmp / lib.name)
                except OSError:
                    shutil.copy2(lib, tmp / lib.name)
            (tmp / "exports.map").write_text(_RT_EXPORTS.format(abi=rt_abi()))
            rt_cmd = [*cxx, *flags, "-fPIC", "-fvisibility=hidden", "-shared", f"-DNRT_VERSION_TEXT=\"{version_text}\"",
                      "-I", str(RT_HEADER.parent), "-I", str(include), str(RT_SOURCE), "-o", str(tmp / RT_LIBRARY),
                      f"-Wl,--version-script={tmp / 'exports.map'}", f"-Wl,-soname,{RT_LIBRARY}", "-L", str(tmp),
                      "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi", "-Wl,--as-needed", "-ldl", "-lpthread",
                      "-Wl,-rpath,$ORIGIN", "-Wl,--no-undefined"]
            exe_cmd = [*cxx, *flags, "-I", str(RT_HEADER.parent), str(DRIVER_SOURCE), "-o", str(tmp / "neo_run"),
                       "-L", str(tmp), f"-l:{RT_LIBRARY}", "-Wl,-rpath,$ORIGIN:$ORIGIN/../lib"]
            try:
                toolchain.run(rt_cmd, f"Building the package runtime (C API) for {target.name}", timeout=600)
                toolchain.run(exe_cmd, f"Building the model driver for {target.name}", timeout=600)
            except NeoError as exc:
                raise EmulationUnavailable(str(exc)) from exc
            (tmp / "exports.map").unlink()
    return exe


def _needs_emulator(target) -> bool:
    return target.arch != host_arch()


def can_emulate(target, fetch: bool = True) -> tuple[bool, str]:
    """Whether a library compiled for ``target`` can be run here, and if not, why.

    With ``fetch`` the runtime libraries are built when missing (a few minutes, once); without it only
    what is already cached counts.
    """
    if target.accelerator is not None or target.device_type != "cpu":
        accel = (target.accelerator or {}).get("kind") if isinstance(target.accelerator, dict) else target.accelerator
        return False, f"{target.name} runs device code ({accel or target.device_type}); only CPU targets can be emulated"
    if _needs_emulator(target):
        command = (target.emulator or {}).get("command")
        if not command or shutil.which(command) is None:
            package = (target.emulator or {}).get("package", "qemu-user")
            return False, f"emulator '{command}' for {target.arch} is not on PATH (install {package})"
        sysroot = (target.emulator or {}).get("sysroot")
        if sysroot and not Path(sysroot).is_dir():
            return False, f"sysroot {sysroot} for {target.arch} does not exist (install {(target.emulator or {}).get('sysroot_package')})"
    elif not target.host_is_native():
        missing = sorted(set(target.cpu.get("host_features") or []) - cpu_flags())
        return False, (f"{target.name} code needs CPU features {missing} that this {host_arch()} host lacks, "
                       "and qemu-user cannot emulate them")
    if fetch:
        try:
            libs = runtime_libraries(target.arch)
        except RuntimeUnavailable as exc:
            return False, str(exc)
    else:
        libs = runtime_cache_dir(target.arch)
        if not is_cached(target.arch):
            return False, f"the {target.arch} TVM runtime is not cached yet ({libs})"
    how = f"under {target.emulator['command']}" if _needs_emulator(target) else "natively"
    return True, f"runs {how} with the TVM runtime in {libs}"


def _tail(text: str | bytes | None, limit: int = 2000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    text = (text or "").strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def _dtype_name(arr: np.ndarray) -> str:
    for name, dt in _DTYPES.items():
        if arr.dtype == np.dtype(dt):
            return name
    raise VerificationError(f"Input dtype {arr.dtype} is not supported by the model driver; expected one of "
                            f"{', '.join(_DTYPES)}")


def write_inputs(folder: Path, inputs: list[np.ndarray]) -> None:
    """Write ``inputs.txt`` and one raw little-endian file per input into ``folder``."""
    lines = []
    for i, value in enumerate(inputs):
        arr = np.asarray(value)
        name = _dtype_name(arr)
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        arr.tofile(folder / f"input_{i}.bin")
        lines.append(" ".join([name, str(arr.ndim), *(str(d) for d in arr.shape), f"input_{i}.bin"]))
    (folder / "inputs.txt").write_text("".join(line + "\n" for line in lines))


def read_outputs(folder: Path) -> list[np.ndarray]:
    """Read ``outputs.txt`` and the raw files it names back into arrays."""
    index = folder / "outputs.txt"
    if not index.is_file():
        raise VerificationError(f"The model driver wrote no {index.name}")
    outputs = []
    for line in index.read_text().splitlines():
        if not line.strip():
            continue
        parts = line.split()
        dtype, ndim = parts[0], int(parts[1])
        shape = tuple(int(d) for d in parts[2:2 + ndim])
        path = folder / " ".join(parts[2 + ndim:])
        if dtype not in _DTYPES:
            raise VerificationError(f"The model returned an output of dtype {dtype}, which numpy cannot hold")
        arr = np.fromfile(path, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<"))
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            raise VerificationError(f"Output file {path.name} holds {arr.size} values; shape {shape} needs more")
        outputs.append(arr.reshape(shape).astype(_DTYPES[dtype]))
    return outputs


def emulator_prefix(target, sysroot: str | None = None) -> list[str]:
    """``qemu-<arch> -L <sysroot> [-cpu <model>]`` for ``target``: the guest loader and libc come from ``sysroot``
    (by default the Debian cross sysroot named in the registry; a device image's root for image runs)."""
    emu = target.emulator or {}
    cmd = [emu["command"]]
    sysroot = sysroot or emu.get("sysroot")
    if sysroot:
        cmd += ["-L", str(sysroot)]
    cpu = (target.cpu or {}).get("emulate_cpu")
    if cpu:
        cmd += ["-cpu", cpu]
    return cmd


def driver_command(driver: Path, lib_path: Path, io_dir: Path, target, lib_dir: Path | None = None,
                   num_threads: int | None = None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run ``driver`` for ``target`` (natively or under qemu-user).

    ``lib_dir`` holds the TVM runtime libraries; by default the driver's own folder (the cache layout).
    ``num_threads`` becomes ``--threads N``; without it the driver picks its own count (see neo_run.cc).
    """
    libs = str(lib_dir or driver.parent)
    env = dict(os.environ)
    args = [*(["--threads", str(num_threads)] if num_threads is not None else []), str(lib_path), str(io_dir)]
    if not _needs_emulator(target):
        env["LD_LIBRARY_PATH"] = libs + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        return [str(driver), *args], env
    # -E sets the variable for the guest only; the host qemu binary keeps its own library path.
    cmd = [*emulator_prefix(target), "-E", f"LD_LIBRARY_PATH={libs}", str(driver), *args]
    env.pop("QEMU_LD_PREFIX", None)
    return cmd, env


def run_library(lib_path: Path, target, inputs: list[np.ndarray], timeout: float = 300,
                package_dir: Path | None = None, num_threads: int | None = None) -> list[np.ndarray]:
    """Run ``main`` of the compiled library ``lib_path`` on ``inputs`` as ``target``'s CPU would, and return its
    outputs (a tuple result is flattened). Any failure raises :class:`VerificationError` with the driver's stderr.

    With ``package_dir``, the package's own ``bin/neo_run`` and ``lib/`` are used: what ships is what is run.
    ``num_threads`` is passed as ``neo_run --threads``; by default the driver uses every core it may run on.
    """
    lib_path = Path(lib_path).resolve()
    if not lib_path.is_file():
        raise VerificationError(f"Compiled model library {lib_path} does not exist")
    ok, why = can_emulate(target)
    if not ok:
        raise EmulationUnavailable(f"Cannot run the model compiled for {target.name}: {why}")
    if package_dir is not None:
        driver, lib_dir = Path(package_dir) / "bin" / "neo_run", Path(package_dir) / "lib"
    else:
        driver, lib_dir = build_driver(target), None
    with tempfile.TemporaryDirectory(prefix="neo-run-") as tmp:
        io_dir = Path(tmp)
        write_inputs(io_dir, inputs)
        cmd, env = driver_command(driver, lib_path, io_dir, target, lib_dir, num_threads)
        try:
            proc = subprocess.run(cmd, capture_output=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise VerificationError(
                f"Running the model for {target.name} did not finish within {timeout:g} s ({' '.join(cmd)}): "
                f"{_tail(exc.stderr)}"
            ) from exc
        if proc.returncode != 0:
            status = proc.returncode
            if status < 0:
                status_text = f"killed by {signal.Signals(-status).name}"
            elif status > 128 and (status - 128) in {s.value for s in signal.Signals}:
                status_text = f"exit status {status} ({signal.Signals(status - 128).name} in the guest?)"
            else:
                status_text = f"exit status {status}"
            hint = ""
            if "SIGILL" in status_text or "Illegal instruction" in _tail(proc.stderr):
                hint = " (an instruction the emulated CPU lacks: check the target's mcpu/mattr against emulate_cpu)"
            raise VerificationError(
                f"Running the model compiled for {target.name} failed with {status_text}{hint} "
                f"({' '.join(cmd)}): {_tail(proc.stderr) or '(no output on stderr)'}"
            )
        return read_outputs(io_dir)
