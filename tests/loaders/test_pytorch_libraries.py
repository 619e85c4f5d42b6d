"""PyTorch models as people really save them, from real libraries (``transformers``, ``torchvision``) and torch's own
layers (LSTM, GRU, TransformerEncoder), with seeded weights and nothing downloaded.

Through the whole pipeline, each model is compiled for an x86 target and an ARM target (verified under qemu) and
verified against torch; the loader tests below check the other ways the same models are saved (scripted,
``torch.export`` programs, mixed input dtypes, dict outputs) against torch with TVM's default build."""
from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

import neocompile
from neocompile import modelzoo
from neocompile.errors import InputConfigurationError
from neocompile.loaders import get_loader
from neocompile.loaders.pytorch import ROUTE_EXPORT, ROUTE_ONNX, ROUTE_PT2
from neocompile.targets import get_target
from neocompile.verify import random_inputs
from tests import torch_models as tm
from tests.need import need

torch = need("torch")
need("transformers")
need("torchvision")

# ml_c5's code needs AVX-512; where this CPU lacks it, ml_c4 (the same x86_64 path, AVX2) is compiled and verified
# natively instead, so that every job here is verified rather than skipped.
# Tracing and scripting are what these tests do on purpose; transformers' code warns while it is traced.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")

X86 = "ml_c5" if get_target("ml_c5").host_is_native() else "ml_c4"
ENCODER = {"input_ids": (1, tm.SEQ), "attention_mask": (1, tm.SEQ)}


def _config(shapes: dict) -> str:
    return json.dumps({name: list(dims) for name, dims in shapes.items()})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """name -> (model file, DataInputConfig, CompilerOptions); the files a user would upload, built once."""
    tmp = tmp_path_factory.mktemp("pytorch-libraries")
    built = {}
    bert, example = tm.bert()
    built["bert-traced"] = (tm.trace(bert, example, tmp / "bert.pth"), ENCODER, {"dtype": "int64"})
    for name in ("resnet18", "mobilenet_v3_small"):
        model, example = tm.torchvision_model(name)
        built[f"{name}-traced"] = (tm.trace(model, example, tmp / f"{name}.pth"), {"input0": tm.IMAGE}, {})
    for kind in ("lstm", "gru"):
        model, example = tm.recurrent(kind)
        built[f"{kind}-traced"] = (tm.trace(model, example, tmp / f"{kind}.pth"), {"input0": tuple(example[0].shape)}, {})
    model, example = tm.transformer_encoder()
    built["transformer-encoder-traced"] = (tm.trace(model, example, tmp / "encoder.pth"),
                                           {"input0": tuple(example[0].shape)}, {})
    return built


def _compile(files, tmp_path, name, target):
    path, shapes, options = files[name]
    archive = modelzoo.write_archive(tmp_path / f"{name}.tar.gz", {path.name: path.read_bytes()})
    result = neocompile.compile_model(str(archive), "PYTORCH", str(tmp_path / "out"), _config(shapes),
                                      target_device=target, compiler_options=json.dumps(options) if options else None)
    with tarfile.open(result.artifact_uri) as tar:
        meta = json.load(tar.extractfile("compiled.meta"))
    return result.verification, meta


# (model, ARM target). The ARM targets alternate between armv7 (rasp3b) and aarch64 (rk3399).
CASES = [
    ("bert-traced", "rasp3b"),
    ("resnet18-traced", "rk3399"),
    ("mobilenet_v3_small-traced", "rasp3b"),
    ("lstm-traced", "rk3399"),
    ("gru-traced", "rasp3b"),
    ("transformer-encoder-traced", "rk3399"),
]


def test_the_files_hold_the_constructs_that_used_to_stop_the_import(files):
    def kinds(name):
        return {n.kind() for n in torch.jit.load(str(files[name][0])).inlined_graph.nodes()}

    bert = kinds("bert-traced")
    assert {"aten::size", "aten::__and__", "prim::DictConstruct"} <= bert  # shape arithmetic, mask logic, dict output
    assert "aten::_transformer_encoder_layer_fwd" in kinds("transformer-encoder-traced")  # the fused fast path
    assert "aten::lstm" in kinds("lstm-traced") and "aten::gru" in kinds("gru-traced")


