"""The MXNet symbol graph (``<prefix>-symbol.json``): reading it, finding its real inputs, converting it to Relax.

The JSON is nnvm's graph format: ``nodes`` in topological order (``op`` "null" for variables: data inputs,
parameters, labels), each input ``[node, output index, version]``, ``heads`` the outputs, and
``attrs.mxnet_version``. Pre-1.0 files spell a node's attributes ``param`` or ``attr`` instead of ``attrs``.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from ...datainput import TensorSpec
from ...errors import InputConfigurationError
from .ops import CONVERTERS, LOSS_OPS, AttributeNotSupported, Context, Node

#: Operators with several visible outputs, named ``<node>_output<i>`` as ``Symbol.list_outputs()`` does.
MULTI_OUTPUT = {"SliceChannel", "split"}


@dataclasses.dataclass
class Graph:
    nodes: list[Node]
    heads: list[tuple[int, int]]
    version: str  # "1.9.1", or "" when the file does not say

    def used_inputs(self, node: Node) -> list[tuple[int, int]]:
        """The inputs inference reads: a loss layer's label is not one of them."""
        return node.inputs[:1] if node.op in LOSS_OPS else node.inputs

    def reachable(self) -> list[int]:
        """Indices of the nodes the heads depend on, in topological (file) order."""
        seen: set[int] = set()
        stack = [nid for nid, _ in self.heads]
        while stack:
            nid = stack.pop()
            if nid in seen:
                continue
            seen.add(nid)
            stack.extend(i for i, _ in self.used_inputs(self.nodes[nid]))
        return sorted(seen)

    def output_names(self) -> list[str]:
        names = []
        for nid, index in self.heads:
            node = self.nodes[nid]
            names.append(node.name if node.op == "null" else
                         f"{node.name}_output{index}" if node.op in MULTI_OUTPUT else f"{node.name}_output")
        return names


def read(path: Path) -> Graph:
    """Parse a symbol file; raises InputConfigurationError when it is not one."""
    try:
        data = json.loads(Path(path).read_text())
        nodes = []
        for raw in data["nodes"]:
            attrs = {str(k): str(v) for k, v in (raw.get("attrs") or raw.get("param") or raw.get("attr") or {}).items()}
            inputs = [(int(entry[0]), int(entry[1]) if len(entry) > 1 else 0) for entry in raw.get("inputs", [])]
            nodes.append(Node(str(raw["op"]), str(raw["name"]), attrs, inputs))
        heads = [(int(h[0]), int(h[1]) if len(h) > 1 else 0) for h in data["heads"]]
        for nid, node in enumerate(nodes):
            if any(not 0 <= i < nid for i, _ in node.inputs):
                raise ValueError(f"node {nid} ('{node.name}') has an input that is not an earlier node")
        if not heads or any(not 0 <= i < len(nodes) for i, _ in heads):
            raise ValueError("'heads' does not name nodes of the graph")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputConfigurationError(
            f"Framework can't load the MXNet model: {Path(path).name} is not an MXNet symbol file "
            f"({type(exc).__name__}: {exc}); expected the <prefix>-symbol.json that HybridBlock.export() or "
            "Module.save_checkpoint() writes") from exc
    version = ""
    tag = (data.get("attrs") or {}).get("mxnet_version")
    if isinstance(tag, list) and len(tag) == 2 and str(tag[1]).isdigit():
        number = int(tag[1])  # 10901 -> 1.9.1
        version = f"{number // 10000}.{number // 100 % 100}.{number % 100}"
    return Graph(nodes, heads, version)


def unsupported_ops(graph: Graph) -> set[str]:
    return {graph.nodes[i].op for i in graph.reachable() if graph.nodes[i].op != "null"
            and graph.nodes[i].op not in CONVERTERS}


