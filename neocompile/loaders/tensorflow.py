"""TensorFlow loader: a SavedModel folder or a frozen GraphDef (``.pb``/``.pbtxt``), NHWC as the graph declares it.

Neo's file rules (``find_model``): a folder holding ``saved_model.pb`` (or ``.pbtxt``) and ``variables/`` is a
SavedModel and wins over a lone ``.pb`` (``variables/`` may be missing: tar leaves out the empty folder of a model
without variables); two SavedModels, or two ``.pb``/``.pbtxt`` files without one, are refused;
an archive of TF checkpoints (``checkpoint``, ``*.index``, ``*.data-*``, ``*.meta``) with no SavedModel is refused
with Neo's text. Inputs and outputs come from the SavedModel's serving signature (CompilerOptions
``signature_def_key`` picks another) or, for a GraphDef, from its Placeholders and the tensors nothing consumes
(Neo's discovery; CompilerOptions ``output_names`` overrides it). DataInputConfig names an input by its signature
key or its graph tensor name, with or without ``:0``; the package exposes signature keys (SavedModel) or placeholder
names without ``:0`` (GraphDef), as Neo's metadata does.

The model is traced once more with the given static shapes and frozen (variables to constants, functional control
flow kept), then tried through ``ROUTES`` in turn: tf2onnx -> the ONNX import of ``loaders/onnx.py`` (its
operator converters included), then TF's TFLite converter -> the TFLITE loader (it turns an LSTM's while loop into a
TFLite WHILE, which TVM imports, where tf2onnx writes an ONNX ``LSTM`` or ``Loop`` that TVM lacks). The route that
worked is the manifest's ImportRoute; when none works the error names each route and the operators it lacked. The
reference is TensorFlow itself: the serving signature, or the GraphDef run in a ``tf.Graph`` session.

Nothing from the archive runs as Python: SavedModels and GraphDefs are protobufs of TF operators. Operators that
reach the file system or call back into Python (``PyFunc``, ``ReadFile``, ``WriteFile``, ``ImmutableConst``,
dataset readers, ...) are refused before TensorFlow loads the graph.

``keras.py`` reuses ``TracedModel`` and ``convert`` for Keras models.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..datainput import TensorSpec, check_against_model
from ..errors import InputConfigurationError
from .base import LoadedModel, Loader

OPSET = 17
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
NO_MODEL = "No valid TensorFlow model found in input files. Please make sure the framework you select is correct."
CHECKPOINTS = "TF Checkpoints are not supported. Please make sure the framework you select is correct."
MANY_SAVED_MODELS = "Exactly one saved model is allowed for TensorFlow models."
MANY_GRAPHS = "Exactly one .pb or .pbtxt file is allowed for TensorFlow models."
CANNOT_LOAD = "Framework cannot load Tensorflow model"

#: The routes a TensorFlow graph is tried through, in order; each name is what the manifest records.
ROUTE_ONNX = (f"tensorflow (frozen, static shapes) -> tf2onnx (opset {OPSET}) -> onnx -> "
              "tvm.relax.frontend.onnx.from_onnx (with neocompile.loaders.onnx_ops converters)")
ROUTE_TFLITE = ("tensorflow (frozen, static shapes) -> tf.lite.TFLiteConverter -> tflite -> "
                "tvm.relax.frontend.tflite.from_tflite (with neocompile.loaders.tflite_ops converters)")
ROUTES = (ROUTE_ONNX, ROUTE_TFLITE)

# Operators that read or write files, call Python, or talk to debuggers: no model a compiler takes needs them, and
# a hostile graph would use them. Refused wherever they appear (function bodies included).
DENIED_OPS = frozenset({
    "PyFunc", "PyFuncStateless", "EagerPyFunc",
    "ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst", "LoadAndRemapMatrix",
    "InitializeTableFromTextFile", "InitializeTableFromTextFileV2",
    "TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset", "FixedLengthRecordDataset",
    "FixedLengthRecordDatasetV2", "TFRecordReader", "TFRecordReaderV2", "TextLineReader", "TextLineReaderV2",
    "WholeFileReader", "WholeFileReaderV2", "FixedLengthRecordReader", "FixedLengthRecordReaderV2",
    "DatasetFromGraph", "LoadDataset", "SaveDataset", "SaveDatasetV2", "SnapshotDataset", "SnapshotDatasetV2",
    "CreateSummaryFileWriter", "CreateSummaryDbWriter", "WriteSummary", "WriteScalarSummary", "WriteImageSummary",
    "WriteHistogramSummary", "WriteAudioSummary", "WriteGraphSummary", "WriteRawProtoSummary", "ImportEvent",
    "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount", "DebugNumericSummary",
    "DebugNumericSummaryV2", "Print", "PrintV2", "RecvTPUEmbeddingActivations", "_Send", "_Recv",
})
# Checkpoint I/O: a SavedModel's own save/restore functions hold these; the inference graph may not.
CHECKPOINT_OPS = frozenset({"Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice",
                            "MergeV2Checkpoints", "ShardedFilename", "ShardedFilespec"})
VARIABLE_OPS = frozenset({"VariableV2", "Variable", "VarHandleOp", "TemporaryVariable"})
# Neo's output discovery skips these when looking for tensors nothing consumes.
_NOT_OUTPUTS = frozenset({"Const", "Assign", "NoOp", "Placeholder"})
_UNSUPPORTED_DTYPES = {"string", "resource", "variant"}


def _tf() -> Any:
    """TensorFlow, imported quietly with one thread per op (the reference is timed and must be deterministic)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    for name in ("tensorflow", "tf2onnx", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TF already ran something in this process: its thread pools are set
        pass
    return tf


# -- the archive -----------------------------------------------------------------------------------------------------
def checkpoint_files(files: Sequence[Path]) -> list[Path]:
    """TF checkpoint files among ``files``: ``checkpoint``, ``*.ckpt*``, MetaGraphs (``.meta``) and index/data pairs
    (``x.index`` with ``x.data-00000-of-00001``)."""
    data = {p.parent / p.name.split(".data-")[0] for p in files if re.search(r"\.data-\d+-of-\d+$", p.name)}
    return [p for p in files if p.name == "checkpoint" or ".ckpt" in p.name or p.suffix == ".meta"
            or (p.suffix == ".index" and p.with_suffix("") in data) or (p.parent / p.name.split(".data-")[0]) in data]


def find_tensorflow_model(root: Path) -> Path:
    """Neo's rules (see the module docstring): the SavedModel's ``saved_model.pb(txt)``, or the one GraphDef."""
    from ..archive import visible_files

    root = Path(root)
    files = visible_files(root)
    folders = sorted({p.parent for p in files} | {root})
    saved = []
    for folder in folders:
        graph = next((folder / n for n in SAVED_MODEL_FILES if (folder / n).is_file()), None)
        if graph is None and (folder / "variables").is_dir():
            raise InputConfigurationError(
                f"{folder.relative_to(root).as_posix() or 'The archive root'} holds variables/ but no saved_model.pb "
                "or saved_model.pbtxt; expected a SavedModel folder as tf.saved_model.save writes it")
        if graph is not None:  # variables/ may be missing: tar leaves out the empty one of a model without variables
            saved.append(graph)
    if len(saved) > 1:
        raise InputConfigurationError(
            f"{MANY_SAVED_MODELS} Found {len(saved)}: {', '.join(p.parent.relative_to(root).as_posix() or '.' for p in saved)}")
    if saved:
        return saved[0]
    checkpoints = checkpoint_files(files)
    if checkpoints:
        listed = ", ".join(p.relative_to(root).as_posix() for p in checkpoints)
        raise InputConfigurationError(
            f"{CHECKPOINTS} Found checkpoint files ({listed}) and no SavedModel; export the model with "
            "tf.saved_model.save(model, 'export_dir') (a folder with saved_model.pb and variables/) or freeze it to "
            "a GraphDef .pb")
    graphs = [p for p in files if p.suffix.lower() in (".pb", ".pbtxt")]
    if len(graphs) > 1:
        raise InputConfigurationError(
            f"{MANY_GRAPHS} Found {len(graphs)}: {', '.join(p.relative_to(root).as_posix() for p in graphs)}")
    if not graphs:
        listed = ", ".join(p.relative_to(root).as_posix() for p in files[:10]) or "none"
        raise InputConfigurationError(
            f"{NO_MODEL} Expected a SavedModel folder (saved_model.pb with variables/) or one frozen GraphDef "
            f".pb/.pbtxt; found: {listed}")
    return graphs[0]




# -- names -----------------------------------------------------------------------------------------------------------
def strip_port(name: str) -> str:
    """Neo's rule for TensorFlow names: ``input:0`` -> ``input``."""
    return name[:-2] if name.endswith(":0") and len(name) > 2 else name


def _safe_names(names: Sequence[str]) -> list[str]:
    """Names TensorFlow accepts for placeholders (and ONNX/Relax for parameters), unique, close to ``names``."""
    out: list[str] = []
    for name in names:
        safe = re.sub(r"[^A-Za-z0-9_.\-]", "_", name) or "input"
        if not re.match(r"[A-Za-z0-9.]", safe):
            safe = "x" + safe
        base, n = safe, 1
        while safe in out:
            safe, n = f"{base}_{n}", n + 1
        out.append(safe)
    return out


def resolve_names(shapes: dict[str, tuple[int, ...]] | None, aliases: dict[str, str], framework: str
                  ) -> dict[str, tuple[int, ...]]:
    """DataInputConfig keys mapped to the exposed input names through ``aliases`` (alias -> exposed name). Keys that
    name nothing stay as given, for ``check_against_model`` to report with the model's inputs."""
    out: dict[str, tuple[int, ...]] = {}
    for key, dims in (shapes or {}).items():
        name = aliases.get(key, aliases.get(strip_port(key), key))
        if name in out:
            raise InputConfigurationError(
                f"DataInputConfig gives {framework} input '{name}' twice (as '{key}' and under another of its names)")
        out[name] = dims
    return out


def _dims(shape: Any) -> tuple[int | None, ...] | None:
    if shape is None or shape.rank is None:
        return None
    return tuple(shape.as_list())


def _dtype(dtype: Any, what: str) -> str:
    name = dtype.name
    if name in _UNSUPPORTED_DTYPES:
        raise InputConfigurationError(f"{what} has dtype {name}, which neocompile cannot compile; expected numeric inputs")
    return name


# -- the graph checks ------------------------------------------------------------------------------------------------
def graph_ops(graph_def: Any) -> set[str]:
    """Every operator type in a GraphDef, function bodies included."""
    ops = {n.op for n in graph_def.node}
    for function in graph_def.library.function:
        ops |= {n.op for n in function.node_def}
    return ops


def refuse_denied(ops: set[str], what: str, allowed: frozenset[str] = frozenset()) -> None:
    denied = sorted((ops & (DENIED_OPS | CHECKPOINT_OPS)) - allowed)
    if denied:
        raise InputConfigurationError(
            f"{what} uses operator(s) {', '.join(denied)}, which read or write files or run Python code; neocompile "
            "never runs them from an untrusted archive. Export the inference graph alone (tf.saved_model.save of a "
            "model without such operations)")


# -- one traced model, converted -------------------------------------------------------------------------------------
@dataclasses.dataclass
class TracedModel:
    """A model as a Python callable over TF tensors, with the signature it is compiled for.

    ``call`` takes the inputs positionally (``inputs`` order, static shapes) and returns a flat list of tensors;
    ``reference`` runs the source framework on numpy arrays in the same order."""

    call: Callable[..., list[Any]]
    inputs: list[TensorSpec]
    output_names: list[str]
    reference: Callable[[Sequence[np.ndarray]], list[np.ndarray]]
    framework: str  # "TensorFlow" or "Keras", as errors say it


class _RouteFailed(Exception):
    pass


def _frozen(traced: TracedModel) -> tuple[Any, list[str]]:
    """The traced model as a frozen ConcreteFunction (variables as constants, functional While/If kept) and its
    placeholder names."""
    tf = _tf()
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    safe = _safe_names([s.name for s in traced.inputs])
    specs = [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=n) for s, n in zip(traced.inputs, safe)]
    try:
        concrete = tf.function(lambda *xs: list(traced.call(*xs)), autograph=False).get_concrete_function(*specs)
        frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False)
    except InputConfigurationError:
        raise
    except Exception as exc:
        given = ", ".join(f"{s.name}{list(s.shape)} {s.dtype}" for s in traced.inputs)
        raise InputConfigurationError(
            f"{CANNOT_LOAD}: tracing it on inputs {given} failed: {type(exc).__name__}: {_first_line(exc)}. "
            "Check DataInputConfig") from exc
    if len(frozen.outputs) != len(traced.output_names):
        traced.output_names = [f"output_{i}" for i in range(len(frozen.outputs))]
    return frozen, safe


