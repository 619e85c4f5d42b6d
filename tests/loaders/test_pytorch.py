
import numpy as np
import pytest
import torch

from neocompile.errors import InputConfigurationError
from neocompile.loaders import get_loader
from tests.models import torch_two_input_module


def _traced(tmp_path, name="model.pth"):
    net = torch_two_input_module()
    path = tmp_path / name
    torch.jit.trace(net, (torch.randn(1, 3, 16, 16), torch.randn(1, 10))).save(str(path))
    return path, net


def test_torchscript_goes_through_torch_export_and_matches_torch(tmp_path):
    path, net = _traced(tmp_path)
    loaded = get_loader("PYTORCH").load(path, {"input0": (1, 3, 16, 16), "input1": (1, 10)}, {})
    assert "TS2EPConverter" in loaded.route
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


def test_torchscript_shape_mismatch_says_inputs_are_lexically_ordered(tmp_path):
    path, _ = _traced(tmp_path)
    with pytest.raises(InputConfigurationError, match="TVM cannot convert the PyTorch model.*lexically ordered"):
        get_loader("PYTORCH").load(path, {"input0": (1, 10), "input1": (1, 3, 16, 16)}, {})


def test_state_dict_is_refused_with_how_to_save_a_model(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(torch_two_input_module().state_dict(), path)
    with pytest.raises(InputConfigurationError, match="holds a state_dict.*torch.jit.trace"):
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
