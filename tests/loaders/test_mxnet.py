"""MXNet checkpoints as mxnet 1.9.1 writes them, through the whole pipeline, against mxnet's own outputs.

mxnet cannot live beside neocompile (it needs numpy < 1.24), so tests/mxnet_gen.py runs in the side virtualenv that
`make test` builds (.venv-mxnet): it exports Gluon model-zoo ResNet-18 and MobileNetV2 (random weights), a Gluon MLP,
and a classic symbolic Module checkpoint (BatchNorm fix_gamma, depthwise and dilated conv, Deconvolution, Reshape
codes, SliceChannel, UpSampling, Concat, LeakyReLU, Pooling `full`, SoftmaxOutput), with mxnet's outputs on a seeded
input. The compiled packages (x86 natively, ARM under qemu) must give those outputs. The jobs themselves verify
against mxnet too, run by that side interpreter in a sandbox of its own (loaders/mxnet/reference.py); without one,
a job's verification says it had no reference and the manifest says why."""
from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

import neocompile
from neocompile import modelzoo
from neocompile.errors import InputConfigurationError
from neocompile.loaders import get_loader
from neocompile.loaders.mxnet import ROUTE, find_checkpoint
from neocompile.loaders.mxnet import params as mx_params
from neocompile.loaders.mxnet.ops import reshape_shape
from neocompile.runtime import Model
from neocompile.targets import get_target

ROOT = Path(__file__).resolve().parents[2]
MXNET_PYTHON = ROOT / ".venv-mxnet" / "bin" / "python"
# ml_c5's code needs AVX-512; where this CPU lacks it, ml_c4 (the same x86_64 path, AVX2) runs natively instead.
X86 = "ml_c5" if get_target("ml_c5").host_is_native() else "ml_c4"
RTOL, ATOL = 1e-3, 1e-4  # verify.py's float32 defaults, against the largest |output|


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, dict]:
    """Checkpoints and mxnet outputs from the side virtualenv (a few seconds)."""
    if not MXNET_PYTHON.exists():
        pytest.fail(f"{MXNET_PYTHON.relative_to(ROOT)} is missing: the MXNet tests need the side virtualenv with "
                    "mxnet 1.9.1; build it with `make test` (or `make .stamps/mxnet-venv`)", pytrace=False)
    out = tmp_path_factory.mktemp("mxnet")
    proc = subprocess.run([str(MXNET_PYTHON), str(ROOT / "tests" / "mxnet_gen.py"), str(out)], capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"tests/mxnet_gen.py failed in .venv-mxnet:\n{proc.stderr[-3000:]}", pytrace=False)
    return out, json.loads((out / "models.json").read_text())


def _files(folder: Path, *names: str) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in names}


@pytest.fixture(scope="module")
def archives(generated, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """name -> (model.tar.gz, DataInputConfig). The classic archive holds two epochs and SageMaker's
    model-shapes.json, as a SageMaker MXNet training job leaves them."""
    out, info = generated
    tmp = tmp_path_factory.mktemp("archives")
    result = {}
    for name, model in info["models"].items():
        folder = out / name
        prefix = model["prefix"]
        files = {p.name: p.read_bytes() for p in folder.iterdir() if p.name.startswith(prefix)}
        if name == "classic":
            files["model-shapes.json"] = json.dumps([{"shape": model["shape"], "name": "data"}]).encode()
        config = json.dumps({"data": model["shape"]})
        result[name] = (modelzoo.write_archive(tmp / f"{name}.tar.gz", files), config)
    return result


def _expected(generated, name: str) -> tuple[np.ndarray, list[np.ndarray]]:
    out, info = generated
    folder = out / name
    return np.load(folder / "input.npy"), [np.load(folder / f"output{i}.npy")
                                           for i in range(info["models"][name]["outputs"])]


# -- the .params reader --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,file", [("resnet18", "resnet18-0000.params"), ("classic", "classic-0012.params"),
                                       ("dtypes", "dtypes-0000.params")])
