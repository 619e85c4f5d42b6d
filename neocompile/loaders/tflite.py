"""TFLite loader: one ``.tflite`` flatbuffer (NHWC), imported with TVM's Relax TFLite frontend.

Inputs are subgraph 0's input tensors in their order, with the dtypes the flatbuffer declares (int8/uint8 for
full-integer quantized models). Each is exposed under its tensor name less a trailing ``:0`` (Neo's rule for
TensorFlow names: ``serving_default_input:0`` -> ``serving_default_input``); DataInputConfig may also name it with
the ``:0`` or by its SignatureDef key (``input``). Shapes may be left out: the flatbuffer's shape is the one the
TFLite interpreter allocates; a dimension its shape signature leaves open (-1, a dynamic batch) may be given.
The reference is the TFLite interpreter (``ai_edge_litert`` where installed, else ``tf.lite``).
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..datainput import TensorSpec, check_against_model
from ..errors import InputConfigurationError
from .base import LoadedModel, Loader, outputs_from_relax

#: How TFLite models get into Relax; named in the manifest and in every conversion error.
ROUTE = "tflite -> tvm.relax.frontend.tflite.from_tflite (with neocompile.loaders.tflite_ops converters)"
IDENTIFIER = b"TFL3"  # the flatbuffer file identifier of TFLite's schema (bytes 4-8)
#: TFLite tensor types that mark a quantized tensor when they carry a scale.
_QUANTIZED_TYPES = {"int8", "uint8", "int16", "int4"}


@dataclasses.dataclass(frozen=True)
class _Input:
    spec: TensorSpec  # exposed name, dtype, declared shape (None where the signature leaves a dim open)
    tensor_name: str  # the flatbuffer's name, as TVM's frontend names the Relax parameter
    tensor_index: int
    default_shape: tuple[int, ...]  # what the interpreter allocates without a resize
    aliases: tuple[str, ...]  # other names DataInputConfig may use


def _type_names() -> dict[int, str]:
    import tflite

    return {v: k.lower() for k, v in vars(tflite.TensorType).items() if not k.startswith("_") and isinstance(v, int)}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def exposed_name(tensor_name: str) -> str:
    """The input name neocompile exposes for a flatbuffer tensor name (Neo: TensorFlow names lose ``:0``)."""
    return tensor_name[:-2] if tensor_name.endswith(":0") and len(tensor_name) > 2 else tensor_name


def parse_model(data: bytes, filename: str) -> Any:
    """``tflite.Model`` of ``data``, or an InputConfigurationError saying why it is not a TFLite flatbuffer."""
    import tflite

    if len(data) < 8 or data[4:8] != IDENTIFIER:
        found = repr(data[4:8]) if len(data) >= 8 else f"a {len(data)}-byte file"
        raise InputConfigurationError(
            f"Unable to load TFLite model {filename}: it is not a TFLite flatbuffer (expected the file identifier "
            f"{IDENTIFIER.decode()!r} at bytes 4-8, found {found}); expected a .tflite file written by "
            "tf.lite.TFLiteConverter")
    try:
        model = tflite.Model.GetRootAsModel(data, 0)
        if model.SubgraphsLength() < 1:
            raise ValueError("the model has no subgraph")
        if model.Version() != 3:
            raise ValueError(f"schema version {model.Version()}, expected 3")
        graph = model.Subgraphs(0)
        for i in range(graph.InputsLength()):  # touch what load reads, so a damaged file fails here
            graph.Tensors(graph.Inputs(i)).Name()
    except Exception as exc:  # a truncated or damaged flatbuffer fails anywhere inside the generated readers
        raise InputConfigurationError(
            f"Unable to load TFLite model {filename}: the flatbuffer is damaged or not a TFLite model "
            f"({type(exc).__name__}: {exc})") from exc
    return model


def _signature_keys(model: Any) -> dict[int, str]:
    """Tensor index -> SignatureDef input key, for the signatures of subgraph 0."""
    keys: dict[int, str] = {}
    for s in range(model.SignatureDefsLength()):
        sig = model.SignatureDefs(s)
        if sig.SubgraphIndex() != 0:
            continue
        for i in range(sig.InputsLength()):
            keys.setdefault(int(sig.Inputs(i).TensorIndex()), _text(sig.Inputs(i).Name()))
    return keys


def declared_inputs(model: Any) -> list[_Input]:
    """Subgraph 0's inputs: names, dtypes from the flatbuffer, declared and default shapes."""
    types = _type_names()
    graph = model.Subgraphs(0)
    keys = _signature_keys(model)
    names = [_text(graph.Tensors(int(graph.Inputs(i))).Name()) for i in range(graph.InputsLength())]
    stripped = [exposed_name(n) for n in names]
    if len(set(stripped)) < len(stripped):  # "x" beside "x:0": keep the flatbuffer's names as they are
        stripped = names
    inputs = []
    for i in range(graph.InputsLength()):
        index = int(graph.Inputs(i))
        tensor = graph.Tensors(index)
        name = names[i]
        default = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        signature = tuple(int(d) for d in tensor.ShapeSignatureAsNumpy()) if tensor.ShapeSignatureLength() else default
        declared = tuple(d if d > 0 else None for d in signature)
        exposed = stripped[i] or f"input_{i}"
        aliases = tuple(dict.fromkeys(a for a in (name, keys.get(index, "")) if a and a != exposed))
        dtype = types.get(tensor.Type(), f"tflite:{tensor.Type()}")
        inputs.append(_Input(TensorSpec(exposed, dtype, declared), name, index, default, aliases))
    return inputs