@pytest.mark.parametrize("name,arm", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("where", ["x86", "arm"])
def test_compiles_and_verifies_against_torch(files, tmp_path, name, arm, where):
    report, meta = _compile(files, tmp_path, name, X86 if where == "x86" else arm)
    assert report["status"] == "passed", report
    assert report["mode"].startswith("native" if where == "x86" else "emulated: qemu-")
    assert all(row["within_tolerance"] for row in report["outputs"])
    assert meta["Compilation"]["ImportRoute"] == ROUTE_EXPORT  # the first route works: nothing failed before it
    assert meta["Compilation"]["ImportRoutesFailed"] == []
    if name == "bert-traced":  # the dict output's two tensors, per-input int64 dtypes, in forward's order
        assert [o["shape"] for o in meta["Model"]["Outputs"]] == [[1, tm.SEQ, 64], [1, 64]]
        assert [(i["name"], i["dtype"]) for i in meta["Model"]["Inputs"]] == [("input_ids", "int64"),
                                                                              ("attention_mask", "int64")]


# -- the loader on the other ways these models are saved --------------------------------------------------------------
def _matches_torch(loaded, atol=1e-5):
    """The imported module, built with TVM's default pipeline, against the loader's torch reference."""
    import tvm
    from tvm import relax

    arrays = random_inputs(loaded.inputs)
    vm = relax.VirtualMachine(tvm.compile(loaded.mod, "llvm"), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(a) for a in arrays])
    got = [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]
    want = loaded.reference(arrays)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=atol, rtol=1e-4)
    return got


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_scripted_recurrent_nets_fold_their_optional_state_and_import(tmp_path, kind):
    model, example = tm.recurrent(kind)
    loaded = get_loader("PYTORCH").load(tm.script(model, tmp_path / "model.pth"), {"input0": tuple(example[0].shape)}, {})
    assert loaded.route == ROUTE_EXPORT
    _matches_torch(loaded)


def test_a_scripted_transformer_encoder_takes_its_default_masks_and_its_fast_path(tmp_path):
    model, example = tm.transformer_encoder()
    path = tm.script(model, tmp_path / "model.pth")  # forward(src, mask=None, src_key_padding_mask=None, is_causal=None)
    loaded = get_loader("PYTORCH").load(path, {"input0": tuple(example[0].shape)}, {})
    assert loaded.route == ROUTE_EXPORT
    _matches_torch(loaded)


def test_the_fused_fast_paths_with_masks_match_torch(tmp_path):
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, norm_first=True, activation="gelu")

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.attention = torch.nn.MultiheadAttention(32, 4, batch_first=True)

        def forward(self, x, padding):
            h = self.encoder(x, src_key_padding_mask=padding)
            return self.attention(h, h, h, key_padding_mask=padding)  # (output, head-averaged weights)

    padding = torch.zeros(2, tm.SEQ, dtype=torch.bool)
    padding[1, -5:] = True
    path = tm.trace(Encoder().eval(), (torch.randn(2, tm.SEQ, 32), padding), tmp_path / "model.pth")
    ops = {n.kind() for n in torch.jit.load(str(path)).inlined_graph.nodes()}
    assert {"aten::_transformer_encoder_layer_fwd", "aten::_native_multi_head_attention"} <= ops
    loaded = get_loader("PYTORCH").load(path, {"input0": (2, tm.SEQ, 32), "input1": (2, tm.SEQ)},
                                        {"dtype": ["float32", "bool"]})
    assert [(i.name, i.dtype) for i in loaded.inputs] == [("input0", "float32"), ("input1", "bool")]
    _matches_torch(loaded)


def test_a_scripted_torchvision_backbone_imports(tmp_path):
    model, _ = tm.torchvision_model("efficientnet_b0")
    loaded = get_loader("PYTORCH").load(tm.script(model, tmp_path / "model.pth"), {"input0": tm.IMAGE}, {})
    assert loaded.route == ROUTE_EXPORT
    _matches_torch(loaded, atol=1e-4)


def test_distilbert_traced_imports(tmp_path):
    model, example = tm.distilbert()
    loaded = get_loader("PYTORCH").load(tm.trace(model, example, tmp_path / "model.pth"), ENCODER, {"dtype": "long"})
    assert [o.shape for o in loaded.outputs] == [(1, tm.SEQ, 64)]
    _matches_torch(loaded)