def test_params_reader_matches_mx_nd_load_bit_for_bit(generated, name, file):
    folder = generated[0] / name
    ours, theirs = mx_params.read(folder / file), np.load(folder / "params.npz")
    assert sorted(ours) == sorted(theirs.files)
    for key, array in ours.items():
        assert array.dtype == theirs[key].dtype and array.shape == theirs[key].shape, key
        assert array.tobytes() == theirs[key].tobytes(), key


def test_params_reader_refuses_what_is_not_a_params_file(tmp_path):
    bad = tmp_path / "x-0000.params"
    bad.write_bytes(b"\x12\x01\x00\x00\x00\x00\x00\x00" + b"\x00" * 8 + b"\x05" + b"\x00" * 7)  # 5 arrays, no data
    with pytest.raises(mx_params.ParamsFormatError, match="truncated"):
        mx_params.read(bad)
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(mx_params.ParamsFormatError, match="not an MXNet .params file"):
        mx_params.read(bad)


# -- Reshape's special codes (examples of MXNet's Reshape documentation) -------------------------------------------
@pytest.mark.parametrize("dshape,spec,reverse,expected", [
    ((2, 3, 4), (4, 0, 2), False, [4, 3, 2]), ((2, 3, 4), (6, 1, -1), False, [6, 1, 4]),
    ((2, 3, 4), (-1,), False, [24]), ((2, 3, 4), (2, -2), False, [2, 3, 4]),
    ((2, 3, 4), (-2, 1, 1), False, [2, 3, 4, 1, 1]), ((2, 3, 4), (-3, 4), False, [6, 4]),
    ((2, 3, 4, 5), (-3, -3), False, [6, 20]), ((2, 3, 4), (0, -3), False, [2, 12]),
    ((2, 3, 4), (-3, -2), False, [6, 4]), ((2, 3, 4), (-4, 1, 2, -2), False, [1, 2, 3, 4]),
    ((2, 3, 4), (2, -4, -1, 3, -2), False, [2, 1, 3, 4]), ((10, 5, 4), (-1, 0), True, [50, 4]),
    ((10, 5, 4), (-1, 0), False, [40, 5]),
])
def test_reshape_codes_follow_mxnet(dshape, spec, reverse, expected):
    assert reshape_shape(dshape, spec, reverse) == expected


# -- whole jobs against mxnet --------------------------------------------------------------------------------------
# Every model on x86; the ARM path (under qemu) with the small CNN on armv7 and the MLP on aarch64 (test time).
CASES = [("classic", X86), ("classic", "rasp3b"), ("mlp", X86), ("mlp", "rk3399"), ("resnet18", X86),
         ("mobilenetv2", X86)]


def _compile(archives, tmp_path, name, target):
    archive, config = archives[name]
    result = neocompile.compile_model(str(archive), "MXNET", str(tmp_path / "out"), config, target_device=target)
    with tarfile.open(result.artifact_uri) as tar:
        meta = json.load(tar.extractfile("compiled.meta"))
    return result, meta


def _max_error(actual, expected) -> list[float]:
    assert len(actual) == len(expected)
    errors = []
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        err = float(np.abs(a.astype(np.float64) - e).max())
        assert err <= ATOL + RTOL * float(np.abs(e).max()), (err, float(np.abs(e).max()))
        errors.append(err)
    return errors


def test_without_an_mxnet_interpreter_the_job_says_it_could_not_verify(archives, tmp_path, monkeypatch):
    monkeypatch.setenv("NEOCOMPILE_MXNET_PYTHON", str(tmp_path / "no-such-python"))
    result, meta = _compile(archives, tmp_path, "mlp", X86)
    assert result.verification == {"status": "skipped", "reason": "no reference runtime for MXNET"}
    reason = meta["Model"]["Details"]["Reference"]
    assert reason.startswith("none: NEOCOMPILE_MXNET_PYTHON=") and "no-such-python" in reason


