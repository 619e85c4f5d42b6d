"""XGBoost: real models in JSON, UBJSON and xgboost 1.x's legacy binary, compiled as one forest kernel and checked
against xgboost's own ``inplace_predict`` (NaN inputs included), through the whole pipeline for an x86 target and
an ARM target (verified under qemu), and refused with a useful message when the file is no model or a pickle."""
from __future__ import annotations

import json
import pickle
import tarfile

import numpy as np
import pytest

import neocompile
from neocompile import modelzoo
from neocompile.errors import InputConfigurationError
from neocompile.loaders import get_loader
from neocompile.loaders.xgboost import Forest, XGBoostLoader, build_module
from neocompile.runtime import Model
from neocompile.targets import get_target
from tests import xgboost_models as xm
from tests.need import need

need("treelite")
xgb = need("xgboost")

# ml_c5's code needs AVX-512; where this CPU lacks it, ml_c4 (the same x86_64 path, AVX2) is compiled and verified
# natively instead (as in test_onnx_exports.py).
X86 = "ml_c5" if get_target("ml_c5").host_is_native() else "ml_c4"

OBJECTIVES = ["reg:squarederror", "reg:logistic", "binary:logistic", "binary:logitraw", "binary:hinge",
              "multi:softprob", "multi:softmax", "count:poisson", "reg:gamma", "reg:tweedie", "reg:absoluteerror",
              "rank:pairwise", "survival:cox"]


