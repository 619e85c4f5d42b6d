"""The weights live in compiled.params beside compiled.so, written once; Model and neo_run load them, older packages
with embedded weights still run, and a damaged or missing weights file is a clear error naming it."""
from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest

import neocompile
from neocompile import modelzoo, params
from neocompile.errors import PackageError, VerificationError
from neocompile.runtime import Model

CLASSES = 8192  # a 32 x 8192 dense layer: 1 MiB of weights against ~100 KB of code


@pytest.fixture(scope="module")
def model_proto():
    return modelzoo.small_cnn(num_classes=CLASSES, size=16, batch=1)


@pytest.fixture(scope="module")
def package(model_proto, tmp_path_factory) -> Path:
    """A compiled, verified package for this machine, unpacked."""
    tmp = tmp_path_factory.mktemp("params")
    archive = modelzoo.onnx_archive(tmp / "model.tar.gz", model_proto)
    result = neocompile.compile_model(str(archive), "ONNX", str(tmp / "out"), {"data": [1, 3, 16, 16]},
                                      target_device="ml_c4")
    assert result.verification["status"] == "passed", result.verification
    folder = tmp / "package"
    with tarfile.open(result.artifact_uri) as tar:
        tar.extractall(folder, filter="data")
    return folder


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def expected(model_proto, x):
    import onnxruntime as ort

    return ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"data": x})[0]


def _copy(package: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(package, folder)
    return folder


def _neo_run(folder: Path, x: np.ndarray) -> np.ndarray:
    from neocompile.device import runner
    from neocompile.targets import get_target

    return runner.run_library(folder / "compiled.so", get_target("ml_c4"), [x], package_dir=folder)[0]


def test_the_package_keeps_its_weights_out_of_the_library(package):
    meta = json.loads((package / "compiled.meta").read_text())
    weights = meta["Model"]["Weights"]
    assert weights["Storage"] == "external" and weights["File"] == "compiled.params"
    assert weights["Parameters"]["main"] >= 1 and weights["Bytes"] >= 32 * CLASSES * 4
    assert "compiled.params" in meta["Files"]  # digested like every other file
    library, weights_file = (package / "compiled.so").stat().st_size, (package / "compiled.params").stat().st_size
    assert weights_file >= weights["Bytes"]
    assert library < weights["Bytes"] / 4, f"compiled.so is {library} bytes for {weights['Bytes']} bytes of weights"


def test_model_and_neo_run_agree_with_the_source_framework(package, x, expected):
    got = Model(package).run(x)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_neo_run(package, x), got, rtol=1e-5, atol=1e-6)


def test_an_older_package_with_embedded_weights_still_runs(package, model_proto, x, expected, tmp_path):
    """A library linked with its weights inside (how packages were built before), no compiled.params, no Weights."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from neocompile.device import toolchain
    from neocompile.targets import get_target

    folder = _copy(package, tmp_path)
    target = get_target("ml_c4")
    mod = from_onnx(model_proto, {"data": [1, 3, 16, 16]}, keep_params_in_input=False)
    with tvm.target.Target(target.target_dict({})) as tvm_target:
        tvm.compile(mod, tvm_target).export_library(str(folder / "compiled.so"), fcompile=toolchain.linker(target))
    (folder / "compiled.params").unlink()
    meta = json.loads((folder / "compiled.meta").read_text())
    del meta["Model"]["Weights"]
    (folder / "compiled.meta").write_text(json.dumps(meta))
    assert (folder / "compiled.so").stat().st_size > 32 * CLASSES * 4  # the weights are inside

    np.testing.assert_allclose(Model(folder).run(x)[0], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_neo_run(folder, x), expected, rtol=1e-4, atol=1e-5)


def test_a_missing_weights_file_is_refused_naming_it(package, x, tmp_path):
    folder = _copy(package, tmp_path)
    (folder / "compiled.params").unlink()
    with pytest.raises(PackageError, match=r"compiled\.params: the package's weights file is missing"):
        Model(folder)
    with pytest.raises(VerificationError, match=r"compiled\.params: the package's weights file is missing"):
        _neo_run(folder, x)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_weights_file_is_refused_naming_it(package, x, tmp_path, damage):
    folder = _copy(package, tmp_path)
    path = folder / "compiled.params"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a params file" * 64)
    with pytest.raises(PackageError, match=r"compiled\.params: not a readable weights file"):
        Model(folder)
    with pytest.raises(VerificationError, match=r"compiled\.params: not a readable weights file"):
        _neo_run(folder, x)


def test_weights_of_another_shape_are_refused_when_called(package, x, tmp_path):
    """A weights file that parses but does not fit the model (not one the compile wrote) fails the call, not memory."""
    import tvm

    folder = _copy(package, tmp_path)
    table = dict(tvm.runtime.load_param_dict_from_file(str(folder / "compiled.params")).items())
    name = max(table, key=lambda k: int(np.prod(table[k].shape)))
    table[name] = tvm.runtime.tensor(np.zeros((1,) * len(table[name].shape), np.float32))
    tvm.runtime.save_param_dict_to_file(table, str(folder / "compiled.params"))
    with pytest.raises(Exception, match=r"Mismatched|shape"):
        Model(folder).run(x)


def test_small_constants_stay_in_the_library_and_names_follow_parameter_order(tmp_path):
    from tvm.relax.frontend.onnx import from_onnx

    from neocompile.compiler import compile_library
    from neocompile.targets import get_target

    mod = from_onnx(modelzoo.small_cnn(size=16, batch=1), {"data": [1, 3, 16, 16]}, keep_params_in_input=False)
    compiled = compile_library(mod, get_target("ml_c4"), {}, tmp_path / "m.so")
    assert compiled.params == tmp_path / "m.params" == params.params_path(compiled.path)
    count = compiled.weights["Parameters"]["main"]
    weights = params.load(compiled.path)
    assert len(weights) == count
    assert all(int(np.prod(w.shape)) * 4 >= params.MIN_BYTES for w in weights)  # the 10-float bias stayed inside


def test_cpu_kernels_off_lifts_the_weights_too(tmp_path, model_proto, x, expected):
    from tvm.relax.frontend.onnx import from_onnx

    from neocompile.compiler import compile_library
    from neocompile.runtime import run_library
    from neocompile.targets import get_target

    mod = from_onnx(model_proto, {"data": [1, 3, 16, 16]}, keep_params_in_input=False)
    compiled = compile_library(mod, get_target("ml_c4"), {"cpu-kernels": False}, tmp_path / "m.so")
    assert compiled.weights["Storage"] == "external"
    assert compiled.path.stat().st_size < 32 * CLASSES * 4 / 4
    np.testing.assert_allclose(run_library(compiled.path, [x])[0], expected, rtol=1e-4, atol=1e-5)


def test_an_accelerator_package_keeps_its_weights_embedded(tmp_path):
    """A GPU's weights would have to be placed on its device by the caller: they stay in the library there."""
    from tvm.relax.frontend.onnx import from_onnx

    from neocompile.compiler import compile_library
    from neocompile.targets import get_target

    mod = from_onnx(modelzoo.small_cnn(size=16, batch=1), {"data": [1, 3, 16, 16]}, keep_params_in_input=False)
    compiled = compile_library(mod, get_target("ml_p3"), {}, tmp_path / "m.so")
    assert compiled.params is None and not (tmp_path / "m.params").exists()
    assert compiled.weights["Storage"] == "embedded"
