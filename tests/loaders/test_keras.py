"""Keras through the whole pipeline: .keras and .h5 files saved here from real Keras models, given in NCHW (Neo's
Keras rule), compiled for an x86 target and an ARM target (verified under qemu) against the Keras model's own output;
then what is refused, Lambda layers above all, without running them.

Each compile loads TensorFlow in the load sandbox (~10-20 s of imports), so the compiled cases are few and the
refusals that need no compile call the loader in this process."""
from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.need import need

need("tensorflow")
need("tf2onnx")

import neocompile
from neocompile import modelzoo
from neocompile.errors import InputConfigurationError
from neocompile.loaders.keras import KerasLoader
from neocompile.loaders.tensorflow import ROUTE_ONNX
from neocompile.targets import get_target
from tests import tf_models
from tests.tf_models import CNN_SHAPE, MLP_FEATURES, SIZE

# ml_c5's code needs AVX-512; where this CPU lacks it, ml_c4 (the same x86_64 path, AVX2) is compiled instead.
X86 = "ml_c5" if get_target("ml_c5").host_is_native() else "ml_c4"
NCHW = [1, 3, SIZE, SIZE]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> (model file, archive, DataInputConfig)."""
    tmp = tmp_path_factory.mktemp("keras")
    files = {
        "cnn-keras": (tmp / "cnn.keras", tf_models.cnn("input_1"), {"input_1": NCHW}),
        "mlp-h5": (tmp / "mlp.h5", tf_models.mlp(), {"features": [2, MLP_FEATURES]}),
        "cnn-h5": (tmp / "cnn.h5", tf_models.cnn("input_1"), {"input_1": NCHW}),
    }
    out = {}
    for name, (path, model, config) in files.items():
        data = tf_models.keras_file(model, path)
        out[name] = (path, modelzoo.write_archive(tmp / f"{name}.tar.gz", {path.name: data}), json.dumps(config))
    return out


def _compile(archive: Path, tmp_path: Path, config: str, target: str):
    result = neocompile.compile_model(str(archive), "KERAS", str(tmp_path / "out"), config, target_device=target)
    with tarfile.open(result.artifact_uri) as tar:
        meta = json.load(tar.extractfile("compiled.meta"))
    return result.verification, meta


CASES = [("cnn-keras", X86), ("cnn-keras", "rk3399"), ("mlp-h5", X86), ("mlp-h5", "rasp3b")]


@pytest.mark.parametrize("name,target", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_compiles_and_verifies_against_keras(built, tmp_path, name, target):
    _, archive, config = built[name]
    report, meta = _compile(archive, tmp_path, config, target)
    assert report["status"] == "passed", report
    assert report["mode"].startswith("native" if target == X86 else "emulated: qemu-")
    assert all(row["within_tolerance"] for row in report["outputs"])
    assert meta["Compilation"]["ImportRoute"] == ROUTE_ONNX
    assert meta["Compilation"]["Framework"] == "KERAS"
    # The package takes what DataInputConfig gave: NCHW for the image model, as Neo's Keras packages did.
    assert meta["Model"]["Inputs"][0]["shape"] == json.loads(config)[meta["Model"]["Inputs"][0]["name"]]


def test_the_package_input_is_nchw_and_computes_what_keras_computes_on_nhwc(built):
    """The loaded module's input is NCHW; the reference feeds Keras the same data transposed to NHWC."""
    import tensorflow as tf

    path, _, _ = built["cnn-h5"]
    loaded = KerasLoader().load(path, {"input_1": tuple(NCHW)}, {})
    assert [(s.name, s.shape) for s in loaded.inputs] == [("input_1", tuple(NCHW))]
    assert [(s.name, s.shape) for s in loaded.outputs] == [("probabilities", (1, 10))]
    x = np.random.default_rng(0).standard_normal(NCHW).astype("float32")
    model = tf.keras.models.load_model(str(path), compile=False)
    expected = model(np.transpose(x, (0, 2, 3, 1)), training=False).numpy()
    np.testing.assert_allclose(loaded.reference([x])[0], expected, rtol=1e-6)


# -- DataInputConfig: Neo's Keras rule -------------------------------------------------------------------------------
def test_a_shape_given_in_nhwc_is_refused_with_neos_error(built, tmp_path):
    _, archive, _ = built["cnn-keras"]
    with pytest.raises(InputConfigurationError) as info:
        neocompile.compile_model(str(archive), "KERAS", str(tmp_path / "out"), {"input_1": list(CNN_SHAPE)},
                                 target_device=X86)
    message = str(info.value)
    assert message.startswith("InputConfiguration: Input input_1 has wrong shape in Input Shape dictionary. "
                              f"Input shapes should be provided in NCHW format. For example, (None,3,{SIZE},{SIZE})")
    assert f"NHWC (None,{SIZE},{SIZE},3)" in message