def data_inputs(graph: Graph, params: dict[str, np.ndarray]) -> list[TensorSpec]:
    """The variables that are neither parameters nor labels, with what the graph says of their shape: the
    ``__shape__`` attribute, else rank and channels from a Convolution/Deconvolution reading them directly (so that
    an NHWC shape is refused with the layout rule before conversion)."""
    order = graph.reachable()
    specs = []
    for nid in order:
        node = graph.nodes[nid]
        if node.op != "null" or node.name in params:
            continue
        shape: tuple | None = None
        declared = node.tuple("__shape__")
        if declared:
            shape = tuple(d if d > 0 else None for d in declared)
        else:
            shape = _shape_from_consumer(graph, nid, params)
        dtype = _DTYPE_CODES.get(node.raw("__dtype__") or "0", "float32")
        specs.append(TensorSpec(node.name, dtype, shape))
    return specs


_DTYPE_CODES = {"0": "float32", "1": "float64", "2": "float16", "3": "uint8", "4": "int32", "5": "int8", "6": "int64"}


def _shape_from_consumer(graph: Graph, nid: int, params: dict[str, np.ndarray]) -> tuple | None:
    for node in graph.nodes:
        if node.op not in ("Convolution", "Deconvolution") or not node.inputs or node.inputs[0][0] != nid:
            continue
        weight = graph.nodes[node.inputs[1][0]] if len(node.inputs) > 1 else None
        if weight is None or weight.name not in params:
            return None
        wshape = params[weight.name].shape
        kernel = node.tuple("kernel") or ()
        channels = wshape[1] * (node.int("num_group", 1) or 1) if node.op == "Convolution" else wshape[0]
        return (None, channels) + (None,) * len(kernel)
    return None


def to_relax(graph: Graph, params: dict[str, np.ndarray], inputs: list[TensorSpec], layout_hint: str,
             route: str) -> Any:
    """The Relax module of the graph: ``main(*inputs)`` returning the heads (a tuple when there are several)."""
    import tvm
    from tvm import relax

    missing = sorted(unsupported_ops(graph))
    if missing:
        raise InputConfigurationError(
            "TVM cannot convert MXNET model. Please make sure the framework you selected is correct. "
            f"The following operators are not implemented: {{{', '.join(missing)}}} (route tried: {route})")
    bb = relax.BlockBuilder()
    cx = Context(bb, layout_hint)
    params_vars = {spec.name: relax.Var(spec.name, relax.TensorType([int(d) for d in spec.shape], spec.dtype))
                   for spec in inputs}
    values: dict[int, list[Any]] = {}
    with bb.function("main", list(params_vars.values())):
        with bb.dataflow():
            for nid in graph.reachable():
                node = graph.nodes[nid]
                if node.op == "null":
                    if node.name in params_vars:
                        values[nid] = [params_vars[node.name]]
                    elif node.name in params:
                        values[nid] = [relax.const(params[node.name])]
                    else:  # data_inputs() made every other variable an input
                        raise InputConfigurationError(f"MXNet variable '{node.name}' has no value")
                    continue
                args = []
                for i, index in graph.used_inputs(node):
                    produced = values[i]
                    if index >= len(produced):
                        raise InputConfigurationError(
                            f"TVM cannot convert MXNET model: node '{node.name}' ({node.op}) reads output {index} of "
                            f"'{graph.nodes[i].name}', which has {len(produced)} (route tried: {route})")
                    args.append(produced[index])
                try:
                    result = CONVERTERS[node.op](cx, node, args)
                    outs = result if isinstance(result, list) else [result]
                    values[nid] = [o if isinstance(o, (relax.Var, tvm.ir.expr.Constant)) else bb.emit(o) for o in outs]
                except InputConfigurationError:
                    raise
                except Exception as exc:  # TVM's shape checks raise anything from ValueError to TVMError
                    what = "is not supported" if isinstance(exc, AttributeNotSupported) else "failed"
                    text = str(exc).strip().splitlines()
                    raise InputConfigurationError(
                        f"TVM cannot convert MXNET model: operator {node.op} (node '{node.name}') {what}: "
                        f"{type(exc).__name__}: {text[0] if text else ''} (route tried: {route})") from exc
            heads = [values[nid][index] for nid, index in graph.heads]
            out = bb.emit_output(heads[0] if len(heads) == 1 else relax.Tuple(heads))
        bb.emit_func_output(out)
    mod = bb.get()
    return tvm.IRModule({"main": mod["main"]})