@pytest.mark.parametrize("name,target", CASES, ids=[f"{n}-{t}" for n, t in CASES])
def test_package_matches_mxnets_own_output(archives, generated, tmp_path, name, target):
    result, meta = _compile(archives, tmp_path, name, target)
    # The job verified against real mxnet in the checkout's .venv-mxnet (loaders/mxnet/reference.py) ...
    assert result.verification["status"] == "passed", result.verification
    assert meta["Compilation"]["ImportRoute"] == ROUTE
    assert meta["Model"]["Details"]["Reference"].startswith("mxnet in a sandbox of its own (the checkout's .venv-mxnet")
    assert result.verification["mode"].startswith("native" if get_target(target).host_is_native() else "emulated")
    # ... and, independently of the job, the package matches the outputs mxnet wrote when it made the checkpoint.
    x, expected = _expected(generated, name)
    model = Model(result.artifact_uri, emulate=not get_target(target).host_is_native())
    errors = _max_error(model.run(x), expected)
    print(f"{name} on {target}: max abs error vs mxnet {max(errors):.3g}")
    assert [o["shape"] for o in meta["Model"]["Outputs"]] == [list(e.shape) for e in expected]
    if name == "classic":  # two epochs in the archive: the highest one is compiled
        assert "epoch 12" in meta["Compilation"]["SourceFrameworkVersion"]
        assert meta["Model"]["Details"]["Checkpoint"] == {"Symbol": "classic-symbol.json", "Params": "classic-0012.params",
                                                          "Epoch": 12, "SavedBy": "1.9.1"}
        assert [o["name"] for o in meta["Model"]["Outputs"]] == ["softmax_output", "tempered_output", "features_output",
                                                             "logits_output"]


def test_the_classic_checkpoint_holds_the_constructs_of_neo_era_models(generated):
    nodes = json.loads((generated[0] / "classic" / "classic-symbol.json").read_text())["nodes"]
    ops = {n["op"] for n in nodes}
    assert {"Deconvolution", "SliceChannel", "UpSampling", "Concat", "LeakyReLU", "SoftmaxOutput", "Reshape",
            "clip", "transpose", "expand_dims", "broadcast_mul", "_rminus_scalar"} <= ops
    attrs = {n["name"]: n.get("attrs", {}) for n in nodes}
    assert "fix_gamma" not in attrs["bn1"]  # MXNet's default, True
    assert attrs["maxpool"]["pooling_convention"] == "full" and attrs["dwconv"]["num_group"] == "8"
    assert attrs["upb"]["sample_type"] == "bilinear" and attrs["avgpool_nopad"]["count_include_pad"] == "False"


