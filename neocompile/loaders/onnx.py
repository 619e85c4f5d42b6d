"""ONNX loader: one ``.onnx`` file, imported with TVM's Relax ONNX frontend."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..datainput import TensorSpec, check_against_model
from ..errors import InputConfigurationError
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


def _unsupported_ops(model: Any) -> set[str]:
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = set(_get_convert_map())

    def walk(graph):
        for node in graph.node:
            if node.domain not in ("", "ai.onnx"):
                yield f"{node.domain}.{node.op_type}"  # contrib ops (com.microsoft, ai.onnx.ml, ...)
            elif node.op_type not in known:
                yield node.op_type
            for attr in node.attribute:
                if attr.g and attr.g.node:
                    yield from walk(attr.g)

    return set(walk(model.graph))


def onnx_reference(model_bytes: bytes, names: Sequence[str]):
    """A callable running the model with onnxruntime (single thread, deterministic)."""

    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        return sess.run(None, dict(zip(names, arrays)))

    return run


def import_onnx(model: Any, shapes: dict[str, tuple[int, ...]], framework: str = "ONNX") -> Any:
    """Run TVM's Relax ONNX frontend, turning its failures into Neo-style errors."""
    from tvm.relax.frontend.onnx import from_onnx

    missing = _unsupported_ops(model)
    if missing:
        raise InputConfigurationError(
            f"TVM cannot convert {framework} model. Please make sure the framework you selected is correct. "
            f"The following operators are not implemented: {{{', '.join(sorted(missing))}}}"
        )
    dtypes = {spec.name: spec.dtype for spec in _declared_inputs(model)}
    try:
        return from_onnx(model, {k: list(v) for k, v in shapes.items()}, dtype_dict=dtypes, keep_params_in_input=False)
    except Exception as exc:  # the frontend raises anything from KeyError to TVMError
        raise InputConfigurationError(f"TVM cannot convert {framework} model. {type(exc).__name__}: {exc}".strip()) from exc


class OnnxLoader(Loader):
    name = "ONNX"
    suffixes = (".onnx",)
    layout = "NCHW"
    example = '{"data": [1, 3, 224, 224]}'

    def load(self, path: Path, shapes: dict[str, tuple[int, ...]] | None, options: dict[str, Any]) -> LoadedModel:
        import onnx

        try:
            model = onnx.load(str(path))
        except Exception as exc:
            raise InputConfigurationError(f"Unable to load ONNX model {path.name}: {type(exc).__name__}: {exc}") from exc
        declared = _declared_inputs(model)
        shapes = check_against_model(shapes, declared, self.name, self.layout, self.example)
        mod = import_onnx(model, shapes)
        inputs = [TensorSpec(s.name, s.dtype, shapes[s.name]) for s in declared]
        outputs = outputs_from_relax(mod, [o.name for o in model.graph.output])
        return LoadedModel(
            mod=mod,
            inputs=inputs,
            outputs=outputs,
            reference=onnx_reference(model.SerializeToString(), [s.name for s in inputs]),
            framework=self.name,
            framework_version=f"onnx {onnx.__version__}, opset {max((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')), default=0)}",
            route="onnx -> tvm.relax.frontend.onnx.from_onnx",
            data_input_config={k: list(v) for k, v in shapes.items()},
        )
