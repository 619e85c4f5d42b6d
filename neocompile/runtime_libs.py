"""The TVM runtime shared libraries, per CPU architecture, of exactly the installed TVM version.

A compiled package needs ``libtvm_runtime.so`` and ``libtvm_ffi.so`` built for the device's architecture:

* x86_64: copied from the installed ``apache-tvm`` / ``apache-tvm-ffi`` wheels;
* aarch64: extracted from the PyPI ``manylinux_2_28_aarch64`` wheels of the same versions (``pip download``);
* armv7: PyPI has no armv7 wheel and apache-tvm has no sdist, so :func:`build_armv7_runtime` cross-builds it
  from the sources PyPI does have (slow; explicit).

Everything is cached under ``$NEOCOMPILE_CACHE`` (default ``~/.cache/neocompile``) in
``runtime/<tvm-version>/<arch>/``; a folder there is written to a temporary sibling and renamed into place, so it
is complete whenever it exists and concurrent callers are safe. Nothing heavy runs at import time.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Iterator

from .errors import NeoError

ARCHES = ("x86_64", "aarch64", "armv7")

#: Libraries a runtime folder must hold, and optional extras (sort/topk/random kernels) shipped when available.
REQUIRED_LIBS = ("libtvm_runtime.so", "libtvm_ffi.so")
OPTIONAL_LIBS = ("libtvm_runtime_extra.so",)

#: Where each library sits inside the wheels (and the installed packages).
_LIB_LOCATIONS = {
    "libtvm_runtime.so": ("apache-tvm", "tvm/lib/libtvm_runtime.so"),
    "libtvm_runtime_extra.so": ("apache-tvm", "tvm/lib/libtvm_runtime_extra.so"),
    "libtvm_ffi.so": ("apache-tvm-ffi", "tvm_ffi/lib/libtvm_ffi.so"),
}

#: Platform tags of the PyPI wheels per architecture (None: no wheel exists).
_WHEEL_PLATFORMS = {"x86_64": "manylinux_2_28_x86_64", "aarch64": "manylinux_2_28_aarch64", "armv7": None}

#: NEEDED entries any Linux device with a C++ runtime provides.
_SYSTEM_LIBS = ("libc.so", "libm.so", "libdl.so", "libpthread.so", "librt.so", "libstdc++.so", "libgcc_s.so",
                "ld-linux", "libatomic.so")

_ELF_MACHINES = {"x86_64": 62, "aarch64": 183, "armv7": 40}


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
            raise RuntimeUnavailable(f"{dist} is not installed in {sys.prefix}; cannot ship its runtime") from exc
    return tuple(out.items())


def runtime_versions() -> dict[str, str]:
    """The installed TVM and tvm-ffi versions (PyPI version strings), for package manifests."""
    return dict(_installed_versions())


def cache_root() -> Path:
    """``$NEOCOMPILE_CACHE`` or ``~/.cache/neocompile``."""
    env = os.environ.get("NEOCOMPILE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "neocompile"


def runtime_cache_dir(arch: str) -> Path:
    """Where the runtime folder for ``arch`` lives (it may not exist yet)."""
    versions = runtime_versions()
    return cache_root() / "runtime" / f"tvm-{versions['tvm']}-ffi-{versions['tvm-ffi']}" / arch


def host_arch() -> str | None:
    import platform

    machine = platform.machine().lower()
    return {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64",
            "armv7l": "armv7", "armv8l": "armv7"}.get(machine)


def runtime_libraries(arch: str, *, build_missing: bool = False) -> Path:
    """A folder holding ``libtvm_runtime.so``, ``libtvm_ffi.so`` (and ``libtvm_runtime_extra.so`` where the wheel has
    it) for ``arch``, of exactly the installed TVM / tvm-ffi versions. Fetched or copied on first use, then cached.

    armv7 has no wheel: the folder exists only after :func:`build_armv7_runtime` (or with ``build_missing=True``,
    which runs that build, several minutes); otherwise :class:`RuntimeUnavailable` says why.
    """
    if arch not in ARCHES:
        raise RuntimeUnavailable(f"No TVM runtime for architecture '{arch}': expected one of {', '.join(ARCHES)}")
    final = runtime_cache_dir(arch)
    if _is_complete(final):
        return final
    if arch == "armv7":
        if build_missing:
            return build_armv7_runtime()
        versions = runtime_versions()
        raise RuntimeUnavailable(
            f"No TVM runtime for armv7: PyPI has no armv7 (armhf) wheel of apache-tvm=={versions['tvm']} or "
            f"apache-tvm-ffi=={versions['tvm-ffi']}, and apache-tvm publishes no sdist. An armv7 libtvm_runtime.so "
            "would need building from sources with the arm-linux-gnueabihf cross toolchain "
            "(neocompile.runtime_libs.build_armv7_runtime(), several minutes)."
        )
    with _locked(final):
        if _is_complete(final):
            return final
        with _staging(final) as tmp:
            if arch == host_arch():
                _copy_installed(tmp)
            else:
                _extract_wheels(arch, tmp)
            _check_folder(tmp, arch)
            _write_versions(tmp, arch, source="installed wheels" if arch == host_arch() else "PyPI wheels")
    return final


def _copy_installed(dest: Path) -> None:
    for name, (dist, rel) in _LIB_LOCATIONS.items():
        src = _installed_path(dist, rel)
        if src is None:
            if name in REQUIRED_LIBS:
                raise RuntimeUnavailable(f"{rel} is missing from the installed {dist}; reinstall it")
            continue
        shutil.copy2(src, dest / name)


def _installed_path(dist: str, rel: str) -> Path | None:
    pkg, _, rest = rel.partition("/")
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / rest
    return path if path.is_file() else None


def _extract_wheels(arch: str, dest: Path) -> None:
    platform_tag = _WHEEL_PLATFORMS[arch]
    versions = runtime_versions()
    download = Path(tempfile.mkdtemp(prefix="wheels-", dir=dest.parent))
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--platform", platform_tag, "--python-version", f"{sys.version_info.major}.{sys.version_info.minor}",
               "--disable-pip-version-check", "-d", str(download),
               f"apache-tvm=={versions['tvm']}", f"apache-tvm-ffi=={versions['tvm-ffi']}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeUnavailable(f"Downloading the {arch} TVM wheels timed out: {' '.join(cmd)}") from exc
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip()[-1500:]
            raise RuntimeUnavailable(
                f"Could not download the {arch} ({platform_tag}) wheels of apache-tvm=={versions['tvm']} and "
                f"apache-tvm-ffi=={versions['tvm-ffi']} from the package index: {tail}"
            )
        wheels = {dist: _find_wheel(download, dist) for dist in ("apache-tvm", "apache-tvm-ffi")}
        for name, (dist, rel) in _LIB_LOCATIONS.items():
            with zipfile.ZipFile(wheels[dist]) as zf:
                try:
                    info = zf.getinfo(rel)
                except KeyError:
                    if name in REQUIRED_LIBS:
                        raise RuntimeUnavailable(f"{wheels[dist].name} has no {rel}") from None
                    continue
                with zf.open(info) as src, open(dest / name, "wb") as out:
                    shutil.copyfileobj(src, out)
            os.chmod(dest / name, 0o755)
    finally:
        shutil.rmtree(download, ignore_errors=True)


def _find_wheel(folder: Path, dist: str) -> Path:
    prefix = dist.replace("-", "_") + "-"
    found = [p for p in folder.glob("*.whl") if p.name.startswith(prefix)]
    if len(found) != 1:
        raise RuntimeUnavailable(f"Expected one {dist} wheel in {folder}, found {[p.name for p in found]}")
    return found[0]


def _check_folder(folder: Path, arch: str) -> None:
    """Every library is an ELF for ``arch`` and needs nothing beyond the folder and the C/C++ system libraries."""
    present = {p.name for p in folder.iterdir() if p.name.endswith(".so")}
    missing = [n for n in REQUIRED_LIBS if n not in present]
    if missing:
        raise RuntimeUnavailable(f"The {arch} runtime lacks {missing}")
    for name in sorted(present):
        machine, needed = elf_info(folder / name)
        if machine != _ELF_MACHINES[arch]:
            raise RuntimeUnavailable(f"{name} in the {arch} runtime is built for ELF machine {machine}, not {arch}")
        unmet = [n for n in needed if n not in present and not n.startswith(_SYSTEM_LIBS)]
        if unmet:
            raise RuntimeUnavailable(f"{name} for {arch} needs {unmet}, which the runtime folder does not hold")


def _write_versions(folder: Path, arch: str, source: str) -> None:
    info = dict(runtime_versions(), arch=arch, source=source,
                libraries=sorted(p.name for p in folder.iterdir() if p.name.endswith(".so")))
    (folder / "versions.json").write_text(json.dumps(info, indent=2) + "\n")


def is_cached(arch: str) -> bool:
    """Whether the runtime folder for ``arch`` is already in the cache (no download or build needed)."""
    return arch in ARCHES and _is_complete(runtime_cache_dir(arch))


def _is_complete(folder: Path) -> bool:
    return (folder / "versions.json").is_file() and all((folder / n).is_file() for n in REQUIRED_LIBS)


@contextlib.contextmanager
def _locked(final: Path) -> Iterator[None]:
    """An advisory lock so concurrent callers do not all download/build; correctness rests on the rename."""
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = final.parent / f".{final.name}.lock"
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _staging(final: Path) -> Iterator[Path]:
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


def elf_info(path: Path) -> tuple[int, list[str]]:
    """(e_machine, DT_NEEDED names) of an ELF shared object, read without binutils."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF":
        raise RuntimeUnavailable(f"{path} is not an ELF file")
    is64, little = data[4] == 2, data[5] == 1
    e = "<" if little else ">"
    machine = struct.unpack_from(e + "H", data, 18)[0]
    if is64:
        shoff, = struct.unpack_from(e + "Q", data, 0x28)
        shentsize, shnum = struct.unpack_from(e + "HH", data, 0x3A)
    else:
        shoff, = struct.unpack_from(e + "I", data, 0x20)
        shentsize, shnum = struct.unpack_from(e + "HH", data, 0x2E)

    def section(i: int) -> tuple[int, int, int, int]:  # type, offset, size, link
        base = shoff + i * shentsize
        if is64:
            _, typ, _, _, off, size, link = struct.unpack_from(e + "IIQQQQI", data, base)
        else:
            _, typ, _, _, off, size, link = struct.unpack_from(e + "IIIIIII", data, base)
        return typ, off, size, link

    needed: list[str] = []
    for i in range(shnum):
        typ, off, size, link = section(i)
        if typ != 6:  # SHT_DYNAMIC
            continue
        _, str_off, _, _ = section(link)
        fmt, step = (e + "qQ", 16) if is64 else (e + "iI", 8)
        for pos in range(off, off + size, step):
            tag, val = struct.unpack_from(fmt, data, pos)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                end = data.index(b"\0", str_off + val)
                needed.append(data[str_off + val:end].decode())
    return machine, needed


