"""Read what an ELF file needs from the system: its machine, DT_NEEDED libraries and symbol versions.

Pure Python (no binutils), so the check works for every architecture on any build machine. The symbol
versions (``GLIBC_2.27``, ``GLIBCXX_3.4.25``, ...) come from the GNU version-needs section, which is what the
device's dynamic loader checks before it runs anything.
"""
from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

SHT_DYNAMIC = 6
SHT_GNU_VERNEED = 0x6FFFFFFE
DT_NEEDED = 1

#: e_machine values of the architectures neocompile builds for.
MACHINES = {62: "x86_64", 183: "aarch64", 40: "armv7"}

#: Version families a device OS sets floors for, with the library that defines them.
FAMILIES = {"GLIBC": "glibc", "GLIBCXX": "libstdc++", "CXXABI": "libstdc++ (C++ ABI)", "GCC": "libgcc_s"}


class NotElf(ValueError):
    """The file is not an ELF object."""


@dataclasses.dataclass
class ElfNeeds:
    machine: int
    needed: list[str]  # DT_NEEDED names
    versions: dict[str, list[str]]  # library file -> symbol versions required from it

    @property
    def arch(self) -> str | None:
        return MACHINES.get(self.machine)

    def newest(self, family: str) -> str | None:
        """The newest version of ``family`` (``GLIBC``, ``GLIBCXX``, ...) required, e.g. ``"2.27"``."""
        found = [v[len(family) + 1:] for vs in self.versions.values() for v in vs
                 if v.startswith(family + "_") and v[len(family) + 1:][:1].isdigit()]
        return max(found, key=version_key) if found else None


def version_key(version: str) -> tuple[int, ...]:
    """``"2.27"`` -> ``(2, 27)``, comparable."""
    return tuple(int(p) if p.isdigit() else 0 for p in str(version).split("."))


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def read(path: Path) -> ElfNeeds:
    """Machine, DT_NEEDED and the version needs of one ELF file."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF":
        raise NotElf(f"{path} is not an ELF file")
    is64, e = data[4] == 2, "<" if data[5] == 1 else ">"
    machine = struct.unpack_from(e + "H", data, 18)[0]
    if is64:
        shoff, = struct.unpack_from(e + "Q", data, 0x28)
        shentsize, shnum = struct.unpack_from(e + "HH", data, 0x3A)
    else:
        shoff, = struct.unpack_from(e + "I", data, 0x20)
        shentsize, shnum = struct.unpack_from(e + "HH", data, 0x2E)

    def section(i: int) -> tuple[int, int, int, int, int]:  # type, offset, size, link, info
        base = shoff + i * shentsize
        if is64:
            _, typ, _, _, off, size, link, info = struct.unpack_from(e + "IIQQQQII", data, base)
        else:
            _, typ, _, _, off, size, link, info = struct.unpack_from(e + "IIIIIIII", data, base)
        return typ, off, size, link, info

    def string(table_off: int, pos: int) -> str:
        end = data.index(b"\0", table_off + pos)
        return data[table_off + pos:end].decode(errors="replace")

    needed: list[str] = []
    versions: dict[str, list[str]] = {}
    for i in range(shnum):
        typ, off, size, link, info = section(i)
        if typ == SHT_DYNAMIC:
            str_off = section(link)[1]
            fmt, step = (e + "qQ", 16) if is64 else (e + "iI", 8)
            for pos in range(off, off + size, step):
                tag, val = struct.unpack_from(fmt, data, pos)
                if tag == 0:
                    break
                if tag == DT_NEEDED:
                    needed.append(string(str_off, val))
        elif typ == SHT_GNU_VERNEED:
            str_off = section(link)[1]
            pos = off
            for _ in range(info):  # sh_info: number of Verneed entries
                _, cnt, file_, aux, nxt = struct.unpack_from(e + "HHIII", data, pos)
                names = versions.setdefault(string(str_off, file_), [])
                apos = pos + aux
                for _ in range(cnt):
                    _, _, _, name, anext = struct.unpack_from(e + "IHHII", data, apos)
                    names.append(string(str_off, name))
                    apos += anext
                pos += nxt
                if not nxt:
                    break
    return ElfNeeds(machine=machine, needed=needed, versions=versions)

