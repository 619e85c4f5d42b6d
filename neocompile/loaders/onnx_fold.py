"""Folding an ONNX graph's shape arithmetic into constants before TVM imports it.

Exporters compute sizes from tensor shapes at run time: torch.onnx exports ``x.chunk(2, dim=1)`` (ShuffleNetV2's
channel split) as ``Shape -> Gather -> Add -> Div -> Mul -> Slice``. With DataInputConfig's static input shapes
every such value is known at compile time, but TVM's importer keeps the chain (``shape_of``, ``scatter_elements``,
``dynamic_strided_slice``); the sliced tensor then has no static shape, and legalizing what reads it fails ("emit_te
now only supports Tensor that has ShapeExpr shape").

Here ONNX's shape inference, given the static input shapes, says what each ``Shape`` node returns, and a node whose
inputs are all known small values is evaluated with onnx's reference implementation (numpy), repeatedly until nothing
more folds. Only the pure operators of :data:`FOLDABLE` in the default domain are evaluated, never a custom or contrib
one, and only on values of at most :data:`MAX_ELEMENTS` elements: weights and activations are never touched. Each
folded node becomes a ``Constant`` node with the same output name; Constant nodes nothing reads any more are dropped.
"""
from __future__ import annotations

from typing import Any

import numpy as np

#: Operators evaluated when every input is known: shape and index arithmetic, nothing with state or side effects.
FOLDABLE = frozenset({
    "Abs", "Add", "And", "Cast", "Ceil", "Concat", "ConstantOfShape", "Div", "Equal", "Expand", "Flatten", "Floor",
    "Gather", "Greater", "GreaterOrEqual", "Identity", "Less", "LessOrEqual", "Max", "Min", "Mod", "Mul", "Neg", "Not",
    "Or", "Range", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSum", "Reshape", "Shape", "Size", "Slice", "Squeeze",
    "Sub", "Tile", "Transpose", "Unsqueeze", "Where",
})
#: The largest value folded (elements): shapes, indices and the like, not tensors of the model's data.
MAX_ELEMENTS = 1024
_ROUNDS = 16  # shape inference and folding alternate at most this often (each round needs the last one's constants)


def fold_shapes(model: Any, shapes: dict[str, tuple[int, ...]]) -> int:
    """Fold ``model``'s main graph in place for the static input ``shapes``; returns the number of nodes folded."""
    graph = model.graph
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=1)
    known = _known_values(graph)
    total = 0
    for _ in range(_ROUNDS):
        static = _static_shapes(model, shapes)
        folded = _fold_round(graph, known, static, opset)
        total += folded
        if not folded:
            break
    if total:
        _drop_unread_constants(graph)
    return total


def _known_values(graph: Any) -> dict[str, np.ndarray]:
    """Small values the graph states: its Constant nodes and the initializers whose data is in the proto."""
    from onnx import numpy_helper

    known: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        if _elements(init.dims) <= MAX_ELEMENTS:
            try:
                array = numpy_helper.to_array(init)
            except Exception:  # noqa: BLE001 - data left in the file (onnx_file) or unreadable: not known
                continue
            if array.size == _elements(init.dims):
                known[init.name] = array
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1 and \
                all(_elements(a.t.dims) <= MAX_ELEMENTS for a in node.attribute if a.HasField("t")):
            value = _evaluate(node, [], None)
            if value is not None:
                known[node.output[0]] = value[0]
    return known