def build_armv7_runtime() -> Path:
    """Cross-build the armv7 (armhf) TVM runtime from sources (several minutes) and cache it."""
    final = runtime_cache_dir("armv7")
    if _is_complete(final):
        return final
    with _locked(final):
        if _is_complete(final):
            return final
        with _staging(final) as tmp:
            _build_armv7_into(tmp)
            _check_folder(tmp, "armv7")
            _write_versions(tmp, "armv7", source="cross-built from the C++ sources in the installed apache-tvm-ffi and apache-tvm wheels")
    return final


# ---------------------------------------------------------------------------------------------------------------
# armv7: cross-build from the C++ sources the installed wheels carry (tvm_ffi/src, tvm/src/runtime).
# ---------------------------------------------------------------------------------------------------------------

ARMV7_COMPILER = "arm-linux-gnueabihf-g++"
_COMMON_FLAGS = ["-std=c++17", "-O2", "-fPIC", "-DNDEBUG", "-DTVM_FFI_CMAKE_LITTLE_ENDIAN=1", "-mfloat-abi=hard"]
_FFI_FLAGS = ["-fvisibility=hidden", "-fvisibility-inlines-hidden", "-DTVM_FFI_USE_LIBBACKTRACE=0",
              "-DTVM_FFI_BACKTRACE_ON_SEGFAULT=0"]