def _first_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3])
    return text[:500] or type(exc).__name__


def _via_onnx(frozen: Any, safe: list[str], traced: TracedModel) -> tuple[Any, str]:
    import tf2onnx

    from .onnx import import_onnx, model_precision

    graph_def = frozen.graph.as_graph_def()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=[t.name for t in frozen.inputs],
                                                      output_names=[t.name for t in frozen.outputs], opset=OPSET)
    except Exception as exc:  # tf2onnx raises anything from ValueError to KeyError
        raise _RouteFailed(f"tf2onnx failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    # tf2onnx names the ONNX inputs after the TF tensors ("x:0"); the Relax parameters take the plain names.
    rename = {t.name: name for t, name in zip(frozen.inputs, safe)}
    _rename_values(model.graph, rename)
    mod = import_onnx(model, {name: spec.shape for name, spec in zip(safe, traced.inputs)}, traced.framework)
    return mod, model_precision(model)


def _rename_values(graph: Any, rename: dict[str, str]) -> None:
    for value in list(graph.input) + list(graph.output):
        value.name = rename.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _rename_values(sub, rename)


def _tflite_flatbuffer(frozen: Any, traced: TracedModel) -> bytes:
    tf = _tf()
    try:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return converter.convert()
    except Exception as exc:
        if "element_shape to be static" not in str(exc):
            raise _RouteFailed(_converter_reason(exc)) from exc
        first = exc
    # A tensor list traced for any batch (a Keras RNN in a SavedModel with a dynamic batch) keeps the element shape
    # [-1, ...]; TFLite wants it static. The batch is known now: write it in and convert the GraphDef again (with
    # the v1 converter: the v2 one would re-register the patched functions under their old names).
    batches = {s.shape[0] for s in traced.inputs if s.shape}
    if len(batches) != 1:
        raise _RouteFailed(_converter_reason(first)) from first
    graph_def = _with_static_tensor_lists(frozen.graph.as_graph_def(), batches.pop())
    with tempfile.TemporaryDirectory(prefix="neocompile-tflite-") as tmp:
        path = Path(tmp) / "frozen.pb"
        path.write_bytes(graph_def.SerializeToString())
        try:
            converter = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
                str(path), [strip_port(t.name) for t in frozen.inputs], [strip_port(t.name) for t in frozen.outputs],
                {strip_port(t.name): list(s.shape) for t, s in zip(frozen.inputs, traced.inputs)})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return converter.convert()
        except Exception as exc:
            raise _RouteFailed(_converter_reason(exc)) from exc