def _static_shapes(model: Any, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Each value's shape where ONNX's shape inference finds it fully static, the graph inputs set to ``shapes``.
    Inferred on a skeleton of the model: its nodes, and initializers without data beyond MAX_ELEMENTS."""
    import onnx

    skeleton = onnx.ModelProto()
    skeleton.ir_version = model.ir_version
    skeleton.opset_import.extend(model.opset_import)
    skeleton.functions.extend(model.functions)
    graph = skeleton.graph
    graph.node.extend(model.graph.node)
    graph.output.extend(model.graph.output)
    for value in model.graph.input:
        copy = graph.input.add()
        copy.CopyFrom(value)
        dims = shapes.get(value.name)
        if dims is not None and all(isinstance(d, int) for d in dims) and copy.type.HasField("tensor_type"):
            copy.type.tensor_type.shape.Clear()
            for d in dims:
                copy.type.tensor_type.shape.dim.add().dim_value = int(d)
    for init in model.graph.initializer:
        copy = graph.initializer.add()
        if _elements(init.dims) <= MAX_ELEMENTS:
            copy.CopyFrom(init)
        else:
            copy.name, copy.data_type = init.name, init.data_type
            copy.dims.extend(init.dims)
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is a help here, never a requirement
        return {}
    out: dict[str, tuple[int, ...]] = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tensor = value.type.tensor_type if value.type.HasField("tensor_type") else None
        if tensor is None or not tensor.HasField("shape"):
            continue
        dims = tensor.shape.dim
        if all(d.HasField("dim_value") and d.dim_value >= 0 for d in dims):
            out[value.name] = tuple(int(d.dim_value) for d in dims)
    for init in model.graph.initializer:
        out[init.name] = tuple(int(d) for d in init.dims)
    return out


def _fold_round(graph: Any, known: dict[str, np.ndarray], static: dict[str, tuple[int, ...]], opset: int) -> int:
    from onnx import helper, numpy_helper

    folded = 0
    for index, node in enumerate(graph.node):
        if node.op_type not in FOLDABLE or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
            continue
        if any(o in known for o in node.output):
            continue  # folded already
        if node.op_type in ("Shape", "Size"):
            shape = static.get(node.input[0]) if node.input else None
            values = None if shape is None else [_shape_value(node, shape)]
        elif all(not name or name in known for name in node.input):
            inputs = [known[name] if name else None for name in node.input]
            if _output_elements(node, inputs) > MAX_ELEMENTS:
                continue  # never materialized: a mask or a broadcast of the data's size
            values = _evaluate(node, inputs, opset)
        else:
            continue
        if values is None or len(values) != 1 or values[0].size > MAX_ELEMENTS:
            continue
        name = node.output[0]
        graph.node[index].CopyFrom(helper.make_node("Constant", [], [name], name=f"{node.name or name}_folded",
                                                    value=numpy_helper.from_array(values[0], name)))
        known[name] = values[0]
        folded += 1
    return folded


def _output_elements(node: Any, inputs: list[np.ndarray | None]) -> int:
    """An upper bound of the elements ``node`` would make, for the operators whose output size comes from their
    input values rather than their input sizes (checked before anything is allocated); 0 for the others."""
    try:
        if node.op_type == "ConstantOfShape":
            return _elements(inputs[0].reshape(-1).tolist())
        if node.op_type == "Expand":
            return _elements(np.broadcast_shapes(inputs[0].shape, tuple(int(d) for d in inputs[1].reshape(-1))))
        if node.op_type == "Tile":
            return inputs[0].size * _elements(inputs[1].reshape(-1).tolist())
        if node.op_type == "Range":
            start, limit, delta = (float(v.reshape(-1)[0]) for v in inputs[:3])
            return max(0, int(np.ceil((limit - start) / delta))) if delta else MAX_ELEMENTS + 1
    except (ValueError, TypeError, IndexError, AttributeError, OverflowError):
        return MAX_ELEMENTS + 1  # malformed: left for TVM (and its error) to meet
    return 0


def _shape_value(node: Any, shape: tuple[int, ...]) -> np.ndarray:
    if node.op_type == "Size":
        return np.array(_elements(shape), dtype=np.int64)
    attrs = {a.name: a.i for a in node.attribute}
    rank = len(shape)
    start, end = attrs.get("start", 0), attrs.get("end", rank)
    start, end = (max(0, min(rank, v + rank if v < 0 else v)) for v in (start, end))
    return np.array(shape[start:end], dtype=np.int64)


def _evaluate(node: Any, inputs: list[np.ndarray | None], opset: int | None) -> list[np.ndarray] | None:
    """``node``'s outputs by onnx's reference implementation, or None where it cannot say."""
    from onnx.reference import ReferenceEvaluator

    try:
        session = ReferenceEvaluator(node, opsets={"": opset} if opset else None)
        feeds = {name: value for name, value in zip(node.input, inputs) if name}
        return [np.asarray(v) for v in session.run(None, feeds)]
    except Exception:  # noqa: BLE001 - anything the reference cannot do stays for TVM to convert
        return None


def _drop_unread_constants(graph: Any) -> None:
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    read |= _subgraph_reads(graph)
    keep = [n for n in graph.node if not (n.op_type == "Constant" and not any(o in read for o in n.output))]
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


def _subgraph_reads(graph: Any) -> set[str]:
    """Names the subgraphs (If, Loop, Scan bodies) read, which may come from the outer graph."""
    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                names |= {name for n in sub.node for name in n.input} | {o.name for o in sub.output}
                names |= _subgraph_reads(sub)
    return names


def _elements(dims: Any) -> int:
    count = 1
    for d in dims:
        count *= int(d)
    return count
