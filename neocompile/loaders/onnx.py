"""ONNX loader: one ``.onnx`` file, imported with TVM's Relax ONNX frontend."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..datainput import TensorSpec, check_against_model
from ..errors import InputConfigurationError
from . import onnx_file, onnx_fold
from .base import LoadedModel, Loader, outputs_from_relax

_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}


def _declared_inputs(model: Any) -> list[TensorSpec]:
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        ttype = value.type.tensor_type
        dims = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None) for d in ttype.shape.dim
        ) if ttype.HasField("shape") else None
        specs.append(TensorSpec(value.name, _ONNX_DTYPES.get(ttype.elem_type, f"onnx:{ttype.elem_type}"), dims))
    return specs


#: How ONNX models get into Relax; named in the manifest and in every conversion error.
ROUTE = "onnx -> tvm.relax.frontend.onnx.from_onnx (with neocompile.loaders.onnx_ops converters)"

#: Operators that mark a quantized graph (onnxruntime.quantization writes them; QLinear* too); such a model verifies
#: as "int8".
_QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QGemm"}
_FLOAT_PRECISIONS = {10: "float16", 16: "bfloat16"}  # ONNX TensorProto elem types narrower than float32


def _walk(graph: Any):
    """Every node of ``graph`` and of its subgraphs (If/Loop bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _walk(sub)


def _domain(node: Any) -> str:
    return "" if node.domain in ("", "ai.onnx") else node.domain


def _unsupported_ops(model: Any) -> set[str]:
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    from .onnx_ops import converters

    known = {("", op) for op in _get_convert_map()} | {("", "If")} | set(converters())
    # TVM ignores domains; a contrib op (com.microsoft, ai.onnx.ml, ...) is known only when neocompile converts it.
    return {f"{d}.{n.op_type}" if d else n.op_type for n in _walk(model.graph) if (d := _domain(n), n.op_type) not in known}


def model_precision(model: Any) -> str:
    """The narrowest arithmetic the model computes in: "int8" (quantized), "bfloat16", "float16" or "float32".

    Looks at operators, initializers, declared value types and Cast targets, so an fp16 graph with fp32 inputs and
    outputs (onnxconverter_common's keep_io_types) counts as float16."""
    nodes = list(_walk(model.graph))
    if any(n.op_type in _QUANTIZED_OPS or n.op_type.startswith("QLinear") for n in nodes):
        return "int8"
    graph = model.graph
    types = {t.data_type for t in graph.initializer}
    types |= {v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
    types |= {a.i for n in nodes if n.op_type == "Cast" for a in n.attribute if a.name == "to"}
    types |= {a.t.data_type for n in nodes if n.op_type in ("Constant", "ConstantOfShape") for a in n.attribute
              if a.HasField("t")}
    for elem_type in (16, 10):  # the coarser first
        if elem_type in types:
            return _FLOAT_PRECISIONS[elem_type]
    return "float32"


def onnx_reference(model: bytes | str | Path, names: Sequence[str]):
    """A callable running the model (its bytes, or better its file: onnxruntime then reads it itself, and nobody
    holds a serialized copy meanwhile) with onnxruntime (single thread, deterministic)."""
    source = str(model) if isinstance(model, Path) else model

    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        # The graph as written, weights held once: onnxruntime's optimizers and arena would add layout-converted
        # copies of the weights (ResNet-50: 313 MB peak instead of 174 MB) for speed a one-off run does not need.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.enable_cpu_mem_arena = False
        sess = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        return sess.run(None, dict(zip(names, arrays)))

    return run


def record_reference(args: dict[str, Any], specs: Sequence[TensorSpec], arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``OnnxLoader.side_reference``: onnxruntime on ``args["model"]`` in a process of its own, without TVM."""
    return onnx_reference(Path(args["model"]), [s.name for s in specs])(arrays)


class OperatorConversionError(Exception):
    """One ONNX node failed to convert; names the operator, the node and whose converter ran."""

    def __init__(self, op_type: str, node: str, converter: str, cause: BaseException):
        self.op_type, self.node, self.converter, self.cause = op_type, node, converter, cause
        where = f"node '{node}'" if node else "an unnamed node"
        super().__init__(f"operator {op_type} ({where}, {converter}) failed: {type(cause).__name__}: {cause}".strip())


def _importer_class(weights: "onnx_file.Weights | None" = None) -> type:
    """TVM's ``ONNXGraphImporter`` with neocompile's converters (``onnx_ops``) taking precedence over TVM's, and the
    main graph's initializers that ``weights`` holds read from the file into their tensors (``onnx_file``).

    The frontend's extension point is its per-node ``_convert_operator``; overriding it (rather than patching the
    module's ``_get_convert_map``) keeps TVM untouched for everyone else in the process."""
    from tvm import relax
    from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

    from .onnx_ops import converters

    ours = {op: cls for (_, op), cls in converters().items()}

    class Importer(ONNXGraphImporter):
        def _check_for_unsupported_ops(self, graph: Any) -> None:
            pass  # import_onnx has checked every node, subgraphs and domains included

        def _parse_graph_initializers(self, graph: Any) -> None:
            if weights is None or self._keep_params_in_input:
                return super()._parse_graph_initializers(graph)
            for index, init_tensor in enumerate(graph.initializer):  # TVM's loop, constants only
                if not init_tensor.name.strip():
                    raise ValueError("Tensor's name is required.")
                array = weights.tensor(index, init_tensor) if index in weights else self._parse_array(init_tensor)
                self._nodes[init_tensor.name] = relax.const(array)

        def _convert_operator(self, op_name: str, inputs: Any, attrs: dict, opset: int) -> Any:
            node = attrs.get("tvm_custom", {}).get("name", "")
            mine = ours.get(op_name)
            converter = f"neocompile converter {mine.__module__.rsplit('.', 1)[-1]}.{mine.__name__}" if mine else "TVM's converter"
            try:
                if mine is None:
                    return super()._convert_operator(op_name, inputs, attrs, opset)
                result = mine.get_converter(opset)(self.bb, inputs, attrs, [self._nodes, self._params])
                return self.bb.normalize(result) if isinstance(result, relax.Expr) else result
            except OperatorConversionError:
                raise
            except Exception as exc:  # the frontend raises anything from KeyError to TVMError
                raise OperatorConversionError(op_name, node, f"{converter}, opset {opset}", exc) from exc

    return Importer


def _opset(model: Any) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=1)


def import_onnx(model: Any, shapes: dict[str, tuple[int, ...]], framework: str = "ONNX",
                weights: "onnx_file.Weights | None" = None) -> Any:
    """Convert an ONNX model to Relax (TVM's frontend plus ``onnx_ops``), turning failures into Neo-style errors that
    name the operator, the node and the route tried. ``weights``: the initializers ``onnx_file.load`` left in the
    file."""
    missing = _unsupported_ops(model)
    if missing:
        raise InputConfigurationError(
            f"TVM cannot convert {framework} model. Please make sure the framework you selected is correct. "
            f"The following operators are not implemented: {{{', '.join(sorted(missing))}}} (route tried: {ROUTE})"
        )
    if model.ir_version < 3:
        raise InputConfigurationError(f"TVM cannot convert {framework} model: ONNX IR version {model.ir_version} is "
                                      "not supported; expected 3 (ONNX 1.1) or newer")
    # Shape arithmetic the exporter left for run time (Shape -> Gather -> ... -> Slice) is known for these input
    # shapes: folded to constants, the tensors it sizes get static shapes (onnx_fold).
    onnx_fold.fold_shapes(model, shapes)
    dtypes = {spec.name: spec.dtype for spec in _declared_inputs(model)}
    importer = _importer_class(weights)({k: list(v) for k, v in shapes.items()}, dtypes, keep_params_in_input=False)
    try:
        return importer.from_onnx(model.graph, _opset(model))
    except OperatorConversionError as exc:
        raise InputConfigurationError(f"TVM cannot convert {framework} model: {exc} (route tried: {ROUTE})") from exc
    except Exception as exc:  # outside any one operator: graph inputs, outputs, initializers
        raise InputConfigurationError(
            f"TVM cannot convert {framework} model: {type(exc).__name__}: {exc} (route tried: {ROUTE})".strip()
        ) from exc


class OnnxLoader(Loader):
    name = "ONNX"
    suffixes = (".onnx",)
    layout = "NCHW"
    example = '{"data": [1, 3, 224, 224]}'
    # The compile's load sandbox records onnxruntime's outputs in a second sandbox of the same interpreter: in the
    # load child they would sit on top of TVM and the converted weights (ResNet-50's load stage peaked at 525 MB).
    side_reference = "neocompile.loaders.onnx:record_reference"

    @staticmethod
    def side_python() -> tuple[Any, str]:
        import sys

        return Path(sys.executable), "neocompile's own interpreter, in a process without TVM"

    def load(self, path: Path, shapes: dict[str, tuple[int, ...]] | None, options: dict[str, Any]) -> LoadedModel:
        import onnx

        try:
            model, weights = onnx_file.load(path)  # large weights stay in the file until their tensor is made
        except Exception as exc:
            raise InputConfigurationError(f"Unable to load ONNX model {path.name}: {type(exc).__name__}: {exc}") from exc
        try:
            declared = _declared_inputs(model)
            shapes = check_against_model(shapes, declared, self.name, self.layout, self.example)
            mod = import_onnx(model, shapes, weights=weights)
        finally:
            if weights is not None:
                weights.close()
        inputs = [TensorSpec(s.name, s.dtype, shapes[s.name]) for s in declared]
        outputs = outputs_from_relax(mod, [o.name for o in model.graph.output])
        return LoadedModel(
            mod=mod,
            inputs=inputs,
            outputs=outputs,
            reference=onnx_reference(Path(path), [s.name for s in inputs]),
            framework=self.name,
            framework_version=f"onnx {onnx.__version__}, opset {_opset(model)}",
            route=ROUTE,
            precision=model_precision(model),
            data_input_config={k: list(v) for k, v in shapes.items()},
            side_reference_args={"model": Path(path).as_posix()},
        )