def _converter_reason(exc: BaseException) -> str:
    text = str(exc)
    ops = sorted(set(re.findall(r"'tf\.(\w+)' op", text)) | set(re.findall(r"operation 'tf\.(\w+)'", text)))
    if ops:
        return f"the TFLite converter cannot convert operator(s) {{{', '.join(ops)}}}"
    return f"the TFLite converter failed: {type(exc).__name__}: {_first_line(exc)}"


_TENSOR_LIST_SHAPE_INPUT = {"TensorListReserve": 0, "TensorListFromTensor": 1, "TensorListStack": 1,
                            "TensorListGetItem": 2, "EmptyTensorList": 0}


def _with_static_tensor_lists(graph_def: Any, batch: int) -> Any:
    """``graph_def`` with ``batch`` for a leading -1 in the constant element shapes of its tensor lists."""
    from tensorflow.python.framework import tensor_util

    def patch(nodes: Any) -> None:
        by_name = {n.name: n for n in nodes}
        for node in nodes:
            index = _TENSOR_LIST_SHAPE_INPUT.get(node.op)
            if index is None or index >= len(node.input):
                continue
            const = by_name.get(node.input[index].lstrip("^").split(":")[0])
            if const is None or const.op != "Const":
                continue
            value = tensor_util.MakeNdarray(const.attr["value"].tensor)
            if value.ndim == 1 and value.size and value[0] == -1:
                value = value.copy()
                value[0] = batch
                const.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value))

    patch(graph_def.node)
    for function in graph_def.library.function:
        patch(function.node_def)
    return graph_def


