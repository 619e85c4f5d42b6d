"""The pure-Python ELF reader agrees with binutils on real files of every architecture."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from neocompile.device import elf, floors


def _objdump_versions(path: Path) -> set[str]:
    tool = shutil.which("objdump")
    assert tool, "objdump (Debian package binutils) is needed to cross-check the ELF reader"
    out = subprocess.run([tool, "-p", str(path)], capture_output=True, text=True, check=True).stdout
    section = out.split("Version References:", 1)[1] if "Version References:" in out else ""
    return set(re.findall(r"\b((?:GLIBC|GLIBCXX|CXXABI|GCC)_[0-9][0-9.]*)\b", section))


@pytest.mark.parametrize("path", [Path("/bin/ls"), Path("/usr/lib/x86_64-linux-gnu/libstdc++.so.6"),
                                  Path("/usr/arm-linux-gnueabihf/lib/libm.so.6"),
                                  Path("/usr/aarch64-linux-gnu/lib/libm.so.6")])
def test_version_needs_match_objdump(path):
    assert path.exists(), f"{path} is missing (Debian packages coreutils, libstdc++6, libc6-*-cross)"
    needs = elf.read(path)
    got = {v for vs in needs.versions.values() for v in vs if re.fullmatch(r"(GLIBC|GLIBCXX|CXXABI|GCC)_[0-9][0-9.]*", v)}
    assert got == _objdump_versions(path)
    assert needs.arch in ("x86_64", "armv7", "aarch64")


def test_newest_compares_versions_numerically():
    needs = elf.ElfNeeds(machine=62, needed=[], versions={"libc.so.6": ["GLIBC_2.9", "GLIBC_2.17", "GLIBC_2.2.5"],
                                                         "libstdc++.so.6": ["GLIBCXX_3.4.9", "GLIBCXX_3.4.21"]})
    assert needs.newest("GLIBC") == "2.17" and needs.newest("GLIBCXX") == "3.4.21" and needs.newest("GCC") is None


def test_a_non_elf_file_is_refused(tmp_path):
    (tmp_path / "x").write_text("not an elf")
    assert not elf.is_elf(tmp_path / "x")
    with pytest.raises(elf.NotElf):
        elf.read(tmp_path / "x")


def test_glibc_comparison_for_runtimes():
    assert floors.glibc_too_old("GLIBC_2.28", "2.27") and not floors.glibc_too_old("GLIBC_2.27", "2.27")
    assert not floors.glibc_too_old(None, "2.27") and floors.glibc_too_old("2.10", "2.9")
    assert floors.system_glibc() and floors.system_glibc()[0].isdigit()