def test_inputs_named_after_forward_parameters_are_bound_by_name(files, tmp_path):
    """{"input_ids", "attention_mask"}: lexical order (Neo's rule for input0, input1, ...) would feed the mask as
    the ids, and verification could not tell (the torch reference is fed the same way). The package, run by name
    on a padded batch, must give what torch gives called by keyword."""
    from neocompile.runtime import Model

    path, shapes, options = files["bert-traced"]
    archive = modelzoo.write_archive(tmp_path / "bert.tar.gz", {path.name: path.read_bytes()})
    config = json.dumps({"attention_mask": [1, tm.SEQ], "input_ids": [1, tm.SEQ]})  # given in neither order
    result = neocompile.compile_model(str(archive), "PYTORCH", str(tmp_path / "out"), config, target_device=X86,
                                      compiler_options=json.dumps(options))
    model = Model(result.artifact_uri)
    assert [i["name"] for i in model.meta["Model"]["Inputs"]] == ["input_ids", "attention_mask"]  # forward's order
    ids, mask = (t.numpy() for t in tm._ids())
    got = model.run({"attention_mask": mask, "input_ids": ids})
    with torch.no_grad():
        want = torch.jit.load(str(path))(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    np.testing.assert_allclose(got[0], want["last_hidden_state"].numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(got[1], want["pooler_output"].numpy(), atol=1e-4, rtol=1e-4)


def test_the_onnx_route_takes_over_with_dict_outputs(tmp_path, monkeypatch):
    from neocompile.loaders import pytorch

    monkeypatch.setattr(pytorch, "_via_export", lambda *a: (_ for _ in ()).throw(
        pytorch._RouteError("TS2EPConverter", RuntimeError("TS2EPConverter failed for node prim::Frobnicate"))))
    model, example = tm.bert()
    loaded = get_loader("PYTORCH").load(tm.trace(model, example, tmp_path / "model.pth"), ENCODER, {"dtype": "int64"})
    assert loaded.route == (f"{ROUTE_ONNX} (after 1 failed route(s): {ROUTE_EXPORT}: failed in TS2EPConverter: "
                            "RuntimeError: TS2EPConverter failed for node prim::Frobnicate)")
    assert loaded.routes_failed == [{"Route": ROUTE_EXPORT, "Error": "failed in TS2EPConverter: "
                                     "RuntimeError: TS2EPConverter failed for node prim::Frobnicate"}]
    _matches_torch(loaded)


def test_mixed_input_dtypes_by_name_and_a_dict_output(tmp_path):
    model, example = tm.mixed_dtypes()
    path = tm.trace(model, example, tmp_path / "model.pth")
    shapes = {"features": (2, 4), "ids": (2, 6)}
    loaded = get_loader("PYTORCH").load(path, shapes, {"dtype": {"ids": "int64"}})
    assert [(i.name, i.dtype) for i in loaded.inputs] == [("features", "float32"), ("ids", "int64")]
    assert [o.shape for o in loaded.outputs] == [(2, 3), (2, 8)]  # the dict's values, in order
    _matches_torch(loaded)
    with pytest.raises(InputConfigurationError, match=r"CompilerOptions dtype names input\(s\) 'tokens' that "
                                                      r"DataInputConfig does not have; inputs: features, ids"):
        get_loader("PYTORCH").load(path, shapes, {"dtype": {"tokens": "int64"}})
    with pytest.raises(InputConfigurationError, match=r"CompilerOptions dtype lists 1 dtype\(s\) \['int64'\] for 2 "
                                                      r"input\(s\) \(features, ids\); expected one per input"):
        get_loader("PYTORCH").load(path, shapes, {"dtype": ["int64"]})
    with pytest.raises(InputConfigurationError, match=r"Running it on inputs features\[2, 4\] float32, ids\[2, 6\] "
                                                      r"float32 failed: RuntimeError: .*Long.* Inputs are float32 unless "
                                                      r'CompilerOptions dtype says otherwise, e.g. \{"dtype": "int64"\}'):
        get_loader("PYTORCH").load(path, shapes, {})


@pytest.mark.parametrize("build", ["bert", "lstm", "mixed"])
def test_exported_programs_import_with_their_own_dtypes(tmp_path, build):
    model, example = {"bert": tm.bert, "lstm": lambda: tm.recurrent("lstm"), "mixed": tm.mixed_dtypes}[build]()
    path = tm.export(model, example, tmp_path / "model.pt2")
    loaded = get_loader("PYTORCH").load(path, None, {})
    assert loaded.route == ROUTE_PT2
    assert [i.dtype for i in loaded.inputs] == [str(t.dtype).replace("torch.", "") for t in example]
    _matches_torch(loaded)
    if build == "mixed":
        with pytest.raises(InputConfigurationError, match=r"CompilerOptions dtype does not match the torch.export "
                                                          r"program.*input0 is float32, not int64"):
            get_loader("PYTORCH").load(path, None, {"dtype": "int64"})