def _via_tflite(frozen: Any, safe: list[str], traced: TracedModel, options: dict[str, Any]) -> tuple[Any, list[int], list[int], str]:
    """The TFLite converter's flatbuffer through the TFLITE loader. Returns the module, for each of its inputs the
    index in ``traced.inputs``, for each of its outputs the index in ``traced.output_names``, and the precision."""
    from .tflite import TFLiteLoader, exposed_name

    flatbuffer = _tflite_flatbuffer(frozen, traced)
    with tempfile.TemporaryDirectory(prefix="neocompile-tflite-") as tmp:
        path = Path(tmp) / "converted.tflite"
        path.write_bytes(flatbuffer)
        loaded = TFLiteLoader().load(path, {exposed_name(n): s.shape for n, s in zip(safe, traced.inputs)},
                                     options)
    position = {exposed_name(n): i for i, n in enumerate(safe)}
    if sorted(position.get(s.name, -1) for s in loaded.inputs) != list(range(len(safe))):
        raise _RouteFailed(f"the converted model's inputs {[s.name for s in loaded.inputs]} are not the model's "
                           f"{[s.name for s in traced.inputs]}")
    in_order = [position[s.name] for s in loaded.inputs]
    outputs = {strip_port(t.name): i for i, t in enumerate(frozen.outputs)}
    out_order = [outputs.get(strip_port(s.name), i) for i, s in enumerate(loaded.outputs)]
    if sorted(out_order) != list(range(len(frozen.outputs))):
        out_order = list(range(len(loaded.outputs)))
    return loaded.mod, in_order, out_order, loaded.precision


