
import numpy as np
import pytest
import torch

from neocompile.errors import InputConfigurationError
from neocompile.loaders import get_loader
from neocompile.loaders.pytorch import ROUTE_EXPORT, ROUTE_ONNX
from tests import hostile
from tests.hostile import HOSTILE
from tests.models import torch_two_input_module


def _traced(tmp_path, name="model.pth"):
    net = torch_two_input_module()
    path = tmp_path / name
    torch.jit.trace(net, (torch.randn(1, 3, 16, 16), torch.randn(1, 10))).save(str(path))
    return path, net


def test_torchscript_goes_through_torch_export_and_matches_torch(tmp_path):
    path, net = _traced(tmp_path)
    loaded = get_loader("PYTORCH").load(path, {"input0": (1, 3, 16, 16), "input1": (1, 10)}, {})
    assert loaded.route == ROUTE_EXPORT
    assert [o.shape for o in loaded.outputs] == [(1, 10), (1, 8)]
    x, y = np.random.default_rng(0).standard_normal((1, 3, 16, 16), np.float32), np.ones((1, 10), np.float32)
    ref = loaded.reference([x, y])
    with torch.no_grad():
        want = net(torch.from_numpy(x), torch.from_numpy(y))
    np.testing.assert_allclose(ref[0], want[0].numpy(), rtol=1e-5, atol=1e-5)


def test_torchscript_needs_a_data_input_config(tmp_path):
    path, _ = _traced(tmp_path)
    with pytest.raises(InputConfigurationError, match="DataInputConfig is required for TorchScript models"):
        get_loader("PYTORCH").load(path, None, {})


def test_torchscript_shape_mismatch_shows_the_interpreters_cause_and_the_input_order_hint(tmp_path):
    path, _ = _traced(tmp_path)
    with pytest.raises(InputConfigurationError) as info:
        get_loader("PYTORCH").load(path, {"input0": (1, 10), "input1": (1, 3, 16, 16)}, {})
    message = str(info.value)
    # TorchScript opens with "The following operation failed in the TorchScript interpreter." and a frame listing;
    # the message keeps the RuntimeError at its end instead.
    assert ("TVM cannot convert the PyTorch model. Running it on inputs input0[1, 10] float32, input1[1, 3, 16, 16] "
            "float32 failed: RuntimeError: Expected 4-dimensional input for 4-dimensional weight [8, 3, 3, 3]") in message
    assert "TorchScript interpreter" not in message and "Traceback" not in message
    assert message.endswith("Make sure that inputs are lexically ordered (input0, input1, ...) and that DataInputConfig shapes match the model.")


def test_torchscript_falls_back_to_onnx_with_the_original_module_and_says_why(tmp_path, monkeypatch):
    import tvm.relax.frontend.torch

    def unsupported(*args, **kwargs):
        raise AssertionError("Unsupported function types ['frobnicate.default']")

    # The torch.export route converts the module, then fails in TVM's importer: the ONNX route must start afresh.
    monkeypatch.setattr(tvm.relax.frontend.torch, "from_exported_program", unsupported)
    path, net = _traced(tmp_path)
    loaded = get_loader("PYTORCH").load(path, {"input0": (1, 3, 16, 16), "input1": (1, 10)}, {})
    # The manifest's route names the one that worked, then the one that failed, at which step and on what.
    assert loaded.route == (f"{ROUTE_ONNX} (after 1 failed route(s): {ROUTE_EXPORT}: "
                            "failed in TVM's importer: AssertionError: TVM's importer has no converter "
                            "for operator(s) 'frobnicate.default')")
    assert [o.shape for o in loaded.outputs] == [(1, 10), (1, 8)]


