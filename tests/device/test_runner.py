"""Run TVM-compiled libraries through the package runner, natively (x86_64) and under qemu-user (ARM).

Real tools only: a missing zig, qemu or TVM runtime makes these tests fail with the reason.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from neocompile.device import elf, runner as emulate, toolchain
from neocompile.device.tvm_runtime import ARCHES, build_spec, runtime_libraries, runtime_versions
from neocompile.errors import CompilationError, VerificationError
from neocompile.targets import get_target


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory) -> Path:
    """A small CNN: Conv(3->8, 3x3, pad 1) + Relu + GlobalAveragePool + Flatten + MatMul(8->10), dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    W = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "W")
    B = numpy_helper.from_array(rng.standard_normal((8,)).astype(np.float32), "B")
    W2 = numpy_helper.from_array(rng.standard_normal((8, 10)).astype(np.float32), "W2")
    nodes = [
        helper.make_node("Conv", ["data", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "W2"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes, "small",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 10])],
        [W, B, W2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("model") / "small.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def relax_mod(small_onnx):
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    return from_onnx(onnx.load(str(small_onnx)), {"data": [1, 3, 32, 32]}, keep_params_in_input=False)


def _require_tools(target) -> None:
    if target.arch != "x86_64":
        missing = [t for t in (target.emulator["command"],) if shutil.which(t) is None]
        assert not missing, f"{target.name} needs {missing} on PATH: install Debian package {target.emulator.get('package')}"


def _compile(relax_mod, target, out_dir: Path) -> Path:
    import tvm

    exe = tvm.compile(relax_mod, target.tvm_target())
    path = out_dir / f"{target.name}.so"
    exe.export_library(str(path), fcompile=toolchain.linker(target))
    return path


def _best_native_x86() -> str:
    from neocompile.targets import all_targets

    native = [t for t in all_targets().values() if t.arch == "x86_64" and t.accelerator is None and t.host_is_native()]
    assert native, "no x86_64 registry device runs natively on this CPU"
    return max(native, key=lambda t: (len(t.cpu.get("host_features") or []), t.name)).name


@pytest.mark.parametrize("device", ["rk3399", "native-x86"])
def test_run_library_matches_onnxruntime(device, small_onnx, relax_mod, tmp_path):
    import onnxruntime as ort

    target = get_target(_best_native_x86() if device == "native-x86" else device)
    _require_tools(target)
    ok, why = emulate.can_emulate(target)
    assert ok, f"cannot run {device} here: {why}"

    lib = _compile(relax_mod, target, tmp_path)
    x = np.random.default_rng(1).random((1, 3, 32, 32), dtype=np.float32)
    outputs = emulate.run_library(lib, target, [x])
    ref = ort.InferenceSession(str(small_onnx), providers=["CPUExecutionProvider"]).run(None, {"data": x})[0]

    assert len(outputs) == 1
    assert outputs[0].shape == ref.shape == (1, 10)
    assert outputs[0].dtype == np.float32
    err = float(np.abs(outputs[0] - ref).max())
    assert err < 1e-4, f"{device}: max abs error {err}"


@pytest.mark.parametrize("arch", ARCHES)
def test_runtime_folder_is_built_for_the_architecture_and_its_glibc_floor(arch):
    libs = runtime_libraries(arch)
    assert libs == runtime_libraries(arch)  # cached
    spec = build_spec(arch)
    assert runtime_versions()["tvm"] in str(libs) and f"glibc{spec['glibc']}" in libs.name
    for name in ("libtvm_runtime.so", "libtvm_ffi.so", "libtvm_runtime_extra.so"):
        needs = elf.read(libs / name)
        assert needs.arch == arch, f"{name} is not an {arch} ELF"
        # libc++ is linked in: no libstdc++ on the device is needed, and nothing above the glibc floor.
        assert not any(n.startswith(("libstdc++", "libgcc_s")) for n in needs.needed), needs.needed
        assert needs.newest("GLIBCXX") is None
        assert elf.version_key(needs.newest("GLIBC")) <= elf.version_key(spec["glibc"]), needs.versions
    assert "libtvm_ffi.so" in elf.read(libs / "libtvm_runtime.so").needed


def test_a_missing_zig_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ziglang", None)
    toolchain.zig_executable.cache_clear()
    try:
        with pytest.raises(CompilationError, match="zig toolchain is not installed.*ziglang"):
            toolchain.zig_executable()
    finally:
        toolchain.zig_executable.cache_clear()


def test_driver_failure_raises_verification_error(tmp_path):
    target = get_target("rk3399")
    _require_tools(target)
    bogus = tmp_path / "not_a_model.so"
    src = tmp_path / "f.c"
    src.write_text("int f(void) { return 1; }\n")
    toolchain.linker(target)(str(bogus), [str(src)])
    with pytest.raises(VerificationError) as info:
        emulate.run_library(bogus, target, [np.zeros((1,), np.float32)])
    assert "rk3399" in str(info.value)
    assert "neo_run" in str(info.value)  # the driver's stderr is in the message


def test_tuple_outputs_and_integer_dtypes(tmp_path):
    """Two inputs (float32, int64) and three outputs (float32, int64, int64) through the emulated driver."""
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from tvm.relax.frontend.onnx import from_onnx

    nodes = [
        helper.make_node("Relu", ["x"], ["relu"]),
        helper.make_node("ArgMax", ["x"], ["argmax"], axis=1, keepdims=0),
        helper.make_node("Add", ["k", "k"], ["twice"]),
    ]
    graph = helper.make_graph(
        nodes, "multi",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [2, 5])],
        [helper.make_tensor_value_info("relu", TensorProto.FLOAT, [2, 5]),
         helper.make_tensor_value_info("argmax", TensorProto.INT64, [2]),
         helper.make_tensor_value_info("twice", TensorProto.INT64, [2, 5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    target = get_target("rk3399")
    _require_tools(target)
    lib = _compile(from_onnx(model, {"x": [2, 5], "k": [2, 5]}), target, tmp_path)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5)).astype(np.float32)
    k = rng.integers(-(2**40), 2**40, (2, 5), dtype=np.int64)
    outputs = emulate.run_library(lib, target, [x, k])
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x, "k": k})
    assert [o.dtype for o in outputs] == [np.float32, np.int64, np.int64]
    for got, want in zip(outputs, ref):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("device", ["rasp3b", "rk3288"])
