"""Shape arithmetic folded before TVM imports an ONNX graph (neocompile/loaders/onnx_fold.py): what is folded, what
is never evaluated, and a model whose channel split torch exports as run-time shape arithmetic (ShuffleNetV2's
``chunk``) compiled and verified end to end."""
from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import neocompile
from neocompile import modelzoo
from neocompile.loaders.onnx_fold import MAX_ELEMENTS, fold_shapes
from tests.need import need


def _const(name: str, value) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, dtype=np.int64), name))


def _chunk_model() -> onnx.ModelProto:
    """``x[:, :C/2]`` with C read from the input's shape at run time (as torch.onnx exports ``chunk``), reshaped by
    a shape concatenated from Shape; the batch dimension is symbolic."""
    nodes = [
        _const("one", [1]), _const("half", [2]), _const("zero", [0]), _const("axis", [1]), _const("idx", 1),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "idx"], ["c"], axis=0),
        helper.make_node("Add", ["c", "one"], ["c1"]),
        helper.make_node("Div", ["c1", "half"], ["h"]),
        helper.make_node("Mul", ["h", "one"], ["end"]),
        helper.make_node("Slice", ["x", "zero", "end", "axis"], ["first"]),
        helper.make_node("Shape", ["first"], ["fshape"], start=0, end=1),
        _const("flat", [-1]),
        helper.make_node("Concat", ["fshape", "flat"], ["target"], axis=0),
        helper.make_node("Reshape", ["first", "target"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "chunk", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 4, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_shape_arithmetic_becomes_constants_with_the_same_result():
    model = _chunk_model()
    x = np.random.default_rng(0).standard_normal((2, 6, 4, 5)).astype(np.float32)
    expected = _run(model, x)
    folded = fold_shapes(model, {"x": (2, 6, 4, 5)})
    ops = [n.op_type for n in model.graph.node]
    assert folded == 7, ops  # Shape, Gather, Add, Div, Mul, Shape, Concat
    assert not {"Shape", "Gather", "Add", "Div", "Mul", "Concat"} & set(ops), ops
    values = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node if n.op_type == "Constant"}
    assert values["end"].tolist() == [3] and values["target"].tolist() == [2, -1]
    assert {"one", "idx"}.isdisjoint(values), "constants nothing reads any more are dropped"
    np.testing.assert_array_equal(_run(model, x), expected)


def test_nothing_folds_without_static_shapes_or_beyond_small_values():
    model = _chunk_model()
    assert fold_shapes(model, {"x": ("N", 6, 4, 5)}) == 0  # the Reshape's target needs the batch: not known
    # ConstantOfShape of the input's shape would be a tensor of the data's size: never materialized
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ConstantOfShape", ["s"], ["zeros"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
             helper.make_node("Add", ["x", "zeros"], ["y"])]
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 32, 32])])
    big = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert 64 * 32 * 32 > MAX_ELEMENTS
    fold_shapes(big, {"x": (1, 64, 32, 32)})
    assert [n.op_type for n in big.graph.node] == ["Constant", "ConstantOfShape", "Add"]


def test_only_listed_operators_of_the_default_domain_are_evaluated():
    nodes = [_const("a", [3]), _const("b", [4]),
             helper.make_node("Add", ["a", "b"], ["c"], domain="com.example"),  # a custom op: never run here
             helper.make_node("RandomUniformLike", ["a"], ["r"], dtype=TensorProto.FLOAT),  # not pure
             helper.make_node("Add", ["a", "b"], ["d"])]
    graph = helper.make_graph(nodes, "ops", [], [helper.make_tensor_value_info(n, TensorProto.INT64, None) for n in "cd"]
                              + [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    assert fold_shapes(model, {}) == 1
    assert [(n.op_type, n.domain) for n in model.graph.node] == [
        ("Constant", ""), ("Constant", ""), ("Add", "com.example"), ("RandomUniformLike", ""), ("Constant", "")]


def test_a_channel_split_exported_by_torch_compiles_and_verifies(tmp_path):
    """ShuffleNetV2's unit as torch.onnx exports it: ``chunk`` becomes Shape -> Gather -> Add -> Div -> Mul -> Slice;
    without folding, the slices had no static shape and legalization failed."""
    torch = need("torch")

    class Shuffle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.branch = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 1), torch.nn.ReLU(),
                                              torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.Conv2d(8, 8, 1))

        def forward(self, x):
            left, right = x.chunk(2, dim=1)
            out = torch.cat((left, self.branch(right)), dim=1)
            b, c, h, w = out.shape
            return out.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)

    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.onnx.export(Shuffle().eval(), (torch.randn(1, 16, 9, 7),), buf, input_names=["data"], opset_version=17,
                      dynamo=False)
    exported = onnx.load_from_string(buf.getvalue())
    assert {"Shape", "Slice"} <= {n.op_type for n in exported.graph.node}  # the construct under test
    archive = modelzoo.write_archive(tmp_path / "shuffle.tar.gz", {"model.onnx": buf.getvalue()})
    result = neocompile.compile_model(str(archive), "ONNX", str(tmp_path / "out"), '{"data": [1, 16, 9, 7]}',
                                      target_device="ml_c4")
    assert result.verification["status"] == "passed", result.verification


@pytest.mark.parametrize("shape", [(1, 6, 4, 5), (3, 6, 4, 5)])
def test_the_batch_given_is_the_one_folded(shape):
    model = _chunk_model()
    fold_shapes(model, {"x": shape})
    target = next(numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node if n.output[0] == "target")
    assert target.tolist() == [shape[0], -1]


def test_values_sized_by_their_inputs_are_bounded_before_they_are_made(monkeypatch):
    """ConstantOfShape, Expand, Tile and Range make outputs sized by their input *values*: one asking for 10**10
    elements (a hostile file, or a mask of the data's size) is never evaluated."""
    from neocompile.loaders import onnx_fold

    evaluated = []
    real = onnx_fold._evaluate
    monkeypatch.setattr(onnx_fold, "_evaluate", lambda node, *a: evaluated.append(node.op_type) or real(node, *a))
    huge = [100000, 100000]
    nodes = [_const("shape", huge), _const("one", [1]), _const("reps", huge),
             _const("start", 0), _const("limit", 10**10), _const("delta", 1),
             helper.make_node("ConstantOfShape", ["shape"], ["filled"]),
             helper.make_node("Expand", ["one", "shape"], ["expanded"]),
             helper.make_node("Tile", ["one", "reps"], ["tiled"]),
             helper.make_node("Range", ["start", "limit", "delta"], ["range"])]
    outputs = [helper.make_tensor_value_info(n, TensorProto.INT64, None) for n in ("expanded", "tiled", "range")]
    graph = helper.make_graph(nodes, "huge", [], outputs + [helper.make_tensor_value_info("filled", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert fold_shapes(model, {}) == 0
    assert {"ConstantOfShape", "Expand", "Tile", "Range"} <= {n.op_type for n in model.graph.node}
    assert set(evaluated) == {"Constant"}, evaluated  # only the graph's own small constants were read
