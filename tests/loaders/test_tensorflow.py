"""TensorFlow through the whole pipeline: SavedModels and frozen GraphDefs built here from real TF models, compiled for
an x86 target and an ARM target (verified under qemu) against TensorFlow's own outputs; then what is refused.

Each compile loads TensorFlow in the load sandbox (~10-20 s of imports), so the cases are few and the refusals that
need no compile call the loader in this process."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tests.need import need

need("tensorflow")
need("tf2onnx")

import neocompile
from neocompile import modelzoo
from neocompile.errors import InputConfigurationError
from neocompile.loaders.tensorflow import (
    CHECKPOINTS,
    MANY_GRAPHS,
    MANY_SAVED_MODELS,
    NO_MODEL,
    ROUTE_ONNX,
    ROUTE_TFLITE,
    TensorFlowLoader,
)
from neocompile.targets import get_target
from tests import tf_models
from tests.tf_models import CNN_SHAPE, MLP_FEATURES, SEQ_SHAPE, SIZE

# ml_c5's code needs AVX-512; where this CPU lacks it, ml_c4 (the same x86_64 path, AVX2) is compiled instead.
X86 = "ml_c5" if get_target("ml_c5").host_is_native() else "ml_c4"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> (folder with the model as extracted, archive, DataInputConfig)."""
    tmp = tmp_path_factory.mktemp("tf")
    members = {
        "cnn-savedmodel": (tf_models.saved_model_of(tf_models.cnn(), tmp / "src" / "cnn"),
                           {"input": list(CNN_SHAPE)}),
        "mlp-graphdef": ({"mlp.pb": tf_models.frozen_graph_def(tf_models.mlp())}, {"features:0": [3, MLP_FEATURES]}),
        "two-inputs-savedmodel": (tf_models.two_inputs_saved_model(tmp / "src" / "two"),
                                  {"image": [2, SIZE, SIZE, 3], "extra": [2, 6]}),
        "lstm-savedmodel": (tf_models.saved_model_of(tf_models.lstm(), tmp / "src" / "lstm"),
                            {"sequence": list(SEQ_SHAPE)}),
    }
    out = {}
    for name, (files, config) in members.items():
        folder = tmp / name
        for member, data in files.items():
            (folder / member).parent.mkdir(parents=True, exist_ok=True)
            (folder / member).write_bytes(data)
        out[name] = (folder, modelzoo.write_archive(tmp / f"{name}.tar.gz", files), json.dumps(config))
    return out


def _compile(archive: Path, tmp_path: Path, config: str, target: str, options=None):
    result = neocompile.compile_model(str(archive), "TENSORFLOW", str(tmp_path / "out"), config, target_device=target,
                                      compiler_options=options)
    with tarfile.open(result.artifact_uri) as tar:
        meta = json.load(tar.extractfile("compiled.meta"))
    return result.verification, meta


# (model, where, the route that takes it)
CASES = [
    ("cnn-savedmodel", X86, ROUTE_ONNX),
    ("cnn-savedmodel", "rasp3b", ROUTE_ONNX),
    ("mlp-graphdef", X86, ROUTE_ONNX),
    ("mlp-graphdef", "rk3399", ROUTE_ONNX),
    ("two-inputs-savedmodel", X86, ROUTE_ONNX),
    ("lstm-savedmodel", X86, ROUTE_TFLITE),
    ("lstm-savedmodel", "rk3399", ROUTE_TFLITE),
]