def test_an_input_layer_left_out_is_refused(built):
    path, _, _ = built["cnn-keras"]
    with pytest.raises(InputConfigurationError, match="no shape for model input 'input_1'"):
        KerasLoader().load(path, {}, {})
    with pytest.raises(InputConfigurationError, match="'data'.*Model inputs: input_1"):
        KerasLoader().load(path, {"data": tuple(NCHW)}, {})


# -- the archive's files ---------------------------------------------------------------------------------------------
def test_two_model_files_are_refused_with_neos_text(built, tmp_path):
    files = {"a.h5": built["mlp-h5"][0].read_bytes(), "b.keras": built["cnn-keras"][0].read_bytes()}
    with pytest.raises(InputConfigurationError, match=r"Multiple h5 files provided, \['a.h5', 'b.keras'\], when only one is allowed"):
        neocompile.compile_model(str(modelzoo.write_archive(tmp_path / "two.tar.gz", files)), "KERAS",
                                 str(tmp_path / "out"), None, target_device=X86)


def test_a_saved_model_given_as_keras_is_pointed_to_tensorflow(tmp_path):
    files = {"m/saved_model.pb": b"", "m/variables/variables.index": b""}
    with pytest.raises(InputConfigurationError, match="No h5 file provided.*Framework TENSORFLOW"):
        neocompile.compile_model(str(modelzoo.write_archive(tmp_path / "sm.tar.gz", files)), "KERAS",
                                 str(tmp_path / "out"), None, target_device=X86)


def test_a_weights_only_h5_says_how_to_save_the_model(tmp_path):
    path = tmp_path / "w.weights.h5"
    tf_models.mlp().save_weights(str(path))
    path = path.rename(tmp_path / "w.h5")
    with pytest.raises(InputConfigurationError, match="weights only.*model.save"):
        KerasLoader().load(path, {"features": (1, MLP_FEATURES)}, {})


# -- nothing from the file runs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_lambda_layer_is_refused_without_running_its_code(tmp_path, suffix):
    marker = tmp_path / "lambda-ran"
    path = tmp_path / f"lambda{suffix}"
    tf_models.keras_file(tf_models.lambda_model(marker), path)
    marker.unlink()  # Keras ran the lambda once while building the model
    with pytest.raises(InputConfigurationError) as info:
        KerasLoader().load(path, {"x": (1, 4)}, {})
    assert "Lambda layer 'doubled'" in str(info.value) and "refuses without running it" in str(info.value)
    assert not marker.exists()


def test_a_lambda_layer_is_refused_in_the_pipeline(tmp_path):
    marker = tmp_path / "lambda-ran"
    data = tf_models.keras_file(tf_models.lambda_model(marker), tmp_path / "lambda.keras")
    marker.unlink()
    with pytest.raises(InputConfigurationError, match=r"Lambda layer 'doubled'.*Keras safe_mode"):
        neocompile.compile_model(str(modelzoo.write_archive(tmp_path / "l.tar.gz", {"model.keras": data})), "KERAS",
                                 str(tmp_path / "out"), {"x": [1, 4]}, target_device=X86)
    assert not marker.exists()


def _with_config(source: Path, target: Path, edit) -> Path:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    return target


def test_objects_from_other_modules_are_refused_before_keras_reads_the_file(built, tmp_path):
    def os_system(config):
        layer = config["config"]["layers"][1]
        layer["module"], layer["class_name"] = "os", "system"

    path = _with_config(built["cnn-keras"][0], tmp_path / "hostile.keras", os_system)
    with pytest.raises(InputConfigurationError, match="module 'os'"):
        KerasLoader().load(path, {"input_1": tuple(NCHW)}, {})

    def get_file(config):
        config["config"]["layers"][1]["config"]["kernel_initializer"] = {
            "module": "keras.utils", "class_name": "get_file", "config": {"origin": "http://example.invalid/x"}}

    path = _with_config(built["cnn-keras"][0], tmp_path / "fetch.keras", get_file)
    with pytest.raises(InputConfigurationError, match="module 'keras.utils'"):
        KerasLoader().load(path, {"input_1": tuple(NCHW)}, {})


def test_custom_registered_objects_are_refused(built, tmp_path):
    def custom(config):
        config["config"]["layers"][1]["registered_name"] = "my_package>MyConv"

    path = _with_config(built["cnn-keras"][0], tmp_path / "custom.keras", custom)
    with pytest.raises(InputConfigurationError, match="custom object 'my_package>MyConv'"):
        KerasLoader().load(path, {"input_1": tuple(NCHW)}, {})