def convert(traced: TracedModel, options: dict[str, Any]) -> dict[str, Any]:
    """Freeze ``traced`` and try ``ROUTES`` in turn. Returns the LoadedModel fields the routes decide: ``mod``,
    ``inputs``, ``outputs`` (specs), ``reference`` (reordered to the module's inputs and outputs), ``route``,
    ``routes_failed`` and ``precision``."""
    from .base import outputs_from_relax

    frozen, safe = _frozen(traced)
    refuse_denied(graph_ops(frozen.graph.as_graph_def()), f"The {traced.framework} model")
    failed: list[dict[str, str]] = []
    for route in ROUTES:
        try:
            if route == ROUTE_ONNX:
                mod, precision = _via_onnx(frozen, safe, traced)
                in_order, out_order = list(range(len(safe))), list(range(len(traced.output_names)))
            else:
                mod, in_order, out_order, precision = _via_tflite(frozen, safe, traced, options)
        except _RouteFailed as exc:
            failed.append({"Route": route, "Error": str(exc)})
            continue
        except InputConfigurationError as exc:  # the ONNX/TFLite import's: names the operators already
            text = str(exc).removeprefix("InputConfiguration: ").rsplit(" (route tried: ", 1)[0]
            text = re.sub(r"^TVM cannot convert \w+ model(\. Please make sure the framework you selected is correct\.|:)"
                          r"\s*", "", text)
            failed.append({"Route": route, "Error": text})
            continue
        texts = "; ".join(f"{f['Route']}: {f['Error']}" for f in failed)
        names = [traced.output_names[i] for i in out_order]
        reference = _reordered(traced.reference, in_order, out_order)
        return {"mod": mod, "inputs": [traced.inputs[i] for i in in_order], "outputs": outputs_from_relax(mod, names),
                "reference": reference, "precision": precision, "routes_failed": failed,
                "route": route + (f" (after {len(failed)} failed route(s): {texts})" if failed else "")}
    numbered = " ".join(f"({i}) {f['Route']}: {f['Error']}" for i, f in enumerate(failed, 1))
    raise InputConfigurationError(
        f"TVM cannot convert {traced.framework} model. Please make sure the framework you selected is correct. "
        f"No route converts it: {numbered}")