def test_an_operator_no_route_converts_is_named_without_the_input_order_hint(tmp_path):
    class Cholesky(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.cholesky(x @ x.transpose(-1, -2) + torch.eye(4))

    path = tmp_path / "model.pth"
    torch.jit.trace(Cholesky(), torch.randn(1, 4, 4)).save(str(path))
    with pytest.raises(InputConfigurationError) as info:
        get_loader("PYTORCH").load(path, {"input0": (1, 4, 4)}, {})
    message = str(info.value)
    assert f"TVM cannot convert the PyTorch model. No route converts it: (1) {ROUTE_EXPORT}: " in message
    assert "linalg_cholesky" in message.split("(2)")[0]  # each route names the operator it stopped at
    assert (f"(2) {ROUTE_ONNX}: failed in torch.onnx.export: UnsupportedOperatorError: Exporting the operator "
            "'aten::linalg_cholesky' to ONNX opset version 17 is not supported") in message
    assert "lexically ordered" not in message


def test_state_dict_is_refused_with_how_to_save_a_model(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(torch_two_input_module().state_dict(), path)
    with pytest.raises(InputConfigurationError, match="holds a state_dict.*torch.jit.trace"):
        get_loader("PYTORCH").load(path, {"input0": (1, 3, 16, 16)}, {})


def test_a_training_checkpoint_is_refused_with_how_to_save_a_model(tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "model_state_dict": torch_two_input_module().state_dict()}, path)
    with pytest.raises(InputConfigurationError, match=r"checkpoint.pth holds a training checkpoint \(a dictionary of "
                                                      r"epoch, model_state_dict\), not a model: the code that builds "
                                                      r"the model is not in it\. Save the model as TorchScript"):
        get_loader("PYTORCH").load(path, {"input0": (1, 3, 16, 16)}, {})


def test_exported_program_takes_its_shapes_from_the_file(tmp_path):
    net = torch_two_input_module()
    program = torch.export.export(net, (torch.randn(1, 3, 16, 16), torch.randn(1, 10)))
    path = tmp_path / "model.pt2"
    torch.export.save(program, str(path))
    loaded = get_loader("PYTORCH").load(path, None, {})
    assert [(i.name, i.shape) for i in loaded.inputs] == [("input0", (1, 3, 16, 16)), ("input1", (1, 10))]
    with pytest.raises(InputConfigurationError, match=r"Input input0 has wrong shape.*fixes dimension 2 to 16"):
        get_loader("PYTORCH").load(path, {"input0": (1, 3, 32, 32), "input1": (1, 10)}, {})


def test_archive_rule_accepts_pth_pt_and_pt2_but_only_one(tmp_path):
    loader = get_loader("PYTORCH")
    (tmp_path / "a.pth").write_bytes(b"x")
    assert loader.find_model(tmp_path).name == "a.pth"
    (tmp_path / "b.pt").write_bytes(b"x")
    with pytest.raises(InputConfigurationError, match=r"Exactly one .pth or .pt or .pt2 file is allowed for PYTORCH models. Found 2"):
        loader.find_model(tmp_path)


def test_dtype_option_makes_integer_inputs_for_embedding_models(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Flatten(), torch.nn.Linear(8 * 6, 3)).eval()
    path = tmp_path / "model.pth"
    torch.jit.trace(net, torch.zeros(1, 6, dtype=torch.long)).save(str(path))
    loaded = get_loader("PYTORCH").load(path, {"input0": (1, 6)}, {"dtype": "int64"})
    assert loaded.inputs[0].dtype == "int64"
    ids = np.array([[1, 4, 9, 16, 25, 36]], dtype=np.int64)
    (ref,) = loaded.reference([ids])
    with torch.no_grad():
        np.testing.assert_allclose(ref, net(torch.from_numpy(ids)).numpy(), rtol=1e-6)


# -- nothing from the file runs: torch.jit.load and the weights-only unpickler only -----------------------------------
NEVER = "neocompile never unpickles Python objects from an untrusted archive"


def test_a_whole_pickled_module_is_refused_with_the_refused_class_and_how_to_save(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 3)), path)
    with pytest.raises(InputConfigurationError, match=(
        r"Unable to load PyTorch model model.pth: it is not TorchScript .* but a pickle that needs Python code to load "
        r"\(the weights-only unpickler refuses it: Unsupported global: GLOBAL torch\.nn\.modules\.container\.Sequential .*" + NEVER +
        r".*torch\.jit\.trace\(model, example\)\.save\('model\.pth'\).*torch\.jit\.script.*"
        r"torch\.export\.save\(torch\.export\.export\(model, args\), 'model\.pt2'\)"
    )) as info:
        get_loader("PYTORCH").load(path, {"input0": (2, 4)}, {})
    assert "corrupt" not in str(info.value)