def _resolve_names(shapes: dict[str, tuple[int, ...]], inputs: Sequence[_Input]) -> dict[str, tuple[int, ...]]:
    """DataInputConfig keys as exposed names (an exposed name wins over another input's alias)."""
    exposed = {i.spec.name for i in inputs}
    alias = {}
    for item in inputs:
        for a in item.aliases:
            if a not in exposed:
                alias.setdefault(a, item.spec.name)
    unknown = [k for k in shapes if k not in exposed and k not in alias]
    if unknown:
        listed = ", ".join(f"{i.spec.name}{list(i.default_shape)}" + (f" (also accepted: {', '.join(i.aliases)})" if i.aliases else "")
                           for i in inputs) or "none"
        raise InputConfigurationError(
            f"DataInputConfig names input(s) {', '.join(repr(k) for k in unknown)} that the TFLITE model does not have. "
            f"Model inputs: {listed}")
    out: dict[str, tuple[int, ...]] = {}
    for key, dims in shapes.items():
        name = key if key in exposed else alias[key]
        if name in out:
            raise InputConfigurationError(
                f"DataInputConfig gives input '{name}' twice (as '{key}' and under another of its names)")
        out[name] = dims
    return out


def model_precision(model: Any) -> str:
    """"int8" when subgraph 0 computes on quantized integer tensors, else "float32" (float16 weights are
    dequantized to float32 by the model itself)."""
    types = _type_names()
    graph = model.Subgraphs(0)
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        q = tensor.Quantization()
        if types.get(tensor.Type()) in _QUANTIZED_TYPES and q is not None and q.ScaleLength() > 0:
            return "int8"
    return "float32"


def framework_version(model: Any) -> str:
    """"TFLite schema v3" plus the converter's ``min_runtime_version`` metadata where present."""
    text = f"TFLite schema v{model.Version()}"
    try:
        for i in range(model.MetadataLength()):
            meta = model.Metadata(i)
            if _text(meta.Name()) == "min_runtime_version":
                raw = model.Buffers(meta.Buffer()).DataAsNumpy()
                value = bytes(raw).split(b"\0", 1)[0].decode("ascii", "replace") if isinstance(raw, np.ndarray) else ""
                if value:
                    text += f", min runtime {value}"
    except Exception as exc:  # noqa: BLE001  (metadata is informative only)
        text += f" (metadata unreadable: {type(exc).__name__})"
    return text