# -- Neo's file rules and input errors -----------------------------------------------------------------------------
def _tree(tmp_path: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    return tmp_path


def test_highest_epoch_wins_and_auxiliary_json_is_ignored(generated, tmp_path):
    folder = generated[0] / "classic"
    root = _tree(tmp_path, {**_files(folder, "classic-symbol.json", "classic-0001.params", "classic-0012.params"),
                            "model-shapes.json": b"[]", "hyperparams.json": b"{}", ".hidden.json": b"{}"})
    symbol, params, note = find_checkpoint(root)
    assert (symbol.name, params.name) == ("classic-symbol.json", "classic-0012.params")
    assert "highest epoch" in note


def test_autopilot_models_pick_the_model0_symbol(generated, tmp_path):
    folder = generated[0] / "mlp"
    data = _files(folder, "mlp-symbol.json", "mlp-0000.params")
    root = _tree(tmp_path, {"model0-symbol.json": data["mlp-symbol.json"], "model0-0000.params": data["mlp-0000.params"],
                            "model1-symbol.json": data["mlp-symbol.json"], "model1-0000.params": data["mlp-0000.params"]})
    symbol, params, _ = find_checkpoint(root)
    assert (symbol.name, params.name) == ("model0-symbol.json", "model0-0000.params")


@pytest.mark.parametrize("files,message", [
    ({"mlp-0000.params"}, "No symbol file found for MXNet model. Please make sure the framework you select is correct"),
    ({"mlp-symbol.json"}, "No parameter file found for MXNet model. Please make sure the framework"),
    ({"mlp-symbol.json", "other-0000.params"}, "Please make sure the prefix of params file match the prefix of symbol "
                                               "file. Expected mlp-NNNN.params; found other-0000.params"),
    ({"mlp-symbol.json", "second-symbol.json", "mlp-0000.params"}, "Only one symbol file is allowed for MXNet model"),
])
def test_wrong_file_sets_are_refused_with_neos_messages(generated, tmp_path, files, message):
    folder = generated[0] / "mlp"
    data = _files(folder, "mlp-symbol.json", "mlp-0000.params")
    data["other-0000.params"], data["second-symbol.json"] = data["mlp-0000.params"], data["mlp-symbol.json"]
    archive = modelzoo.write_archive(tmp_path / "model.tar.gz", {n: data[n] for n in files})
    with pytest.raises(InputConfigurationError, match=message.replace(".", r"\.")):
        neocompile.compile_model(str(archive), "MXNET", str(tmp_path / "out"), '{"data": [2, 20]}',
                                 target_device=X86)


def test_block_save_parameters_files_get_neos_export_hint(generated, tmp_path):
    data = _files(generated[0] / "mlp", "mlp-symbol.json")
    data["mlp-0000.params"] = (generated[0] / "dtypes" / "gluon-style.params").read_bytes()
    archive = modelzoo.write_archive(tmp_path / "model.tar.gz", data)
    with pytest.raises(InputConfigurationError, match=r"Please use HybridBlock\.export\(\) or "
                                                      r"gluoncv\.utils\.export_block\(\).*'dense0_weight'"):
        neocompile.compile_model(str(archive), "MXNET", str(tmp_path / "out"), '{"data": [2, 20]}',
                                 target_device=X86)


@pytest.mark.parametrize("name,config,message", [
    ("resnet18", '{"data": [1, 32, 32, 3]}', r"Input data has wrong shape .*got \[1, 32, 32, 3\], the model fixes "
                                              r"dimension 1 to 3.*provided in NCHW format"),
    ("mlp", '{"data": [2, 21]}', r"FullyConnected '.*': its weight \[32, 20\] expects 20 input features, got input "
                                 r"shape \[2, 21\]\. Input shapes should be provided in NCHW format"),
    ("classic", None, r"DataInputConfig has no shape for model input 'data' \(declared shape \[\?,3,\?,\?\]\)"),
    ("classic", '{"image": [1, 3, 16, 16]}', r"names input\(s\) 'image' that the MXNET model does not have"),
])
def test_wrong_input_shapes_state_the_layout_rule(archives, tmp_path, name, config, message):
    with pytest.raises(InputConfigurationError, match=message):
        neocompile.compile_model(str(archives[name][0]), "MXNET", str(tmp_path / "out"), config, target_device=X86)


def test_unsupported_operators_are_listed_by_name(generated, tmp_path):
    folder = generated[0] / "classic"
    symbol = json.loads((folder / "classic-symbol.json").read_text())
    renamed = {"UpSampling": "_contrib_MultiBoxPrior", "SliceChannel": "ROIPooling"}
    for node in symbol["nodes"]:
        node["op"] = renamed.get(node["op"], node["op"])
    archive = modelzoo.write_archive(tmp_path / "model.tar.gz", {
        "classic-symbol.json": json.dumps(symbol).encode(), **_files(folder, "classic-0012.params")})
    with pytest.raises(InputConfigurationError, match=r"TVM cannot convert MXNET model\. .*The following operators are "
                                                      r"not implemented: \{ROIPooling, _contrib_MultiBoxPrior\}"):
        neocompile.compile_model(str(archive), "MXNET", str(tmp_path / "out"), '{"data": [1, 3, 16, 16]}',
                                 target_device=X86)


def test_the_loader_is_registered_with_neos_layout_rule():
    loader = get_loader("mxnet")
    assert (loader.name, loader.layout, loader.suffixes) == ("MXNET", "NCHW", (".json", ".params"))
