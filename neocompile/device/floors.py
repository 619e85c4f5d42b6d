"""A package's libc floors: the newest glibc / libstdc++ symbol versions any of its ELF files needs.

The device's reference OS (``os`` in ``targets/*.json``) sets the ceiling; a package whose floors are above it
would not load there, so the compile job refuses to ship it. ``compiled.meta`` records the true floors over all
files, and the runtimes (``Model``, ``bin/neo_run``) refuse to load on an older libc with both versions named.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import CompilationError
from . import elf


def package_floors(folder: Path) -> dict[str, Any]:
    """Floors over every ELF file under ``folder``: ``{"GLIBC": "2.27", "GLIBCXX": None, ..., "Files": {...}}``."""
    folder = Path(folder)
    files: dict[str, dict[str, str]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink() and elf.is_elf(path):
            needs = elf.read(path)
            files[path.relative_to(folder).as_posix()] = {f: v for f in elf.FAMILIES if (v := needs.newest(f))}
    out: dict[str, Any] = {}
    for family in elf.FAMILIES:
        found = [v[family] for v in files.values() if family in v]
        out[family] = max(found, key=elf.version_key) if found else None
    out["Files"] = files
    return out


def check(floors: dict[str, Any], target: Any) -> None:
    """Refuse a package any of whose files needs a newer glibc or libstdc++ than the device's reference OS has."""
    ceilings = {"GLIBC": target.glibc_floor, "GLIBCXX": target.glibcxx_floor}
    problems = []
    for family, ceiling in ceilings.items():
        for rel, versions in floors["Files"].items():
            need = versions.get(family)
            if need and elf.version_key(need) > elf.version_key(ceiling):
                problems.append(f"{rel} needs {family}_{need}")
    if problems:
        raise CompilationError(
            f"The package for {target.name} would not load on its reference OS {target.os['reference']} "
            f"(glibc {target.glibc_floor}, GLIBCXX_{target.glibcxx_floor}): {'; '.join(problems)}"
        )


def system_glibc() -> str | None:
    """This machine's glibc version, e.g. ``"2.36"`` (None on a non-glibc system)."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return None
    name, _, version = text.partition(" ")
    return version if name == "glibc" and version else None


def glibc_too_old(required: str | None, have: str | None) -> bool:
    """Whether a package needing ``required`` (``"GLIBC_2.27"`` or ``"2.27"``) cannot load on glibc ``have``."""
    if not required or not have:
        return False
    need = required.split("_", 1)[1] if required.startswith("GLIBC_") else required
    return elf.version_key(need) > elf.version_key(have)
