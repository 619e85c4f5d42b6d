"""TFLite models as TensorFlow's converter writes them, through the whole pipeline: each compiled for an x86 target
and an ARM target (verified under qemu) and verified against the TFLite interpreter; the loader's names, shapes and
errors on their own."""
from __future__ import annotations

import json
import sys
import tarfile

import numpy as np
import pytest

import neocompile
from neocompile import modelzoo
from neocompile.errors import InputConfigurationError
from neocompile.loaders import get_loader
from neocompile.loaders.tflite import ROUTE, interpreter_class
from neocompile.targets import get_target
from tests import tflite_models
from tests.need import need

need("tensorflow")
need("tflite")

# ml_c5's code needs AVX-512; where this CPU lacks it, ml_c4 (the same x86_64 path, AVX2) is compiled and verified
# natively instead, so that every job here is verified rather than skipped.
X86 = "ml_c5" if get_target("ml_c5").host_is_native() else "ml_c4"
SIZE = tflite_models.SIZE
CNN_CONFIG = f'{{"input": [1, {SIZE}, {SIZE}, 3]}}'


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (.tflite path, model.tar.gz); built once (TensorFlow's import and the converter take ~10 s)."""
    tmp = tmp_path_factory.mktemp("tflite")
    out = {}
    for name, build in tflite_models.BUILDERS.items():
        data = build()
        (tmp / f"{name}.tflite").write_bytes(data)
        out[name] = (tmp / f"{name}.tflite", modelzoo.write_archive(tmp / f"{name}.tar.gz", {"model.tflite": data}))
    return out


def _compile(archive, tmp_path, target, config=None):
    result = neocompile.compile_model(str(archive), "TFLITE", str(tmp_path / "out"), config, target_device=target)
    with tarfile.open(result.artifact_uri) as tar:
        meta = json.load(tar.extractfile("compiled.meta"))
    return result.verification, meta


def _compiled_x86(loaded):
    """The loaded module compiled in this process for this CPU: a callable on a list of arrays."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.compile(loaded.mod, target="llvm"), tvm.cpu())

    def run(arrays):
        out = vm["main"](*[tvm.runtime.tensor(a) for a in arrays])
        return [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]

    return run


def test_the_models_hold_the_constructs_the_converter_writes(models):
    ops = {name: tflite_models.operators(path.read_bytes()) for name, (path, _) in models.items()}
    # BatchNorm after a conv is folded into it; the one after the pool stays as MUL + ADD.
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "PAD", "STRIDED_SLICE", "MUL", "ADD", "MAX_POOL_2D"} <= ops["cnn"]
    assert ops["cnn-int8"] == ops["cnn"]  # the same graph, every operator on int8 tensors
    assert "QUANTIZE" in ops["cnn-uint8"]  # uint8 I/O: the converter requantizes to int8 at the edges
    assert ops["mlp"] == {"FULLY_CONNECTED", "TANH"}
    assert {"TRANSPOSE", "STRIDED_SLICE", "PAD", "TILE", "CONCATENATION"} <= ops["moves-int8"]


def test_tvms_frontend_alone_refuses_the_quantized_data_movement_operators(models):
    """What neocompile.loaders.tflite_ops is for: without it the quantized models fail to import."""
    import tflite
    from tvm.relax.frontend.tflite import from_tflite

    for name in ("cnn-int8", "moves-int8"):
        with pytest.raises(Exception, match="quantized TFLite operators are not supported.*'PAD'"):
            from_tflite(tflite.Model.GetRootAsModel(models[name][0].read_bytes(), 0))


# (model, ARM target, precision it verifies with, input dtype). The ARM targets alternate between armv7 and aarch64.
CASES = [
    ("cnn", "rasp3b", "float32", "float32"),
    ("mlp", "rk3399", "float32", "float32"),
    ("cnn-int8", "rk3399", "int8", "int8"),
    ("cnn-uint8", "rasp3b", "int8", "uint8"),
]


@pytest.mark.parametrize("name,arm,precision,dtype", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("where", ["x86", "arm"])
def test_compiles_and_verifies_against_the_tflite_interpreter(models, tmp_path, name, arm, precision, dtype, where):
    report, meta = _compile(models[name][1], tmp_path, X86 if where == "x86" else arm)
    assert report["status"] == "passed", report
    assert report["mode"].startswith("native" if where == "x86" else "emulated: qemu-")
    assert report["tolerance"].startswith("default for " + precision)
    assert all(row["within_tolerance"] for row in report["outputs"])
    assert meta["Compilation"]["ImportRoute"] == ROUTE and meta["Verification"]["status"] == "passed"
    assert meta["Compilation"]["SourceFrameworkVersion"].startswith("TFLite schema v3")
    (inp,) = meta["Model"]["Inputs"]
    assert inp["dtype"] == dtype and inp["name"] == ("serving_default_features" if name == "mlp" else "serving_default_input")
    assert meta["Model"]["Outputs"][0]["dtype"] == dtype


@pytest.mark.parametrize("name", ["cnn-int8", "cnn-uint8", "moves-int8"])
def test_quantized_models_match_the_interpreter_over_the_whole_integer_range(models, name):
    """Verification's seeded inputs are small non-negative integers; here inputs cover the whole int8/uint8 range.
    TVM lowers each quantized operator to dequantize -> float op -> quantize, TFLite uses integer kernels: allow
    one quantum of the output (in fact they agree exactly on these models)."""
    loaded = get_loader("TFLITE").load(models[name][0], None, {})
    assert loaded.precision == "int8"
    run = _compiled_x86(loaded)
    rng = np.random.default_rng(7)
    info = np.iinfo(loaded.inputs[0].dtype)
    for _ in range(10):
        x = rng.integers(info.min, info.max + 1, loaded.inputs[0].shape).astype(loaded.inputs[0].dtype)
        (got,), (want,) = run([x]), loaded.reference([x])
        assert got.dtype == want.dtype and np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_inputs_are_named_without_0_and_may_be_given_by_any_of_their_names(models):
    path = models["cnn"][0]
    loader = get_loader("tflite")
    shape = (1, tflite_models.SIZE, tflite_models.SIZE, 3)
    for key in ("serving_default_input", "serving_default_input:0", "input"):
        loaded = loader.load(path, {key: shape}, {})
        assert [(i.name, i.dtype, i.shape) for i in loaded.inputs] == [("serving_default_input", "float32", shape)]
        assert loaded.data_input_config == {"serving_default_input": list(shape)}
    loaded = loader.load(path, None, {})  # static shapes may be left out
    assert loaded.inputs[0].shape == shape and loaded.precision == "float32"
    assert [str(p.name) for p in loaded.mod["main"].params] == ["serving_default_input:0"]  # weights bound
    assert "params" not in loaded.mod["main"].attrs  # the frontend's second copy of the weights is dropped


def test_the_reference_falls_back_to_tensorflows_interpreter_with_the_same_outputs(models, monkeypatch):
    loaded = get_loader("TFLITE").load(models["cnn-int8"][0], None, {})
    x = np.random.default_rng(3).integers(-128, 128, loaded.inputs[0].shape).astype(np.int8)
    (litert,) = loaded.reference([x])
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # not installed
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    assert "tensorflow" in interpreter_class().__module__
    (tf_lite,) = loaded.reference([x])
    np.testing.assert_array_equal(litert, tf_lite)


def test_a_dynamic_batch_may_be_given_and_the_reference_resizes(models):
    loaded = get_loader("TFLITE").load(models["mlp"][0], {"features": (5, tflite_models.MLP_FEATURES)}, {})
    assert loaded.inputs[0].shape == (5, tflite_models.MLP_FEATURES) and loaded.outputs[0].shape == (5, 4)
    x = np.random.default_rng(0).standard_normal((5, tflite_models.MLP_FEATURES)).astype(np.float32)
    (got,), (want,) = _compiled_x86(loaded)([x]), loaded.reference([x])
    assert want.shape == (5, 4) and np.abs(got - want).max() < 1e-5


def test_an_nchw_shape_is_refused_stating_the_nhwc_rule(models, tmp_path):
    with pytest.raises(InputConfigurationError) as err:
        _compile(models["cnn"][1], tmp_path, X86, f'{{"input": [1, 3, {SIZE}, {SIZE}]}}')
    message = str(err.value)
    assert f"got [1, 3, {SIZE}, {SIZE}]" in message and "Input shapes should be provided in NHWC format" in message
    assert f'For example, {{"serving_default_input": [1, {SIZE}, {SIZE}, 3]}}' in message


def test_an_unknown_input_name_lists_the_names_accepted(models):
    with pytest.raises(InputConfigurationError, match=r"names input\(s\) 'data'.*Model inputs: serving_default_input"
                       rf"\[1, {SIZE}, {SIZE}, 3\] \(also accepted: serving_default_input:0, input\)"):
        get_loader("TFLITE").load(models["cnn"][0], {"data": (1, SIZE, SIZE, 3)}, {})


@pytest.mark.parametrize("files,found", [
    ({"readme.txt": b"no model"}, "Found 0: none"),
    ({"a.tflite": b"x", "b.tflite": b"y"}, "Found 2: a.tflite, b.tflite"),
])
def test_the_archive_must_hold_exactly_one_tflite_file(tmp_path, files, found):
    archive = modelzoo.write_archive(tmp_path / "model.tar.gz", files)
    with pytest.raises(InputConfigurationError, match=f"Exactly one .tflite file is allowed for TFLITE models. {found}"):
        _compile(archive, tmp_path, X86, CNN_CONFIG)


def test_a_file_that_is_not_a_flatbuffer_is_refused(tmp_path):
    onnx_bytes = modelzoo.small_cnn(size=8).SerializeToString()
    archive = modelzoo.write_archive(tmp_path / "model.tar.gz", {"model.tflite": onnx_bytes})
    with pytest.raises(InputConfigurationError, match=r"Unable to load TFLite model model.tflite: it is not a TFLite "
                                                      r"flatbuffer \(expected the file identifier 'TFL3' at bytes 4-8"):
        _compile(archive, tmp_path, X86, CNN_CONFIG)


def test_a_truncated_flatbuffer_is_reported_not_crashed(models, tmp_path):
    path = tmp_path / "cut.tflite"
    path.write_bytes(models["cnn"][0].read_bytes()[:64])
    with pytest.raises(InputConfigurationError, match="Unable to load TFLite model cut.tflite: the flatbuffer is damaged"):
        get_loader("TFLITE").load(path, None, {})


def test_dynamic_range_quantization_fails_naming_the_route(tmp_path):
    """int8 weights with float activations: TVM's frontend has no path for it; the error says what to do."""
    path = tmp_path / "dynamic-range.tflite"
    path.write_bytes(tflite_models.dynamic_range())
    with pytest.raises(InputConfigurationError, match=r"TVM cannot convert TFLITE model: OpNotImplemented: .*"
                                                      r"dynamic range quantization.*full integer quantization.*"
                                                      r"route tried: tflite -> tvm.relax.frontend.tflite"):
        get_loader("TFLITE").load(path, None, {})