def interpreter_class() -> Any:
    """The TFLite interpreter class: LiteRT's (``ai_edge_litert``, a 0.3 s import) where installed, else
    TensorFlow's ``tf.lite.Interpreter`` (the same kernels behind an ~8 s ``import tensorflow``)."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    try:
        import tensorflow as tf

        return tf.lite.Interpreter
    except (ImportError, AttributeError) as exc:
        raise InputConfigurationError(
            "TFLite verification needs the TFLite interpreter: install ai-edge-litert or tensorflow "
            f"(pip install 'neocompile[tflite]'), or set CompilerOptions verify=false ({exc})") from exc


def tflite_reference(path: Path, inputs: Sequence[_Input], shapes: dict[str, tuple[int, ...]]):
    """A callable running the model with the TFLite interpreter (one thread, no resize unless a shape differs
    from the flatbuffer's)."""

    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        cls = interpreter_class()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
            interpreter = cls(model_path=str(path), num_threads=1)
        for item in inputs:
            shape = shapes[item.spec.name]
            if tuple(shape) != item.default_shape:
                interpreter.resize_tensor_input(item.tensor_index, list(shape), strict=False)
        interpreter.allocate_tensors()
        for item, array in zip(inputs, arrays):
            interpreter.set_tensor(item.tensor_index, np.ascontiguousarray(array))
        interpreter.invoke()
        return [np.array(interpreter.get_tensor(d["index"])) for d in interpreter.get_output_details()]

    return run


def import_tflite(model: Any, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str], framework: str = "TFLITE") -> Any:
    """Convert a ``tflite.Model`` to Relax (TVM's frontend plus ``tflite_ops``); keys are flatbuffer tensor names.
    Failures become Neo-style errors naming the route tried."""
    from tvm.relax.frontend.tflite import from_tflite

    from .tflite_ops import operator_converter

    try:
        mod = from_tflite(model, {k: tuple(v) for k, v in shapes.items()}, dtypes, op_converter=operator_converter())
    except Exception as exc:  # the frontend raises OpNotImplemented, AssertionError, TVMError, KeyError...
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise InputConfigurationError(
            f"TVM cannot convert {framework} model: {type(exc).__name__}: {message} (route tried: {ROUTE})") from exc
    # The frontend also keeps every weight in a "params" attribute beside the constants it binds: drop the copy.
    main = mod["main"]
    if main.attrs is not None and "params" in main.attrs:
        mod["main"] = main.without_attr("params")
    return mod


def _example(inputs: Sequence[_Input], fallback: str) -> str:
    """A DataInputConfig for this model's own inputs at their default shapes (NHWC), for error messages."""
    if not inputs or not all(i.default_shape and min(i.default_shape) > 0 for i in inputs):
        return fallback
    return json.dumps({i.spec.name: list(i.default_shape) for i in inputs})


def _output_names(model: Any) -> list[str]:
    graph = model.Subgraphs(0)
    return [_text(graph.Tensors(int(graph.Outputs(i))).Name()) or f"output_{i}" for i in range(graph.OutputsLength())]


class TFLiteLoader(Loader):
    name = "TFLITE"
    suffixes = (".tflite",)
    layout = "NHWC"
    example = '{"input": [1, 224, 224, 3]}'

    def load(self, path: Path, shapes: dict[str, tuple[int, ...]] | None, options: dict[str, Any]) -> LoadedModel:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputConfigurationError(f"Unable to load TFLite model {path.name}: {exc}") from exc
        model = parse_model(data, path.name)
        inputs = declared_inputs(model)
        shapes = _resolve_names(dict(shapes or {}), inputs)
        for item in inputs:  # left out: the shape the interpreter allocates
            if item.spec.name not in shapes and all(d > 0 for d in item.default_shape):
                shapes[item.spec.name] = item.default_shape
        shapes = check_against_model(shapes, [i.spec for i in inputs], self.name, self.layout,
                                     _example(inputs, self.example))
        mod = import_tflite(model, {i.tensor_name: shapes[i.spec.name] for i in inputs},
                            {i.tensor_name: i.spec.dtype for i in inputs}, self.name)
        specs = [TensorSpec(i.spec.name, i.spec.dtype, tuple(shapes[i.spec.name])) for i in inputs]
        return LoadedModel(
            mod=mod,
            inputs=specs,
            outputs=outputs_from_relax(mod, _output_names(model)),
            reference=tflite_reference(path, inputs, shapes),
            framework=self.name,
            framework_version=framework_version(model),
            route=ROUTE,
            precision=model_precision(model),
            data_input_config={i.spec.name: list(shapes[i.spec.name]) for i in inputs},
        )
