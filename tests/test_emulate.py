"""Run TVM-compiled libraries through neocompile.emulate, natively (x86_64) and under qemu-user (aarch64).

Real tools only: a missing cross compiler, qemu or TVM runtime makes these tests fail with the reason.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from neocompile import emulate
from neocompile.errors import NeoError, VerificationError
from neocompile.runtime_libs import RuntimeUnavailable, elf_info, runtime_libraries, runtime_versions
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
    missing = [tool for tool in (target.cross_compiler,) if shutil.which(tool) is None]
    if target.arch != "x86_64":
        missing += [t for t in (target.emulator["command"],) if shutil.which(t) is None]
    assert not missing, (
        f"{target.name} needs {missing} on PATH: install Debian packages {target.toolchain_package} "
        f"and {target.emulator.get('package')}"
    )


def _compile(relax_mod, target, out_dir: Path) -> Path:
    import tvm
    from tvm.support import cc

    exe = tvm.compile(relax_mod, target.tvm_target())
    path = out_dir / f"{target.name}.so"
    exe.export_library(str(path), fcompile=cc.cross_compiler(target.cross_compiler))
    return path


@pytest.mark.parametrize("device", ["rk3399", "ml_c5"])
def test_run_library_matches_onnxruntime(device, small_onnx, relax_mod, tmp_path):
    import onnxruntime as ort

    target = get_target(device)
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


def test_runtime_folder_is_complete_for_aarch64():
    libs = runtime_libraries("aarch64")
    assert libs == runtime_libraries("aarch64")  # cached
    versions = runtime_versions()
    assert versions["tvm"] in str(libs)
    for name in ("libtvm_runtime.so", "libtvm_ffi.so"):
        machine, needed = elf_info(libs / name)
        assert machine == 183, f"{name} is not an aarch64 ELF"
    assert "libtvm_ffi.so" in elf_info(libs / "libtvm_runtime.so")[1]


def test_armv7_runtime_is_unavailable(tmp_path, monkeypatch):
    # A fresh cache, so a runtime cross-built earlier by build_armv7_runtime() does not hide the error.
    monkeypatch.setenv("NEOCOMPILE_CACHE", str(tmp_path))
    with pytest.raises(RuntimeUnavailable) as info:
        runtime_libraries("armv7")
    assert isinstance(info.value, NeoError)
    assert "armv7" in str(info.value)
    assert "wheel" in str(info.value)
    ok, why = emulate.can_emulate(get_target("rasp3b"))
    assert not ok and "armv7" in why


def test_driver_failure_raises_verification_error(tmp_path):
    target = get_target("rk3399")
    _require_tools(target)
    bogus = tmp_path / "not_a_model.so"
    subprocess.run([target.cross_compiler, "-shared", "-fPIC", "-x", "c++", "-", "-o", str(bogus)],
                   input=b"extern \"C\" int f() { return 1; }\n", check=True)
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
    """armv7 has no wheel: the runtime is cross-built from the wheels' C++ sources (about 2.5 min once, then cached)."""
    import onnxruntime as ort

    target = get_target(device)
    _require_tools(target)
    libs = runtime_libraries("armv7", build_missing=True)
    for name in ("libtvm_runtime.so", "libtvm_ffi.so"):
        assert elf_info(libs / name)[0] == 40, f"{name} is not an ARM ELF"
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
    future = dataclasses.replace(target, name="future_x86", cpu=dict(target.cpu, host_features=["avx512f", "no_such_flag"]))
    ok, why = emulate.can_emulate(future, fetch=False)
    assert not ok and "needs CPU features ['no_such_flag'] that this" in why and "qemu-user cannot emulate them" in why