def _run_in_process(mod, x):
    """Compile a loader's module for this host (plain llvm) and run it."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.compile(mod, tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def _load(tmp_path, booster, name="xgboost-model.json", shapes=None):
    path = tmp_path / name
    booster.save_model(str(path))
    return XGBoostLoader().load(path, shapes, {})


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_matches_inplace_predict_with_missing_values(tmp_path, objective):
    booster = xm.train(objective)
    loaded = _load(tmp_path, booster)
    x = xm.data(203, seed=7, missing=0.3)  # a partial last block of rows, many NaNs
    got = _run_in_process(loaded.mod, x)
    want = booster.inplace_predict(x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    details = loaded.model_details
    assert details["Objective"] == objective and details["NumFeature"] == xm.NUM_FEATURE
    assert details["TreesUsed"] == booster.num_boosted_rounds() * (3 if objective.startswith("multi:") else 1)
    assert loaded.inputs[0].name == "data" and loaded.inputs[0].shape == ("N", xm.NUM_FEATURE)


def test_missing_values_take_each_nodes_default_branch(tmp_path):
    booster = xm.train("reg:squarederror", rounds=4)
    loaded = _load(tmp_path, booster)
    x = np.full((5, xm.NUM_FEATURE), np.nan, dtype=np.float32)  # every test sees NaN
    x[1:, 0] = [-3.0, 3.0, np.inf, -np.inf]
    got = _run_in_process(loaded.mod, x)
    np.testing.assert_allclose(got, booster.inplace_predict(x), rtol=1e-6)
    assert len(set(np.round(got, 5))) > 1  # the rows took different paths


def test_multi_target_quantile_regression(tmp_path):
    booster = xm.train("reg:quantileerror", quantile_alpha=[0.2, 0.5, 0.8])
    loaded = _load(tmp_path, booster, "model.ubj")
    x = xm.data(50, seed=8)
    got = _run_in_process(loaded.mod, x)
    assert got.shape == (50, 3)
    np.testing.assert_allclose(got, booster.inplace_predict(x), rtol=1e-5, atol=1e-6)


def test_base_score_is_honoured(tmp_path):
    x = xm.data(64, seed=9)
    for base in (0.2, 0.9):
        booster = xm.train("binary:logistic", rounds=2, base_score=base)
        loaded = _load(tmp_path, booster)
        np.testing.assert_allclose(_run_in_process(loaded.mod, x), booster.inplace_predict(x), rtol=1e-5)
        assert float(loaded.model_details["BaseScore"].strip("[]")) == pytest.approx(base)


def test_best_iteration_is_honoured(tmp_path):
    booster = xm.early_stopped()
    loaded = _load(tmp_path, booster)
    x = xm.data(100, seed=10)
    best = booster.inplace_predict(x, iteration_range=(0, booster.best_iteration + 1))
    got = _run_in_process(loaded.mod, x)
    np.testing.assert_allclose(got, best, rtol=1e-5, atol=1e-6)
    assert np.abs(got - booster.inplace_predict(x)).max() > 1e-3  # all trees would differ
    assert loaded.model_details["BestIteration"] == booster.best_iteration
    assert loaded.model_details["TreesUsed"] == booster.best_iteration + 1
    np.testing.assert_allclose(loaded.reference([x])[0], best, rtol=1e-6)


def test_deep_trees_use_the_linked_layout(tmp_path):
    """Trees too deep to pad to full depth walk explicit child indices; same predictions."""
    booster = xm.train("reg:squarederror", rounds=6, depth=0, grow_policy="lossguide", max_leaves=40)
    path = tmp_path / "deep.json"
    booster.save_model(str(path))
    from neocompile.loaders.xgboost import _load_treelite

    model = _load_treelite(path.read_bytes(), path.name, "json")
    forest = Forest(model, model.num_tree, budget=0)
    assert forest.layout == "linked" and forest.depth > 6
    x = xm.data(99, seed=11)
    np.testing.assert_allclose(_run_in_process(build_module(forest), x), booster.inplace_predict(x), rtol=1e-5, atol=1e-6)


def test_legacy_binary_is_read_and_checked_with_treelite(tmp_path):
    booster = xm.early_stopped("binary:logistic")
    path = tmp_path / "xgboost-model"
    path.write_bytes(xm.legacy_binary(booster))
    with pytest.raises(xgb.core.XGBoostError):  # why the reference is treelite's: xgboost 3 refuses the file
        xgb.Booster(model_file=str(path))
    loaded = XGBoostLoader().load(path, None, {})
    x = xm.data(77, seed=12)
    want = booster.inplace_predict(x, iteration_range=(0, booster.best_iteration + 1))
    np.testing.assert_allclose(_run_in_process(loaded.mod, x), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.reference([x])[0], want, rtol=1e-5, atol=1e-6)
    assert "treelite.gtil" in loaded.route and loaded.model_details["SavedBy"] == "xgboost 1.3 (legacy binary)"
    assert loaded.model_details["BestIteration"] == booster.best_iteration


def test_data_input_config_is_optional_and_checked(tmp_path):
    booster = xm.train("reg:squarederror", rounds=2)
    loaded = _load(tmp_path, booster, shapes={"features": (8, xm.NUM_FEATURE)})
    assert loaded.inputs[0].name == "features" and loaded.inputs[0].shape == ("N", xm.NUM_FEATURE)
    assert loaded.data_input_config == {"features": [8, xm.NUM_FEATURE]}
    for bad in ({"data": (1, xm.NUM_FEATURE + 1)}, {"data": (1, 2, 3)}, {"a": (1, 6), "b": (1, 6)}):
        with pytest.raises(InputConfigurationError) as err:
            _load(tmp_path, booster, shapes=bad)
        assert f"features = {xm.NUM_FEATURE}" in str(err.value) and "[rows, features]" in str(err.value)
        assert "optional for XGBOOST" in str(err.value)


def test_a_file_that_is_not_a_model_is_refused(tmp_path):
    for name, data in (("model.json", b'{"not": "a model"}'), ("xgboost-model", b"\x00\x01garbage" * 20),
                       ("model.ubj", b"{Lxx"), ("empty", b"")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InputConfigurationError) as err:
            XGBoostLoader().load(path, None, {})
        assert "Booster.save_model" in str(err.value), str(err.value)


class _Payload:
    """Unpickling this writes a file: the loader must never do it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickled_booster_is_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    for obj in (xm.train("reg:squarederror", rounds=1), _Payload(marker)):
        path = tmp_path / "xgboost-model"
        path.write_bytes(pickle.dumps(obj, protocol=4))
        with pytest.raises(InputConfigurationError) as err:
            XGBoostLoader().load(path, None, {})
        assert "pickle" in str(err.value) and "never" in str(err.value) and "Booster.save_model" in str(err.value)
    assert not marker.exists()


