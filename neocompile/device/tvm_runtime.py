"""The TVM runtime shared libraries for each CPU architecture, built to load on the devices' own OS.

A package needs ``libtvm_runtime.so`` and ``libtvm_ffi.so`` (and ``libtvm_runtime_extra.so``: sort and random
kernels) of exactly the TVM version that compiled it, for the device's architecture. The PyPI wheels cannot be
shipped as they are: they are manylinux_2_28 builds linked against the build machine's libstdc++ (the x86_64
runtime needs GLIBC_2.27, the aarch64 one 2.28) and there is no armv7 wheel, so they fail on Amazon Linux 2
(glibc 2.26), Ubuntu 18.04 (2.27) or DeepLens (2.23). So every architecture's runtime is built from the C++
sources inside the installed ``apache-tvm`` / ``apache-tvm-ffi`` wheels with zig (:mod:`.toolchain`), for the
lowest glibc among the registry's devices of that architecture, with libc++ linked in statically and hidden.

Built once (a few minutes per architecture on 2 cores), then cached under ``$NEOCOMPILE_CACHE`` (default
``~/.cache/neocompile``) in ``runtime/tvm-<v>-ffi-<v>/<arch>-glibc<floor>-<build-id>/``. A folder there is
written to a temporary sibling and renamed into place, so it is complete whenever it exists and concurrent
callers are safe. Nothing heavy runs at import time.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Iterator

from ..errors import NeoError
from . import elf, toolchain

ARCHES = ("x86_64", "aarch64", "armv7")

#: Libraries a runtime folder must hold; the extra library carries sort/top-k and random kernels.
REQUIRED_LIBS = ("libtvm_runtime.so", "libtvm_ffi.so")
EXTRA_LIB = "libtvm_runtime_extra.so"

#: NEEDED entries any Linux device provides (the C library family; no libstdc++: libc++ is linked in).
_SYSTEM_LIBS = ("libc.so", "libm.so", "libdl.so", "libpthread.so", "librt.so", "ld-linux")

#: Compile flags for every runtime source (the zig target and baseline CPU come from the registry).
_COMMON_FLAGS = ["-std=c++17", "-O2", "-g0", "-fPIC", "-DNDEBUG", "-DTVM_FFI_CMAKE_LITTLE_ENDIAN=1"]
_FFI_FLAGS = ["-fvisibility=hidden", "-fvisibility-inlines-hidden", "-DTVM_FFI_USE_LIBBACKTRACE=0",
              "-DTVM_FFI_BACKTRACE_ON_SEGFAULT=0"]
#: Runtime sources left out: RPC (needs support headers the wheel lacks; not needed to run a model),
#: accelerator back ends, and builtin_fp16.cc (zig's compiler-rt provides the fp16 conversion helpers).
_RUNTIME_EXCLUDE = ("extra/", "rpc/", "cuda", "hexagon", "builtin_fp16.cc")
#: The CPU kernels of the wheel's libtvm_runtime_extra.so that a model may call (argsort/top-k, random).
#: (random.cc includes mt_random_engine.cc itself.)
_EXTRA_SOURCES = ("extra/contrib/sort/sort.cc", "extra/contrib/random/random.cc")
#: Only TVM's own symbols are exported: the statically linked libc++ stays private to each library, so two
#: copies never interpose on each other (that corrupts the heap at load time).
_EXPORTS = """{
  global:
    TVM*; DLPack*; __tvm*;
    _ZN3tvm*; _ZNK3tvm*; _ZTIN3tvm*; _ZTSN3tvm*; _ZTVN3tvm*; _ZThn*N3tvm*;
  local: *;
};
"""
#: Bump when the build recipe changes in a way the inputs below do not capture.
_RECIPE = "zig-1"

#: Headers the apache-tvm wheel leaves out but the runtime sources include, written for neocompile from scratch
#: (same binary format as TVM's: little-endian scalars, containers as a uint64 count then the elements).
SHIM_DIR = Path(__file__).resolve().parent / "driver" / "runtime_shim"


class RuntimeUnavailable(NeoError):
    """The TVM runtime libraries for an architecture cannot be provided."""

    category = "RuntimeUnavailable"


@functools.lru_cache(maxsize=1)
def _installed_versions() -> tuple[tuple[str, str], ...]:
    out = {}
    for key, dist in (("tvm", "apache-tvm"), ("tvm-ffi", "apache-tvm-ffi")):
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError as exc:
            raise RuntimeUnavailable(f"{dist} is not installed in {sys.prefix}; cannot build its runtime") from exc
    return tuple(out.items())


def runtime_versions() -> dict[str, str]:
    """The installed TVM and tvm-ffi versions (PyPI version strings), for package manifests."""
    return dict(_installed_versions())


def cache_root() -> Path:
    """``$NEOCOMPILE_CACHE`` or ``~/.cache/neocompile``."""
    env = os.environ.get("NEOCOMPILE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "neocompile"


def host_arch() -> str | None:
    import platform

    machine = platform.machine().lower()
    return {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64",
            "armv7l": "armv7", "armv8l": "armv7"}.get(machine)


def build_spec(arch: str) -> dict[str, str]:
    """How the runtime for ``arch`` is built: zig target, baseline CPU and glibc floor, read from the registry
    (the lowest glibc among its devices of that architecture, so one runtime loads on all of them)."""
    from ..targets import all_targets

    if arch not in ARCHES:
        raise RuntimeUnavailable(f"No TVM runtime for architecture '{arch}': expected one of {', '.join(ARCHES)}")
    devices = [t for t in all_targets().values() if t.arch == arch]
    if not devices:
        raise RuntimeUnavailable(f"No registry device has architecture {arch}")
    tools = {(t.toolchain["zig_target"], t.toolchain["baseline_cpu"]) for t in devices}
    if len(tools) != 1:
        raise RuntimeUnavailable(f"Registry devices of architecture {arch} disagree on toolchain zig_target/baseline_cpu: {sorted(tools)}")
    (zig_target, cpu), = tools
    glibc = min((t.glibc_floor for t in devices), key=elf.version_key)
    return {"arch": arch, "zig_target": zig_target, "baseline_cpu": cpu, "glibc": glibc}


def _build_id(spec: dict[str, str]) -> str:
    digest = hashlib.sha256(repr((_RECIPE, _COMMON_FLAGS, _FFI_FLAGS, _RUNTIME_EXCLUDE, _EXTRA_SOURCES, _EXPORTS,
                                  spec, toolchain.zig_version())).encode())
    for shim in sorted(SHIM_DIR.rglob("*.h")):
        digest.update(shim.read_bytes())
    return digest.hexdigest()[:10]


def runtime_cache_dir(arch: str) -> Path:
    """Where the runtime folder for ``arch`` lives (it may not exist yet)."""
    versions = runtime_versions()
    spec = build_spec(arch)
    return (cache_root() / "runtime" / f"tvm-{versions['tvm']}-ffi-{versions['tvm-ffi']}"
            / f"{arch}-glibc{spec['glibc']}-{_build_id(spec)}")


def runtime_libraries(arch: str) -> Path:
    """A folder holding ``libtvm_runtime.so``, ``libtvm_ffi.so`` and ``libtvm_runtime_extra.so`` for ``arch``,
    of exactly the installed TVM / tvm-ffi versions, built for the registry's glibc floor of that architecture.
    Built on first use (a few minutes), then cached."""
    final = runtime_cache_dir(arch)
    if _is_complete(final):
        return final
    spec = build_spec(arch)
    with locked(final):
        if _is_complete(final):
            return final
        with staging(final) as tmp:
            _build_into(tmp, spec)
            _check_folder(tmp, spec)
            _write_versions(tmp, spec)
    return final


def is_cached(arch: str) -> bool:
    """Whether the runtime folder for ``arch`` is already in the cache (no build needed)."""
    return arch in ARCHES and _is_complete(runtime_cache_dir(arch))


def _is_complete(folder: Path) -> bool:
    return (folder / "versions.json").is_file() and all((folder / n).is_file() for n in REQUIRED_LIBS)


def _check_folder(folder: Path, spec: dict[str, str]) -> None:
    """Every library is an ELF for the architecture, needs nothing beyond the folder and the C library, and no
    symbol version above the glibc floor it was built for."""
    arch = spec["arch"]
    present = {p.name for p in folder.iterdir() if p.name.endswith(".so")}
    missing = [n for n in REQUIRED_LIBS if n not in present]
    if missing:
        raise RuntimeUnavailable(f"The {arch} runtime lacks {missing}")
    for name in sorted(present):
        needs = elf.read(folder / name)
        if needs.arch != arch:
            raise RuntimeUnavailable(f"{name} in the {arch} runtime is built for ELF machine {needs.machine}, not {arch}")
        unmet = [n for n in needs.needed if n not in present and not n.startswith(_SYSTEM_LIBS)]
        if unmet:
            raise RuntimeUnavailable(f"{name} for {arch} needs {unmet}, which the runtime folder does not hold")
        glibc = needs.newest("GLIBC")
        if glibc and elf.version_key(glibc) > elf.version_key(spec["glibc"]):
            raise RuntimeUnavailable(f"{name} for {arch} needs GLIBC_{glibc}, above the floor {spec['glibc']} it was built for")


def _write_versions(folder: Path, spec: dict[str, str]) -> None:
    info = dict(runtime_versions(), **spec, zig=toolchain.zig_version(),
                source="built with zig from the C++ sources in the installed apache-tvm-ffi and apache-tvm wheels",
                libraries=sorted(p.name for p in folder.iterdir() if p.name.endswith(".so")))
    (folder / "versions.json").write_text(json.dumps(info, indent=2) + "\n")


@contextlib.contextmanager
def locked(final: Path) -> Iterator[None]:
    """An advisory lock so concurrent callers do not all build; correctness rests on the rename."""
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = final.parent / f".{final.name}.lock"
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def staging(final: Path) -> Iterator[Path]:
    """A temporary sibling of ``final`` that is renamed onto it when the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_complete(final):  # not a lost race: a stale partial folder is in the way
                stale = final.parent / f".{final.name}.stale-{uuid.uuid4().hex[:8]}"
                os.rename(final, stale)
                shutil.rmtree(stale, ignore_errors=True)
                os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# The build: the C++ sources the installed wheels carry (tvm_ffi/src, tvm/src/runtime), compiled with zig.
