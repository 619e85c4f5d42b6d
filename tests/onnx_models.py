"""ONNX models as exporters and tools really write them, built in the tests (seeded weights, nothing downloaded):
a BERT-family encoder exported by both torch exporters, onnxruntime.quantization outputs, a float16 graph."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SEQ = 16
BERT_CONFIG = f'{{"input_ids": [1, {SEQ}], "attention_mask": [1, {SEQ}]}}'
CNN_CONFIG = '{"data": [1, 3, 8, 8]}'


def bert_encoder() -> Any:
    """A 2-layer BertModel (hidden 64) from a BertConfig, seeded; forward(input_ids, attention_mask) ->
    (last_hidden_state, pooler_output), as a sentence-embedding user wraps it for export."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64)
    bert = BertModel(config).eval()

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)
            return out[0], out[1]

    return Encoder().eval()


def bert_onnx(path: Path, dynamo: bool) -> Path:
    """The encoder exported with ``torch.onnx.export``: TorchScript-based (``dynamo=False``, opset 17) or
    torch.export-based (``dynamo=True``, onnxscript)."""
    import torch

    ids = torch.randint(0, 1000, (1, SEQ), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(1, SEQ, dtype=torch.int64)
    names = {"input_names": ["input_ids", "attention_mask"], "output_names": ["last_hidden_state", "pooler_output"]}
    if dynamo:
        torch.onnx.export(bert_encoder(), (ids, mask), dynamo=True, verbose=False, **names).save(str(path))
    else:
        torch.onnx.export(bert_encoder(), (ids, mask), str(path), dynamo=False, opset_version=17, **names)
    return path


def conv_net() -> Any:
    """Conv(pad) -> Relu -> grouped strided Conv -> Relu -> Flatten -> MatMul: the ops quantizers rewrite."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> Any:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["data", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1], group=2),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Flatten", ["r2"], ["f"]),
             helper.make_node("MatMul", ["f", "w3"], ["y"])]
    graph = helper.make_graph(
        nodes, "conv-net", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [weight("w1", 8, 3, 3, 3), weight("b1", 8), weight("w2", 8, 4, 3, 3), weight("b2", 8), weight("w3", 128, 10)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def quantized(model: Any, folder: Path, how: str) -> Path:
    """``model`` through onnxruntime.quantization: ``dynamic`` (quantize_dynamic: DynamicQuantizeLinear,
    ConvInteger, MatMulInteger), ``qdq`` (quantize_static's default QuantizeLinear/DequantizeLinear pairs) or
    ``qoperator`` (quantize_static QOperator with per-channel weights: QLinearConv, QLinearMatMul, and
    onnxruntime's com.microsoft QLinear* and QGemm for the other operators)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_dynamic, quantize_static

    source, target = folder / f"float-{how}.onnx", folder / f"{how}.onnx"
    onnx.save(model, source)
    if how == "dynamic":
        quantize_dynamic(str(source), str(target))
        return target

    class Calibration(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(1)
            self.batches = iter([{"data": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.batches, None)

    fmt = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[how]
    quantize_static(str(source), str(target), Calibration(), quant_format=fmt, per_channel=how == "qoperator")
    return target


def to_float16(model: Any) -> Any:
    """Every float32 initializer, Constant, Cast target and declared tensor of ``model`` as float16 (what
    onnxconverter_common's float16 conversion does without keep_io_types)."""
    from onnx import TensorProto, numpy_helper

    def narrow(tensor: Any) -> Any:
        with np.errstate(over="ignore"):  # -3.4e38 attention-mask fillers become -inf, as in the real converter
            return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name)

    graph = model.graph
    for i, tensor in enumerate(graph.initializer):
        if tensor.data_type == TensorProto.FLOAT:
            graph.initializer[i].CopyFrom(narrow(tensor))
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t") and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(narrow(attr.t))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
    for value in [*graph.input, *graph.output]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
    del graph.value_info[:]
    return model


def residual_net() -> Any:
    """Convs joined by Add, Mul and Concat, then LeakyRelu, Sigmoid, AveragePool, GlobalAveragePool, Gemm and
    Softmax: in QOperator format, every onnxruntime ``com.microsoft`` QLinear* operator neocompile converts."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)

    def weight(name: str, *shape: int) -> Any:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["data", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c1", "c2"], ["s"]),
             helper.make_node("Mul", ["s", "c1"], ["m"]),
             helper.make_node("Concat", ["m", "c2"], ["cat"], axis=1),
             helper.make_node("LeakyRelu", ["cat"], ["lr"], alpha=0.1),
             helper.make_node("Sigmoid", ["lr"], ["sg"]),
             helper.make_node("AveragePool", ["sg"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["ap"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["f"]),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["g"], transB=1),
             helper.make_node("Softmax", ["g"], ["y"])]
    graph = helper.make_graph(
        nodes, "residual-net", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [weight("w1", 4, 3, 3, 3), weight("b1", 4), weight("w2", 4, 4, 3, 3), weight("b2", 4), weight("w3", 10, 8),
         weight("b3", 10)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