def test_gblinear_is_refused(tmp_path):
    booster = xm.train("reg:squarederror", rounds=2, booster="gblinear")
    with pytest.raises(InputConfigurationError) as err:
        _load(tmp_path, booster)
    assert "gblinear" in str(err.value)


def test_the_model_file_may_have_any_name(tmp_path):
    (tmp_path / "xgboost-model-0").write_bytes(b"x")
    assert get_loader("xgboost").find_model(tmp_path).name == "xgboost-model-0"
    (tmp_path / "other.bin").write_bytes(b"y")
    (tmp_path / "more.bin").write_bytes(b"z")
    assert get_loader("XGBOOST").find_model(tmp_path).name == "xgboost-model-0"  # the one named like Neo's
    (tmp_path / "xgboost-model-0").unlink()
    with pytest.raises(InputConfigurationError, match="Exactly one model file"):
        get_loader("XGBOOST").find_model(tmp_path)


# -- the whole pipeline -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """name -> (model.tar.gz, the booster it holds, iteration_range xgboost predicts with)."""
    tmp = tmp_path_factory.mktemp("xgboost")
    softprob = xm.train("multi:softprob", rounds=6)
    logistic = xm.train("binary:logistic", rounds=6)
    legacy = xm.early_stopped("binary:logistic")
    files = {
        "json": ({"xgboost-model": bytes(softprob.save_raw("json"))}, softprob, (0, 0)),
        "ubjson": ({"model.ubj": bytes(logistic.save_raw("ubj"))}, logistic, (0, 0)),
        "legacy": ({"xgboost-model": xm.legacy_binary(legacy)}, legacy, (0, legacy.best_iteration + 1)),
    }
    return {name: (modelzoo.write_archive(tmp / f"{name}.tar.gz", content), booster, rounds)
            for name, (content, booster, rounds) in files.items()}


@pytest.mark.parametrize("name,target", [("json", X86), ("ubjson", "rk3399"), ("legacy", X86)])
def test_compiles_verifies_and_runs_any_number_of_rows(archives, tmp_path, name, target):
    archive, booster, rounds = archives[name]
    result = neocompile.compile_model(str(archive), "XGBOOST", str(tmp_path / "out"), None, target_device=target)
    report = result.verification
    assert report["status"] == "passed", report
    assert report["mode"].startswith("native" if target == X86 else "emulated: qemu-")
    assert report["outputs"][0]["shape"][0] == 203  # the verification's rows
    assert report["missing"] == 0.1  # a tenth of the verification's values are NaN: the default branches are checked
    with tarfile.open(result.artifact_uri) as tar:
        meta = json.load(tar.extractfile("compiled.meta"))
    assert meta["Model"]["Inputs"] == [{"name": "data", "dtype": "float32", "shape": ["N", xm.NUM_FEATURE]}]
    assert meta["Model"]["Outputs"][0]["shape"][0] == "N"
    assert meta["Model"]["Details"]["Objective"] == json.loads(booster.save_config())["learner"]["objective"]["name"]
    assert list(meta["Compilation"]["Kernels"].values())[0].startswith("hand: xgboost forest")
    assert meta["Compilation"]["Framework"] == "XGBOOST"
    model = Model(result.artifact_uri, emulate=target != X86, num_threads=1)
    for rows in (1, 1000):
        x = xm.data(rows, seed=rows, missing=0.2)
        got = model.run(x)[0]
        np.testing.assert_allclose(got, booster.inplace_predict(x, iteration_range=rounds), rtol=1e-5, atol=1e-6)
