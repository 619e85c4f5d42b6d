import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from neocompile.errors import InputConfigurationError
from neocompile.loaders import get_loader
from neocompile import modelzoo


def _save(tmp_path, model, name="m.onnx"):
    path = tmp_path / name
    onnx.save(model, path)
    return path


def test_loads_with_declared_names_and_binds_the_given_batch(tmp_path):
    loaded = get_loader("onnx").load(_save(tmp_path, modelzoo.small_cnn(size=16)), {"data": (2, 3, 16, 16)}, {})
    assert [(i.name, i.shape) for i in loaded.inputs] == [("data", (2, 3, 16, 16))]
    assert [(o.name, o.dtype, o.shape) for o in loaded.outputs] == [("prob", "float32", (2, 10))]
    assert [p.name for p in loaded.mod["main"].params] == ["data"]  # weights bound, not inputs


def test_reference_runs_onnxruntime(tmp_path):
    loaded = get_loader("ONNX").load(_save(tmp_path, modelzoo.small_cnn(size=16)), {"data": (1, 3, 16, 16)}, {})
    (out,) = loaded.reference([np.ones((1, 3, 16, 16), np.float32)])
    assert out.shape == (1, 10) and np.isclose(out.sum(), 1.0)


def test_unsupported_operators_are_all_listed(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("LSTM", ["x", "w", "r"], ["h"], hidden_size=2),
             helper.make_node("GRU", ["h", "w2", "r2"], ["y"], hidden_size=2)]
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [1, 8, 8], np.zeros(64)) for n in ("w", "r")]
    inits += [helper.make_tensor(n, TensorProto.FLOAT, [1, 6, 2], np.zeros(12)) for n in ("w2", "r2")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(InputConfigurationError, match=r"TVM cannot convert ONNX model.*not implemented: \{GRU, LSTM\}"):
        get_loader("ONNX").load(_save(tmp_path, model), {"x": (1, 4, 8)}, {})


def test_a_corrupt_file_is_reported_not_crashed(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputConfigurationError, match="Unable to load ONNX model m.onnx"):
        get_loader("ONNX").load(path, None, {})


def test_frameworks_without_a_loader_yet_say_so():
    from neocompile.loaders import LOADERS

    supported = ", ".join(sorted(LOADERS))
    assert "DARKNET" not in LOADERS and {"ONNX", "PYTORCH"} <= set(LOADERS)
    with pytest.raises(InputConfigurationError, match=f"'DARKNET' is not supported by this version of neocompile yet; supported: {supported}"):
        get_loader("DARKNET")


def test_contrib_domain_operators_are_named_with_their_domain(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    node = helper.make_node("FastGelu", ["x"], ["y"], domain="com.microsoft")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(InputConfigurationError, match=r"not implemented: \{com.microsoft.FastGelu\}"):
        get_loader("ONNX").load(_save(tmp_path, model), None, {})


def _mixed_weights_model():
    """MatMuls with a float32 and a float16 weight large enough to stay in the file, and a small float_data bias."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32)).astype(np.float32)  # 8 KiB of raw_data: left in the file while importing
    w16 = rng.standard_normal((32, 64)).astype(np.float16)  # 4 KiB float16
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["h2"]),
             helper.make_node("Cast", ["w16"], ["w32"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["h2", "w32"], ["y"])]
    inits = [onnx.numpy_helper.from_array(w, "w"), helper.make_tensor("b", TensorProto.FLOAT, [32], np.arange(32.0)),
             onnx.numpy_helper.from_array(w16, "w16")]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)])


def test_large_initializers_are_read_from_the_file_into_the_same_constants(tmp_path):
    from neocompile.loaders import onnx_file

    path = _save(tmp_path, _mixed_weights_model())
    model, weights = onnx_file.load(path)
    assert sorted(weights.spans) == [0, 2]  # w and w16; the small bias stays in the proto
    assert model.graph.initializer[0].raw_data == b"" and list(model.graph.initializer[1].float_data)
    full = onnx.load(str(path))
    for i in weights.spans:
        got = np.from_dlpack(weights.tensor(i, model.graph.initializer[i]))
        want = onnx.numpy_helper.to_array(full.graph.initializer[i])
        assert got.dtype == want.dtype and np.array_equal(got, want)
    weights.close()
    loaded = get_loader("ONNX").load(path, {"x": (2, 64)}, {})
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.compile(loaded.mod, "llvm"), tvm.cpu())
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), loaded.reference([x])[0], rtol=1e-4, atol=1e-4)


def test_a_truncated_file_is_reported_as_onnx_reports_it(tmp_path):
    path = _save(tmp_path, _mixed_weights_model())
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(Exception) as want:
        onnx.load(str(path))
    with pytest.raises(InputConfigurationError, match="Unable to load ONNX model m.onnx") as got:
        get_loader("ONNX").load(path, None, {})
    assert str(want.value) in str(got.value)