def test_a_file_that_is_no_checkpoint_says_so_without_calling_it_corrupted(tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(b"not a model")
    with pytest.raises(InputConfigurationError, match=r"is neither TorchScript \(torch.jit.load: PytorchStreamReader failed "
                                                      r"reading zip archive: not a ZIP archive\.\) nor a PyTorch checkpoint") as info:
        get_loader("PYTORCH").load(path, {"input0": (1, 4)}, {})
    assert "corrupt" not in str(info.value)


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "marker"


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_file_loaded_directly_runs_nothing(name, marker, tmp_path):
    filename, data = HOSTILE[name](marker)
    path = tmp_path / filename
    path.write_bytes(data)
    with pytest.raises(InputConfigurationError, match=rf"Unable to load .*{filename}: .*{NEVER}"):
        get_loader("PYTORCH").load(path, {"input0": (2, 4)}, {})
    assert not marker.exists()


@pytest.mark.parametrize("build,why", [
    (hostile.pt2_shape_expression, r"a call in a symbolic expression: __import__\('os'\)\.system"),
    (hostile.pt2_pickled_weight, r"a pickle that needs Python code to load \(Trying to load unsupported GLOBAL posix\.system"),
    (hostile.pt2_native_code, r"AOTInductor native code \([^/]+/data/aotinductor/model/model\.so\)"),
])
def test_what_torch_export_load_would_run_is_named(build, why, marker, tmp_path):
    filename, data = build(marker)
    path = tmp_path / filename
    path.write_bytes(data)
    with pytest.raises(InputConfigurationError, match=rf"it asks to run code from the archive \({why}"):
        get_loader("PYTORCH").load(path, None, {})
    assert not marker.exists()


def test_a_pytree_context_cannot_import_a_module(tmp_path):
    import json
    import subprocess
    import sys

    # Checked in a fresh interpreter: the module named ("this") prints on import and must never be imported.
    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(torch.nn.Linear(4, 3), (torch.randn(2, 4),)), str(good))

    def change(name, blob):
        if not name.endswith("models/model.json"):
            return blob
        doc = json.loads(blob)
        for entry in doc["graph_module"]["module_call_graph"]:
            if entry.get("signature"):
                spec = json.loads(entry["signature"]["in_spec"])
                spec[1]["context"] = json.dumps({"__enum__": True, "fqn": "this:Zen", "name": "a"})
                entry["signature"]["in_spec"] = json.dumps(spec)
        return json.dumps(doc).encode()

    path = tmp_path / "model.pt2"
    path.write_bytes(hostile._rewrite(good.read_bytes(), change))
    code = (f"import sys\nfrom pathlib import Path\nfrom neocompile.loaders import get_loader\n"
            f"try:\n    get_loader('PYTORCH').load(Path({str(path)!r}), None, {{}})\nexcept Exception as exc:\n    print(exc)\n"
            f"print('imported:', 'this' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "it asks to run code from the archive (an import of module 'this')" in proc.stdout, proc.stdout + proc.stderr
    assert "imported: False" in proc.stdout and "Beautiful is better than ugly" not in proc.stdout


def test_a_graph_that_calls_anything_but_operators_is_refused():
    import os
    import types

    from neocompile.loaders.pytorch import _foreign_calls

    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    graph.call_function(os.system, ("true",))
    graph.output(graph.call_function(torch.ops.aten.relu.default, (x,)))
    bad = types.SimpleNamespace(graph_module=torch.fx.GraphModule(torch.nn.Module(), graph))
    assert _foreign_calls(bad) == ["graph node 'system' calls posix.system (call_function), not a PyTorch operator"]
    good = torch.export.export(torch_two_input_module(), (torch.randn(1, 3, 16, 16), torch.randn(1, 10)))
    assert _foreign_calls(good) == []
