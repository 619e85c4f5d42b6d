"""Small model builders with seeded random weights, for the example archive, tests and benchmarks.

Nothing is downloaded: every model is built here with ``onnx.helper`` (or torch for PyTorch archives).
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import numpy as np


class _Graph:
    """A tiny ONNX graph builder: conv/bn/relu/pool/gemm with seeded random weights."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.n = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, array: np.ndarray, prefix: str = "w") -> str:
        from onnx import numpy_helper

        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        from onnx import helper

        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, bn: bool = True, relu: bool = True) -> str:
        w = self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
        y = self.node("Conv", [x, self.const(w)], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)
        if bn:
            y = self.node(
                "BatchNormalization",
                [y, self.const(1 + 0.1 * self.rng.standard_normal(cout)), self.const(0.1 * self.rng.standard_normal(cout)),
                 self.const(0.1 * self.rng.standard_normal(cout)), self.const(1 + 0.1 * self.rng.random(cout))],
                epsilon=1e-5,
            )
        return self.node("Relu", [y]) if relu else y

    def model(self, inputs: list[tuple[str, list[Any]]], output: str, out_name: str, out_shape: list[Any]) -> Any:
        from onnx import TensorProto, helper

        self.nodes.append(helper.make_node("Identity", [output], [out_name]))
        graph = helper.make_graph(
            self.nodes, "neocompile-zoo",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="neocompile.modelzoo")
        model.ir_version = 8
        return model


def small_cnn(num_classes: int = 10, size: int = 32, seed: int = 0, batch: Any = "N") -> Any:
    """A small CNN (two conv blocks, global pool, dense, softmax) with input ``data[N,3,size,size]``."""
    g = _Graph(seed)
    x = g.conv("data", 3, 16, 3)
    x = g.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = g.conv(x, 16, 32, 3)
    x = g.node("GlobalAveragePool", [x])
    x = g.node("Flatten", [x])
    w = g.rng.standard_normal((num_classes, 32)) * 0.2
    x = g.node("Gemm", [x, g.const(w), g.const(np.zeros(num_classes))], transB=1)
    x = g.node("Softmax", [x], axis=1)
    return g.model([("data", [batch, 3, size, size])], x, "prob", [batch, num_classes])


def resnet(depth: int = 50, num_classes: int = 1000, size: int = 224, seed: int = 0, batch: Any = 1) -> Any:
    """A ResNet-v1 (bottleneck blocks for depth 50/101/152) with random weights, input ``data[batch,3,size,size]``."""
    blocks = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3], 26: [2, 2, 2, 2]}[depth]
    g = _Graph(seed)
    x = g.conv("data", 3, 64, 7, stride=2)
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, count in enumerate(blocks):
        width = 64 * 2**stage
        for i in range(count):
            stride = 2 if i == 0 and stage > 0 else 1
            y = g.conv(x, cin, width, 1)
            y = g.conv(y, width, width, 3, stride=stride)
            y = g.conv(y, width, width * 4, 1, relu=False)
            shortcut = g.conv(x, cin, width * 4, 1, stride=stride, relu=False) if i == 0 else x
            x = g.node("Relu", [g.node("Add", [y, shortcut])])
            cin = width * 4
    x = g.node("GlobalAveragePool", [x])
    x = g.node("Flatten", [x])
    w = g.rng.standard_normal((num_classes, cin)) * np.sqrt(1.0 / cin)
    x = g.node("Gemm", [x, g.const(w), g.const(np.zeros(num_classes))], transB=1)
    return g.model([("data", [batch, 3, size, size])], x, "logits", [batch, num_classes])


def write_archive(path: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` (archive name -> bytes) as a gzip-compressed tar at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def onnx_archive(path: Path, model: Any, name: str = "model.onnx") -> Path:
    """Pack an ONNX model as a Neo-style archive."""
    return write_archive(path, {name: model.SerializeToString()})
