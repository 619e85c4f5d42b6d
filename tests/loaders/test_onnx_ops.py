"""neocompile's own ONNX operator conversions (neocompile/loaders/onnx_ops): each on a small model, compiled for
this CPU and compared with onnxruntime; and the errors of a conversion that fails."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from neocompile.errors import InputConfigurationError
from neocompile.loaders.onnx import ROUTE, import_onnx, model_precision, onnx_reference

RNG = np.random.default_rng(7)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(*i) for i in inputs],
                              [helper.make_tensor_value_info(*o) for o in outputs], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _tensor(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _run_both(model, feeds):
    """(TVM's outputs, onnxruntime's) for ``feeds`` (name -> array, in graph input order)."""
    import tvm
    from tvm import relax

    mod = import_onnx(model, {k: v.shape for k, v in feeds.items()})
    vm = relax.VirtualMachine(tvm.compile(mod, tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(v) for v in feeds.values()])
    got = [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]
    return got, onnx_reference(model.SerializeToString(), list(feeds))(list(feeds.values()))


def _assert_same(model, feeds, atol=0.0):
    got, expected = _run_both(model, feeds)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(g.astype(np.float64), e.astype(np.float64), rtol=0, atol=atol)


def test_constant_of_shape_fills_a_rank_0_shape_as_torchscript_export_writes_it():
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["fill"], value=_tensor("v", np.array([2.5], np.float32))),
             helper.make_node("Add", ["x", "fill"], ["y"])]
    model = _model(nodes, [("x", TensorProto.FLOAT, [])], [("y", TensorProto.FLOAT, [])],
                   [_tensor("shape", np.zeros(0, np.int64))])
    _assert_same(model, {"x": np.array(1.25, np.float32)})


def test_constant_of_shape_fills_constant_and_computed_shapes_with_the_value_type():
    nodes = [helper.make_node("ConstantOfShape", ["const_shape"], ["a"], value=_tensor("v", np.array([7], np.int64))),
             helper.make_node("Shape", ["x"], ["x_shape"]),
             helper.make_node("ConstantOfShape", ["x_shape"], ["b"]),  # no value: float32 zeros
             helper.make_node("Add", ["x", "b"], ["y"])]
    model = _model(nodes, [("x", TensorProto.FLOAT, [2, 3, 4])],
                   [("a", TensorProto.INT64, [2, 3]), ("y", TensorProto.FLOAT, [2, 3, 4])],
                   [_tensor("const_shape", np.array([2, 3], np.int64))])
    _assert_same(model, {"x": RNG.standard_normal((2, 3, 4)).astype(np.float32)})


def test_constant_reads_value_float_floats_int_and_ints():
    nodes = [helper.make_node("Constant", [], ["f"], value_float=0.5),
             helper.make_node("Constant", [], ["fs"], value_floats=[1.0, 2.0, 3.0]),
             helper.make_node("Constant", [], ["i"], value_int=4),
             helper.make_node("Constant", [], ["is"], value_ints=[1, 3]),
             helper.make_node("Mul", ["x", "f"], ["xf"]),
             helper.make_node("Add", ["xf", "fs"], ["y"]),
             helper.make_node("Reshape", ["y", "is"], ["z"]),
             helper.make_node("Add", ["i", "i"], ["k"])]
    model = _model(nodes, [("x", TensorProto.FLOAT, [3])], [("z", TensorProto.FLOAT, [1, 3]), ("k", TensorProto.INT64, [])])
    _assert_same(model, {"x": np.array([1.0, -2.0, 4.0], np.float32)})


def test_conv_integer_subtracts_zero_points_pads_with_them_and_accumulates_exactly():
    w = RNG.integers(-128, 128, (4, 2, 3, 3)).astype(np.int8)
    node = helper.make_node("ConvInteger", ["x", "w", "x_zp", "w_zp"], ["y"], pads=[1, 1, 1, 1], strides=[2, 1], group=2)
    model = _model([node], [("x", TensorProto.UINT8, [1, 4, 7, 6])], [("y", TensorProto.INT32, [1, 4, 4, 6])],
                   [_tensor("w", w), _tensor("x_zp", np.array(131, np.uint8)),
                    _tensor("w_zp", np.array(-3, np.int8))])
    _assert_same(model, {"x": RNG.integers(0, 256, (1, 4, 7, 6)).astype(np.uint8)})


def test_qlinear_conv_with_bias_and_per_channel_weight_scales_matches_onnxruntime_exactly():
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], pads=[1, 1, 1, 1])
    inits = [_tensor("xs", np.float32(0.02)), _tensor("xz", np.uint8(120)),
             # 7-bit weights: onnxruntime's AVX2 u8 x s8 kernel saturates pairs of products at int16 beyond them
             _tensor("w", RNG.integers(-63, 64, (3, 2, 3, 3)).astype(np.int8)),
             _tensor("ws", np.array([0.01, 0.02, 0.005], np.float32)), _tensor("wz", np.zeros(3, np.int8)),
             _tensor("ys", np.float32(0.05)), _tensor("yz", np.uint8(5)),
             _tensor("b", RNG.integers(-500, 500, 3).astype(np.int32))]
    model = _model([node], [("x", TensorProto.UINT8, [1, 2, 6, 6])], [("y", TensorProto.UINT8, [1, 3, 6, 6])], inits)
    _assert_same(model, {"x": RNG.integers(0, 256, (1, 2, 6, 6)).astype(np.uint8)})


def test_qlinear_matmul_with_per_column_scales_matches_onnxruntime_exactly():
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    inits = [_tensor("as", np.float32(0.03)), _tensor("az", np.uint8(128)),
             _tensor("b", RNG.integers(0, 256, (16, 5)).astype(np.uint8)),
             _tensor("bs", np.linspace(0.01, 0.02, 5).astype(np.float32)), _tensor("bz", np.full(5, 100, np.uint8)),
             _tensor("ys", np.float32(0.4)), _tensor("yz", np.uint8(130))]
    model = _model([node], [("a", TensorProto.UINT8, [3, 16])], [("y", TensorProto.UINT8, [3, 5])], inits)
    _assert_same(model, {"a": RNG.integers(0, 256, (3, 16)).astype(np.uint8)})


def test_float16_batch_normalization_stays_float16_before_a_conv():
    c = 4
    inits = [_tensor("scale", (1 + 0.1 * RNG.standard_normal(c)).astype(np.float16)),
             _tensor("bias", (0.1 * RNG.standard_normal(c)).astype(np.float16)),
             _tensor("mean", (0.1 * RNG.standard_normal(c)).astype(np.float16)),
             _tensor("var", (1 + 0.1 * RNG.random(c)).astype(np.float16)),
             _tensor("w", (0.2 * RNG.standard_normal((2, c, 3, 3))).astype(np.float16))]
    nodes = [helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["bn"], epsilon=1e-5),
             helper.make_node("Conv", ["bn", "w"], ["y"], pads=[1, 1, 1, 1])]
    model = _model(nodes, [("x", TensorProto.FLOAT16, [1, c, 5, 5])], [("y", TensorProto.FLOAT16, [1, 2, 5, 5])], inits)
    _assert_same(model, {"x": RNG.standard_normal((1, c, 5, 5)).astype(np.float16)}, atol=2e-2)


def test_a_failing_conversion_names_the_operator_node_converter_and_route():
    node = helper.make_node("ConstantOfShape", ["shape"], ["y"], name="fill",
                            value=_tensor("v", np.array([1.0, 2.0], np.float32)))
    model = helper.make_model(helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                                [_tensor("shape", np.array([2], np.int64))]),
                              opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(InputConfigurationError) as err:
        import_onnx(model, {})
    assert str(err.value) == (
        "InputConfiguration: TVM cannot convert ONNX model: operator ConstantOfShape (node 'fill', neocompile converter "
        "constant.ConstantOfShape, opset 17) failed: ValueError: ConstantOfShape: value has 2 elements; expected one "
        f"(route tried: {ROUTE})")


def test_precision_is_read_from_operators_weights_and_casts():
    relu = helper.make_node("Relu", ["x"], ["y"])
    assert model_precision(_model([relu], [("x", TensorProto.FLOAT, [2])], [("y", TensorProto.FLOAT, [2])])) == "float32"
    assert model_precision(_model([relu], [("x", TensorProto.FLOAT16, [2])], [("y", TensorProto.FLOAT16, [2])])) == "float16"
    casts = [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT)]  # fp16 inside, fp32 inputs and outputs
    assert model_precision(_model(casts, [("x", TensorProto.FLOAT, [2])], [("y", TensorProto.FLOAT, [2])])) == "float16"
    dq = helper.make_node("DequantizeLinear", ["q", "s"], ["y"])
    assert model_precision(_model([dq], [("q", TensorProto.UINT8, [2])], [("y", TensorProto.FLOAT, [2])],
                                  [_tensor("s", np.float32(0.1))])) == "int8"


def test_onnxruntime_contrib_qlinear_operators_of_a_qoperator_model_match_onnxruntime(tmp_path):
    from tests import onnx_models

    model = onnx.load(onnx_models.quantized(onnx_models.residual_net(), tmp_path, "qoperator"))
    contrib = {n.op_type for n in model.graph.node if n.domain == "com.microsoft"}
    assert contrib == {"QGemm", "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearLeakyRelu", "QLinearSigmoid",
                       "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearSoftmax"}
    # Dequantize -> float op -> quantize may round an element one step away from onnxruntime's table kernels.
    _assert_same(model, {"data": RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)}, atol=2 * 2.0**-8)