def test_armv7_cross_built_runtime(device, small_onnx, relax_mod, tmp_path):
    """armv7 has no wheel: the runtime is built from the wheels' C++ sources like every architecture's."""
    import onnxruntime as ort

    target = get_target(device)
    _require_tools(target)
    libs = runtime_libraries("armv7")
    for name in ("libtvm_runtime.so", "libtvm_ffi.so"):
        assert elf.read(libs / name).arch == "armv7", f"{name} is not an ARM ELF"
    ok, why = emulate.can_emulate(target)
    assert ok, why
    lib = _compile(relax_mod, target, tmp_path)
    x = np.random.default_rng(3).random((1, 3, 32, 32), dtype=np.float32)
    out = emulate.run_library(lib, target, [x])
    ref = ort.InferenceSession(str(small_onnx), providers=["CPUExecutionProvider"]).run(None, {"data": x})[0]
    err = float(np.abs(out[0] - ref).max())
    assert err < 1e-4, f"{device}: max abs error {err}"


def test_x86_code_for_cpu_features_this_host_lacks_is_not_run():
    import dataclasses

    target = get_target("ml_c5")
    from neocompile.targets import cpu_flags

    present = sorted(cpu_flags())[0]  # a flag this CPU has: only the missing one may be named
    future = dataclasses.replace(target, name="future_x86", cpu=dict(target.cpu, host_features=[present, "no_such_flag"]))
    ok, why = emulate.can_emulate(future, fetch=False)
    assert not ok and "needs CPU features ['no_such_flag'] that this" in why and "qemu-user cannot emulate them" in why