def _reordered(reference: Callable, in_order: list[int], out_order: list[int]) -> Callable:
    if in_order == sorted(in_order) and out_order == sorted(out_order):
        return reference

    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        inputs: list[Any] = [None] * len(arrays)
        for position, index in enumerate(in_order):
            inputs[index] = arrays[position]
        outputs = reference(inputs)
        return [outputs[i] for i in out_order]

    return run


# -- SavedModel ------------------------------------------------------------------------------------------------------
def _read_saved_model_proto(path: Path) -> Any:
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    data = path.read_bytes()
    if path.suffix == ".pbtxt":
        text_format.Parse(data.decode("utf-8"), proto)
    else:
        proto.ParseFromString(data)
    return proto


def _serving_tags(proto: Any) -> list[str] | None:
    tag_sets = [list(m.meta_info_def.tags) for m in proto.meta_graphs]
    if len(tag_sets) <= 1:
        return None
    return next((tags for tags in tag_sets if "serve" in tags), tag_sets[0])


def _saved_model_proto(path: Path) -> Any:
    """The SavedModel protobuf of ``saved_model.pb(txt)``, or None where the file is something else (a frozen GraphDef
    named so, read as one)."""
    try:
        proto = _read_saved_model_proto(path)
    except Exception:  # noqa: BLE001 - then it is read as a GraphDef, whose error says what is wrong
        return None
    return proto if proto.meta_graphs else None