# ---------------------------------------------------------------------------------------------------------------

def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeUnavailable(f"Python package {name} is not installed; its C++ sources are needed")
    return Path(list(spec.submodule_search_locations)[0])


def _ffi_sources(ffi_dir: Path) -> list[Path]:
    """libtvm_ffi's sources, as its CMakeLists.txt lists them (core + extra C++ API)."""
    import re

    text = (ffi_dir / "CMakeLists.txt").read_text()
    found: list[Path] = []
    for block in ("_tvm_ffi_objs_sources", "_tvm_ffi_extra_objs_sources"):
        m = re.search(r"set\(\s*" + block + r"\s(.*?)\)", text, re.S)
        if not m:
            raise RuntimeUnavailable(f"Cannot find {block} in {ffi_dir / 'CMakeLists.txt'}")
        found += [ffi_dir / rel for rel in re.findall(r"src/ffi/[\w/]+\.cc", m.group(1))]
    missing = [str(p) for p in found if not p.is_file()]
    if missing or not found:
        raise RuntimeUnavailable(f"The installed apache-tvm-ffi lacks its C++ sources: {missing or 'none listed'}")
    return found


def _compile_all(cxx: list[str], jobs: list[tuple[Path, Path, list[str]]], arch: str) -> None:
    def one(job: tuple[Path, Path, list[str]]):
        src, obj, flags = job
        if obj.is_file():  # compiled by an earlier, interrupted build of the same recipe
            return src, None
        tmp = obj.with_name(obj.name + ".tmp")
        try:
            toolchain.run([*cxx, *flags, "-c", str(src), "-o", str(tmp)], f"Compiling {src.name}")
        except NeoError as exc:
            return src, str(exc)
        os.replace(tmp, obj)
        return src, None

    with concurrent.futures.ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        failures = [(src, err) for src, err in pool.map(one, jobs) if err]
    if failures:
        src, err = failures[0]
        errors = [line for line in err.splitlines() if "error" in line][:5] or err.splitlines()[-5:]
        raise RuntimeUnavailable(
            f"Building the {arch} TVM runtime failed for {len(failures)} file(s); first {src}: " + " | ".join(errors)
        )