#: Runtime sources left out: RPC (needs support headers the wheel lacks; not needed to run a model), CUDA/Hexagon,
#: and builtin_fp16.cc (libgcc provides the ARM fp16 conversion helpers).
_RUNTIME_EXCLUDE = ("extra/", "rpc/", "cuda", "hexagon", "builtin_fp16.cc")

#: Headers the apache-tvm wheel leaves out but the runtime sources include, written for neocompile from scratch
#: (same binary format as TVM's: little-endian scalars, containers as a uint64 count then the elements).
SHIM_DIR = Path(__file__).resolve().parent / "driver" / "armv7_shim"


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


def _compile_all(compiler: str, jobs: list[tuple[Path, Path, list[str]]]) -> None:
    import concurrent.futures

    def one(job: tuple[Path, Path, list[str]]) -> tuple[Path, int, str]:
        src, obj, flags = job
        proc = subprocess.run([compiler, *flags, "-c", str(src), "-o", str(obj)], capture_output=True, text=True)
        return src, proc.returncode, proc.stderr

    workers = max(1, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        failures = [(src, err) for src, rc, err in pool.map(one, jobs) if rc != 0]
    if failures:
        src, err = failures[0]
        errors = [line for line in err.splitlines() if "error" in line][:5] or err.splitlines()[-5:]
        raise RuntimeUnavailable(
            f"Cross-compiling the armv7 TVM runtime failed for {len(failures)} file(s); first {src}: "
            + " | ".join(errors)
        )


def _build_armv7_into(dest: Path, compiler: str = ARMV7_COMPILER) -> None:
    """Cross-compile libtvm_ffi.so and libtvm_runtime.so (core + Relax VM) for armv7 hard-float into ``dest``.

    About 2 minutes on 2 cores. The sources are those of the installed wheels, so the versions match exactly.
    """
    cxx = shutil.which(compiler)
    if cxx is None:
        raise RuntimeUnavailable(f"Building the armv7 TVM runtime needs {compiler} (Debian g++-arm-linux-gnueabihf)")
    ffi_dir, tvm_dir = _package_dir("tvm_ffi"), _package_dir("tvm")
    if not (tvm_dir / "src" / "runtime").is_dir() or not (tvm_dir / "include" / "tvm" / "runtime").is_dir():
        raise RuntimeUnavailable(f"The installed apache-tvm at {tvm_dir} carries no C++ runtime sources")
    work = Path(tempfile.mkdtemp(prefix=".armv7-build-", dir=dest.parent))
    try:
        # The runtime sources include "../support/*.h" relatively: build from a copy next to the shims.
        shutil.copytree(tvm_dir / "src" / "runtime", work / "src" / "runtime")
        shutil.copytree(SHIM_DIR, work, dirs_exist_ok=True)
        ffi_inc = [f"-I{ffi_dir / 'include'}", f"-I{ffi_dir / '3rdparty' / 'dlpack' / 'include'}"]
        (work / "ffi").mkdir()
        (work / "rt").mkdir()
        jobs = [(src, work / "ffi" / (src.relative_to(ffi_dir).as_posix().replace("/", "_") + ".o"),
                 [*_COMMON_FLAGS, *_FFI_FLAGS, *ffi_inc]) for src in _ffi_sources(ffi_dir)]
        rt_root = work / "src" / "runtime"
        rt_inc = [f"-I{work / 'include'}", f"-I{tvm_dir / 'include'}", *ffi_inc]
        rt_sources = sorted(p for p in rt_root.rglob("*.cc")
                            if not any(x in p.relative_to(rt_root).as_posix() for x in _RUNTIME_EXCLUDE))
        jobs += [(src, work / "rt" / (src.relative_to(rt_root).as_posix().replace("/", "_") + ".o"),
                  [*_COMMON_FLAGS, *rt_inc]) for src in rt_sources]
        _compile_all(cxx, jobs)
        links = [
            ["-shared", "-o", str(dest / "libtvm_ffi.so"), *map(str, sorted((work / "ffi").glob("*.o"))),
             "-Wl,-soname,libtvm_ffi.so", "-ldl", "-lpthread"],
            ["-shared", "-o", str(dest / "libtvm_runtime.so"), *map(str, sorted((work / "rt").glob("*.o"))),
             "-Wl,-soname,libtvm_runtime.so", f"-L{dest}", "-ltvm_ffi", "-ldl", "-lpthread", "-Wl,-rpath,$ORIGIN",
             "-Wl,--no-undefined"],
        ]
        for args in links:
            proc = subprocess.run([cxx, *_COMMON_FLAGS, *args], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeUnavailable(f"Linking the armv7 TVM runtime failed: {proc.stderr.strip()[-1500:]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