def _saved_model(path: Path, proto: Any, options: dict[str, Any]) -> tuple[Any, list[TensorSpec], dict[str, str], list[str], str]:
    """The SavedModel's signature function, its inputs (signature keys), the names DataInputConfig may use for each,
    the output names (flattened signature output keys) and the TF version that wrote it."""
    tf = _tf()
    for meta in proto.meta_graphs:
        refuse_denied(graph_ops(meta.graph_def), "The SavedModel", allowed=CHECKPOINT_OPS)
    tags = _serving_tags(proto)
    written_by = proto.meta_graphs[0].meta_info_def.tensorflow_version
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = tf.saved_model.load(str(path.parent), tags=tags)
    except Exception as exc:
        raise InputConfigurationError(f"{CANNOT_LOAD}: {type(exc).__name__}: {_first_line(exc)}") from exc
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    wanted = options.get("signature-def-key")
    if wanted is not None:
        if wanted not in signatures:
            raise InputConfigurationError(
                f"CompilerOptions signature_def_key: '{wanted}' is not a signature of the SavedModel; it has "
                f"{', '.join(sorted(signatures)) or 'none'}")
        key = wanted
    elif "serving_default" in signatures:
        key = "serving_default"
    elif signatures:
        key = min(signatures)
    else:
        raise InputConfigurationError(
            f"{CANNOT_LOAD}: the SavedModel has no signature to serve; save it with a serving signature, e.g. "
            "tf.saved_model.save(model, 'export_dir', signatures=model.__call__.get_concrete_function(tf.TensorSpec(...)))")
    function = signatures[key]
    args, kwargs = function.structured_input_signature
    if args:
        raise InputConfigurationError(f"{CANNOT_LOAD}: signature '{key}' takes positional inputs; expected keyword inputs")
    inputs, aliases = [], {}
    for name in sorted(kwargs):
        spec = kwargs[name]
        inputs.append(TensorSpec(name, _dtype(spec.dtype, f"Input '{name}'"), _dims(spec.shape)))
        for alias in (name, spec.name or name, f"{key}_{name}"):  # the key, the placeholder (TF1), TF2's placeholder
            aliases.setdefault(alias, name)
    from tensorflow.python.util import nest

    flat = nest.flatten_with_joined_string_paths(function.structured_outputs)
    outputs = [path_ or f"output_{i}" for i, (path_, _) in enumerate(flat)]

    def call(*xs: Any) -> list[Any]:
        return tf.nest.flatten(function(**{s.name: x for s, x in zip(inputs, xs)}))

    call.loaded = loaded  # keeps the trackable (its variables) alive as long as the function
    return call, inputs, aliases, outputs, written_by


# -- frozen GraphDef -------------------------------------------------------------------------------------------------
def _read_graph_def(path: Path) -> Any:
    from google.protobuf import text_format
    from tensorflow.core.framework import graph_pb2

    graph_def = graph_pb2.GraphDef()
    data = path.read_bytes()
    try:
        if path.suffix.lower() == ".pbtxt":
            text_format.Parse(data.decode("utf-8"), graph_def)
        else:
            graph_def.ParseFromString(data)
    except Exception as exc:
        raise InputConfigurationError(f"{CANNOT_LOAD}: {path.name} is not a GraphDef protobuf "
                                      f"({type(exc).__name__}: {_first_line(exc)})") from exc
    return graph_def


def _output_option(value: Any) -> list[str] | None:
    if value is None:
        return None
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else list(value)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise InputConfigurationError(
            f"CompilerOptions output_names: {value!r} is not valid; expected a list of tensor names, e.g. [\"logits:0\"]")
    return names


