"""Every registry device compiles and links for real with its own toolchain."""
from __future__ import annotations


import onnx
import pytest

from neocompile import modelzoo
from neocompile.compiler import check_cpu, compile_library
from neocompile.device import elf
from neocompile.errors import CompilationError
from neocompile.loaders import get_loader
from neocompile.targets import all_targets, get_target

ELF_MACHINE = {"x86_64": 62, "aarch64": 183, "armv7": 40}


@pytest.fixture(scope="module")
def small_mod(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "m.onnx"
    onnx.save(modelzoo.small_cnn(size=16), path)
    return get_loader("ONNX").load(path, {"data": (1, 3, 16, 16)}, {}).mod


@pytest.mark.parametrize("name", sorted(all_targets()))
def test_every_device_compiles_and_links_for_its_architecture(small_mod, tmp_path, name):
    target = get_target(name)
    lib = compile_library(small_mod, target, {}, tmp_path / "compiled.so")
    head = lib.path.read_bytes()[:64]
    assert head[:4] == b"\x7fELF"
    assert int.from_bytes(head[18:20], "little") == ELF_MACHINE[target.arch]
    if target.arch == "armv7":
        assert int.from_bytes(head[36:40], "little") & 0x400, "armv7 library must use the hard-float ABI"
    # Linked by zig against the device's own glibc floor, with no C++ runtime needed.
    needs = elf.read(lib.path)
    glibc = needs.newest("GLIBC")  # None: no versioned libc symbol needed at all
    assert glibc is None or elf.version_key(glibc) <= elf.version_key(target.glibc_floor)
    assert needs.newest("GLIBCXX") is None and not any(n.startswith("libstdc++") for n in needs.needed)
    if target.accelerator is None:
        assert lib.device_code == "none" and lib.needs == []
    else:
        assert lib.device_code.endswith("-source") and lib.needs  # stated plainly in the manifest


def test_mcpu_option_reaches_the_generated_code(small_mod, tmp_path):
    target = get_target("rk3399")
    lib = compile_library(small_mod, target, {"mcpu": "cortex-a72"}, tmp_path / "c.so")
    assert lib.target["mcpu"] == "cortex-a72"


def test_an_unknown_cpu_is_a_compilation_error_naming_the_target():
    with pytest.raises(CompilationError, match="mcpu: 'no-such-cpu' is not a CPU LLVM knows for x86_64-linux-gnu \\(ml_c5\\); expected one of .*skylake-avx512"):
        check_cpu(get_target("ml_c5"), {"mcpu": "no-such-cpu"})


def test_a_failed_link_leaves_no_weights_file_behind(small_mod, tmp_path, monkeypatch):
    """The weights are written before the build (so LLVM runs without them in memory); when the link then fails,
    the job's error names the link and neither the library nor a stray ``compiled.params`` is left."""
    from neocompile.device import toolchain

    def broken(target):
        def fcompile(output, objects, options=None):
            raise RuntimeError("zig: linker crashed")
        return fcompile

    monkeypatch.setattr(toolchain, "linker", broken)
    with pytest.raises(CompilationError, match="Linking the compiled model for ml_c4 failed: zig: linker crashed"):
        compile_library(small_mod, get_target("ml_c4"), {}, tmp_path / "compiled.so")
    assert sorted(p.name for p in tmp_path.iterdir()) == [], list(tmp_path.iterdir())