def _build_into(dest: Path, spec: dict[str, str]) -> None:
    """Compile libtvm_ffi.so, libtvm_runtime.so (core + Relax VM) and libtvm_runtime_extra.so into ``dest``."""
    arch = spec["arch"]
    try:
        cxx = toolchain.cxx(spec["zig_target"], spec["glibc"], spec["baseline_cpu"])
    except NeoError as exc:
        raise RuntimeUnavailable(f"Cannot build the {arch} TVM runtime: {exc}") from exc
    ffi_dir, tvm_dir = _package_dir("tvm_ffi"), _package_dir("tvm")
    if not (tvm_dir / "src" / "runtime").is_dir() or not (tvm_dir / "include" / "tvm" / "runtime").is_dir():
        raise RuntimeUnavailable(f"The installed apache-tvm at {tvm_dir} carries no C++ runtime sources")
    # Object files are kept next to the cache entry until the build succeeds, so an interrupted or failed build
    # (a killed job, a full disk) resumes instead of starting over.
    final = runtime_cache_dir(arch)
    work = final.with_name(f".{final.name}.objects")
    work.mkdir(parents=True, exist_ok=True)
    # The runtime sources include "../support/*.h" (and the sort kernel compiler-rt's builtin_fp16.h)
    # relatively: build from a copy next to the shims.
    shutil.copytree(tvm_dir / "src" / "runtime", work / "src" / "runtime", dirs_exist_ok=True)
    shutil.copytree(SHIM_DIR, work, dirs_exist_ok=True)
    (work / "3rdparty" / "compiler-rt").mkdir(parents=True, exist_ok=True)
    shutil.copy2(SHIM_DIR / "include" / "builtin_fp16.h", work / "3rdparty" / "compiler-rt" / "builtin_fp16.h")
    (work / "exports.map").write_text(_EXPORTS)
    ffi_inc = [f"-I{ffi_dir / 'include'}", f"-I{ffi_dir / '3rdparty' / 'dlpack' / 'include'}"]
    rt_root = work / "src" / "runtime"
    rt_inc = [f"-I{work / 'include'}", f"-I{tvm_dir / 'include'}", *ffi_inc]
    groups: dict[str, list[Path]] = {
        "ffi": _ffi_sources(ffi_dir),
        "rt": sorted(p for p in rt_root.rglob("*.cc")
                     if not any(x in p.relative_to(rt_root).as_posix() for x in _RUNTIME_EXCLUDE)),
        "extra": [rt_root / rel for rel in _EXTRA_SOURCES],
    }
    jobs = []
    for group, sources in groups.items():
        (work / group).mkdir(exist_ok=True)
        flags = [*_COMMON_FLAGS, *_FFI_FLAGS, *ffi_inc] if group == "ffi" else [*_COMMON_FLAGS, *rt_inc]
        root = ffi_dir if group == "ffi" else rt_root
        jobs += [(src, work / group / (src.relative_to(root).as_posix().replace("/", "_") + ".o"), flags)
                 for src in sources]
    _compile_all(cxx, jobs, arch)
    link = [*cxx, "-shared", "-s", f"-Wl,--version-script={work / 'exports.map'}"]

    def objects(group: str) -> list[str]:
        return [str(p) for p in sorted((work / group).glob("*.o"))]

    for out, group, libs in (("libtvm_ffi.so", "ffi", []),
                             ("libtvm_runtime.so", "rt", ["-ltvm_ffi"]),
                             (EXTRA_LIB, "extra", ["-ltvm_runtime", "-ltvm_ffi"])):
        try:
            toolchain.run([*link, "-o", str(dest / out), *objects(group), f"-Wl,-soname,{out}", f"-L{dest}", *libs,
                           "-ldl", "-lpthread", "-Wl,-rpath,$ORIGIN", "-Wl,--no-undefined"],
                          f"Linking {out} for {arch}")
        except NeoError as exc:
            raise RuntimeUnavailable(str(exc)) from exc
    shutil.rmtree(work, ignore_errors=True)