def _graph_def_model(path: Path, options: dict[str, Any]):
    """The GraphDef's call, inputs (placeholder names), aliases, output names, and the session-based reference."""
    tf = _tf()
    graph_def = _read_graph_def(path)
    ops = graph_ops(graph_def)
    refuse_denied(ops, f"The GraphDef {path.name}")
    if ops & VARIABLE_OPS:
        raise InputConfigurationError(
            f"{CANNOT_LOAD}: {path.name} holds variables ({', '.join(sorted(ops & VARIABLE_OPS))}), so it is not a "
            "frozen graph: its weights are elsewhere. Freeze it (variables to constants) or upload the SavedModel folder")
    graph = tf.Graph()
    try:
        with graph.as_default(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tf.graph_util.import_graph_def(graph_def, name="")
    except Exception as exc:
        raise InputConfigurationError(f"{CANNOT_LOAD}: {type(exc).__name__}: {_first_line(exc)}") from exc
    operations = graph.get_operations()
    placeholders = [op for op in operations if op.type == "Placeholder" and not op.inputs and len(op.outputs) == 1]
    inputs = [TensorSpec(op.name, _dtype(op.outputs[0].dtype, f"Input '{op.name}'"), _dims(op.outputs[0].shape))
              for op in placeholders]
    aliases = {f"{op.name}:0": op.name for op in placeholders}
    wanted = _output_option(options.get("output-names"))
    if wanted is not None:
        try:
            out_tensors = [graph.get_tensor_by_name(n if ":" in n else f"{n}:0") for n in wanted]
        except (KeyError, ValueError) as exc:
            raise InputConfigurationError(f"CompilerOptions output_names: {exc}") from exc
    else:
        consumed = {t.name for op in operations for t in op.inputs}
        consumed |= {t.name for op in operations for c in op.control_inputs for t in c.outputs}
        out_tensors = [op.outputs[0] for op in operations
                       if op.type not in _NOT_OUTPUTS and len(op.outputs) == 1 and op.outputs[0].name not in consumed]
    if not out_tensors:
        raise InputConfigurationError(f"{CANNOT_LOAD}: {path.name} has no output tensor (every operation's output is "
                                      "consumed); name them in CompilerOptions output_names")
    in_names = [f"{op.name}:0" for op in placeholders]
    out_names = [t.name for t in out_tensors]

    def call(*xs: Any) -> list[Any]:
        return tf.graph_util.import_graph_def(graph_def, input_map=dict(zip(in_names, xs)),
                                              return_elements=out_names, name="model")

    def reference(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
        with tf.compat.v1.Session(graph=graph, config=config) as session:
            return [np.asarray(a) for a in session.run(out_tensors, dict(zip([op.outputs[0] for op in placeholders], arrays)))]

    return call, inputs, aliases, [strip_port(n) for n in out_names], reference


def _signature_reference(call: Callable[..., list[Any]]) -> Callable[[Sequence[np.ndarray]], list[np.ndarray]]:
    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        tf = _tf()
        return [np.asarray(t) for t in call(*[tf.constant(a) for a in arrays])]

    return run


class TensorFlowLoader(Loader):
    name = "TENSORFLOW"
    suffixes = (".pb", ".pbtxt")
    layout = "NHWC"
    example = '{"input": [1, 224, 224, 3]}'

    def find_model(self, root: Path) -> Path:
        return find_tensorflow_model(root)

    def load(self, path: Path, shapes: dict[str, tuple[int, ...]] | None, options: dict[str, Any]) -> LoadedModel:
        tf = _tf()
        import tf2onnx

        path = Path(path)
        proto = _saved_model_proto(path) if path.name in SAVED_MODEL_FILES else None
        if proto is not None:
            call, declared, aliases, outputs, written_by = _saved_model(path, proto, options)
            reference = _signature_reference(call)
            kind = f"SavedModel written by tensorflow {written_by}" if written_by else "SavedModel"
        else:
            call, declared, aliases, outputs, reference = _graph_def_model(path, options)
            kind = "frozen GraphDef"
        example = _example(declared, self.example)
        shapes = check_against_model(resolve_names(shapes, aliases, self.name), declared, self.name, self.layout, example)
        traced = TracedModel(call, [TensorSpec(s.name, s.dtype, tuple(shapes[s.name])) for s in declared], outputs,
                             reference, "TensorFlow")
        result = convert(traced, options)
        return LoadedModel(
            mod=result["mod"], inputs=result["inputs"], outputs=result["outputs"], reference=result["reference"],
            framework=self.name, framework_version=f"tensorflow {tf.__version__} ({kind}), tf2onnx {tf2onnx.__version__}",
            route=result["route"], routes_failed=result["routes_failed"], precision=result["precision"],
            data_input_config={s.name: list(s.shape) for s in result["inputs"]},
        )


def _example(declared: Sequence[TensorSpec], fallback: str) -> str:
    """A DataInputConfig for this model's own inputs (unknown dims as 1), for error messages."""
    if not declared or any(s.shape is None for s in declared):
        return fallback
    return json.dumps({s.name: [d if isinstance(d, int) and d > 0 else 1 for d in s.shape] for s in declared})