@pytest.mark.parametrize("name,target,route", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_compiles_and_verifies_against_tensorflow(built, tmp_path, name, target, route):
    _, archive, config = built[name]
    report, meta = _compile(archive, tmp_path, config, target)
    assert report["status"] == "passed", report
    assert report["mode"].startswith("native" if target == X86 else "emulated: qemu-")
    assert all(row["within_tolerance"] for row in report["outputs"])
    assert meta["Compilation"]["ImportRoute"].startswith(route)
    assert meta["Compilation"]["Framework"] == "TENSORFLOW"


def test_inputs_and_outputs_are_named_as_neo_names_them(built, tmp_path):
    """Signature keys for a SavedModel (outputs flattened in key order); placeholder names without ':0' for a
    GraphDef, whose DataInputConfig used 'features:0'; shapes in NHWC as given."""
    _, _, config = built["two-inputs-savedmodel"]
    loaded = TensorFlowLoader().load(TensorFlowLoader().find_model(built["two-inputs-savedmodel"][0]),
                                     {k: tuple(v) for k, v in json.loads(config).items()}, {})
    assert [(s.name, s.shape) for s in loaded.inputs] == [("extra", (2, 6)), ("image", (2, SIZE, SIZE, 3))]
    assert [(s.name, s.shape) for s in loaded.outputs] == [("logits", (2, 5)), ("score", (2,))]
    folder = built["mlp-graphdef"][0]
    loaded = TensorFlowLoader().load(folder / "mlp.pb", {"features:0": (3, MLP_FEATURES)}, {})
    assert [(s.name, s.shape) for s in loaded.inputs] == [("features", (3, MLP_FEATURES))]
    assert loaded.data_input_config == {"features": [3, MLP_FEATURES]}
    loaded = TensorFlowLoader().load(folder / "mlp.pb", {"features": (3, MLP_FEATURES)}, {"output-names": ["output:0"]})
    assert [s.name for s in loaded.outputs] == ["output"]


def test_the_lstm_goes_through_tflite_after_tf2onnx_writes_an_onnx_lstm(built):
    folder, _, _ = built["lstm-savedmodel"]
    loaded = TensorFlowLoader().load(TensorFlowLoader().find_model(folder), {"sequence": SEQ_SHAPE}, {})
    assert loaded.route.startswith(ROUTE_TFLITE)
    assert [f["Route"] for f in loaded.routes_failed] == [ROUTE_ONNX]
    assert "LSTM" in loaded.routes_failed[0]["Error"]


def test_a_pbtxt_graph_def_loads(tmp_path):
    path = tmp_path / "mlp.pbtxt"
    path.write_bytes(tf_models.frozen_graph_def(tf_models.mlp(), text=True))
    assert TensorFlowLoader().find_model(tmp_path) == path
    loaded = TensorFlowLoader().load(path, {"features": (1, MLP_FEATURES)}, {})
    assert loaded.outputs[0].shape == (1, 4)


# -- the archive's files ---------------------------------------------------------------------------------------------
def _fails(archive: Path, tmp_path: Path, config: str | None = None) -> str:
    with pytest.raises(InputConfigurationError) as info:
        neocompile.compile_model(str(archive), "TENSORFLOW", str(tmp_path / "out"), config, target_device=X86)
    return str(info.value)


def test_a_saved_model_wins_over_a_lone_pb(built, tmp_path):
    files = {p.relative_to(built["cnn-savedmodel"][0]).as_posix(): p.read_bytes()
             for p in built["cnn-savedmodel"][0].rglob("*") if p.is_file()}
    (tmp_path / "m").mkdir()
    for name, data in {**files, "extra/other.pb": b"not a graph"}.items():
        (tmp_path / "m" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "m" / name).write_bytes(data)
    assert TensorFlowLoader().find_model(tmp_path / "m") == tmp_path / "m" / "cnn" / "saved_model.pb"


def test_two_graph_defs_are_refused_with_neos_text(built, tmp_path):
    pb = (built["mlp-graphdef"][0] / "mlp.pb").read_bytes()
    archive = modelzoo.write_archive(tmp_path / "two.tar.gz", {"a.pb": pb, "b.pbtxt": b"node {}"})
    message = _fails(archive, tmp_path)
    assert MANY_GRAPHS in message and "a.pb" in message and "b.pbtxt" in message


def test_two_saved_models_are_refused(built, tmp_path):
    folder = built["cnn-savedmodel"][0]
    files = {f"{top}/{p.relative_to(folder).as_posix()}": p.read_bytes()
             for top in ("one", "two") for p in folder.rglob("*") if p.is_file()}
    assert MANY_SAVED_MODELS in _fails(modelzoo.write_archive(tmp_path / "two.tar.gz", files), tmp_path)


def test_an_archive_without_a_tensorflow_model_is_refused(tmp_path):
    archive = modelzoo.write_archive(tmp_path / "none.tar.gz", {"model.h5": b"\x89HDF", "README": b"hi"})
    message = _fails(archive, tmp_path)
    assert NO_MODEL in message and "model.h5" in message


def test_checkpoint_only_archives_are_refused_with_neos_text(tmp_path):
    files = tf_models.checkpoint(tmp_path / "ckpt")
    assert any(name.endswith("checkpoint") for name in files) and any(".index" in name for name in files)
    message = _fails(modelzoo.write_archive(tmp_path / "ckpt.tar.gz", files), tmp_path)
    assert message.startswith(f"InputConfiguration: {CHECKPOINTS}")
    assert "tf.saved_model.save" in message


# -- DataInputConfig -------------------------------------------------------------------------------------------------
def test_a_shape_in_nchw_is_refused_stating_the_nhwc_rule(built, tmp_path):
    _, archive, _ = built["cnn-savedmodel"]
    message = _fails(archive, tmp_path, json.dumps({"input": [1, 3, SIZE, SIZE]}))
    assert "Input input has wrong shape in Input Shape dictionary" in message
    assert "Input shapes should be provided in NHWC format" in message
    assert json.dumps({"input": [1, SIZE, SIZE, 3]}) in message


def test_an_unknown_input_name_lists_the_models_inputs(built):
    folder = built["two-inputs-savedmodel"][0]
    with pytest.raises(InputConfigurationError, match=r"'data'.*Model inputs: extra\[\?,6\], image\[\?,12,12,3\]"):
        TensorFlowLoader().load(TensorFlowLoader().find_model(folder), {"data": (1, SIZE, SIZE, 3)}, {})


def test_the_same_input_twice_under_two_names_is_refused(built):
    folder = built["mlp-graphdef"][0]
    with pytest.raises(InputConfigurationError, match="twice"):
        TensorFlowLoader().load(folder / "mlp.pb", {"features": (1, MLP_FEATURES), "features:0": (1, MLP_FEATURES)}, {})


# -- what is refused or cannot be converted --------------------------------------------------------------------------
def test_a_graph_that_writes_files_is_refused_without_running(tmp_path):
    path = tmp_path / "model" / "writer.pb"
    path.parent.mkdir()
    path.write_bytes(tf_models.graph_def_with("WriteFile", tmp_path))
    with pytest.raises(InputConfigurationError, match="WriteFile.*never runs them"):
        TensorFlowLoader().load(path, {"x": (1, 4)}, {})
    assert not (tmp_path / "written-by-the-model").exists()


def test_when_every_route_fails_the_error_names_each_route_and_its_operators(tmp_path):
    path = tmp_path / "svd.pb"
    path.write_bytes(tf_models.svd_graph_def())
    with pytest.raises(InputConfigurationError) as info:
        TensorFlowLoader().load(path, {"matrix": (1, 4, 4)}, {})
    message = str(info.value)
    assert "No route converts it: (1) " + ROUTE_ONNX in message and "(2) " + ROUTE_TFLITE in message
    assert message.count("Svd") >= 2, message
