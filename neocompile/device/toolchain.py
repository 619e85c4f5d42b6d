"""The C/C++ toolchain that builds for a device's own OS: ``zig`` (PyPI ``ziglang``) targeting its glibc floor.

Debian's cross compilers link against the build machine's glibc and libstdc++ (GLIBC_2.34+ symbols), so what
they build does not load on a Raspberry Pi OS Buster, Ubuntu 18.04 or Amazon Linux 2 device. zig links against
the exact glibc version named in its target (``arm-linux-gnueabihf.2.28``) and links its own libc++ statically,
so a package needs nothing newer than the device's glibc and no libstdc++ at all. The zig target, the baseline
CPU and the floors are data in ``targets/*.json`` (``toolchain``, ``os``).
"""
from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import CompilationError


@functools.lru_cache(maxsize=1)
def zig_executable() -> str:
    """The zig binary shipped in the ``ziglang`` wheel."""
    try:
        import ziglang
    except ImportError:
        raise CompilationError(
            "The zig toolchain is not installed: neocompile builds device code with PyPI's ziglang "
            "(pip install 'ziglang==0.17.0'; make deps does)"
        ) from None
    exe = Path(ziglang.__file__).resolve().parent / "zig"
    if not exe.is_file():
        raise CompilationError(f"The ziglang package at {exe.parent} has no zig binary; reinstall it")
    return str(exe)


def zig_version() -> str:
    from importlib.metadata import version

    return version("ziglang")


def environment() -> dict[str, str]:
    """zig's caches live in neocompile's cache (its libc++ and glibc stubs are built once per target)."""
    from .tvm_runtime import cache_root

    cache = cache_root() / "zig"
    env = dict(os.environ)
    env.setdefault("ZIG_GLOBAL_CACHE_DIR", str(cache / "global"))
    env.setdefault("ZIG_LOCAL_CACHE_DIR", str(cache / "local"))
    return env


def triple(zig_target: str, glibc: str) -> str:
    """``arm-linux-gnueabihf`` + ``2.28`` -> ``arm-linux-gnueabihf.2.28`` (zig links against that glibc)."""
    return f"{zig_target}.{glibc}"


def cxx(zig_target: str, glibc: str, cpu: str | None = None) -> list[str]:
    """The C++ compiler command for a target and glibc floor (``cpu``: zig's name of the baseline CPU)."""
    cmd = [zig_executable(), "c++", "-target", triple(zig_target, glibc)]
    if cpu:
        cmd.append(f"-mcpu={cpu}")
    return cmd


def run(cmd: Sequence[str], what: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a toolchain command; a failure raises CompilationError naming ``what`` with zig's output."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, env=environment(), timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise CompilationError(f"{what} did not finish within {timeout:g} s") from exc
    if proc.returncode != 0:
        out = (proc.stderr or proc.stdout).strip()
        raise CompilationError(f"{what} failed: {out[-1500:]}")
    return proc


def linker(target: Any) -> Callable[..., None]:
    """An ``export_library`` fcompile that links a model library with zig for ``target``'s glibc floor."""
    # C, not C++: the model library needs no C++ runtime, so zig links no libc++ into it.
    base = [zig_executable(), "cc", "-target", target.zig_triple]

    def fcompile(output: str, objects: list[str] | str, options: list[str] | None = None) -> None:
        objs = [objects] if isinstance(objects, str) else list(objects)
        # -Wl,--no-undefined is not used: the model resolves TVMFFI*/TVMBackend* from the runtime at load time.
        run([*base, "-shared", "-fPIC", "-o", output, *(options or []), *objs],
            f"Linking the model library for {target.name} with zig ({target.zig_triple})")

    fcompile.output_format = "so"  # type: ignore[attr-defined]
    return fcompile
