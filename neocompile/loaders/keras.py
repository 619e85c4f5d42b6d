"""Keras loader: one ``.h5`` (Keras 2 or 3 HDF5) or ``.keras`` (Keras 3 zip) file holding a whole model.

Neo's Keras rule: the model computes in NHWC, but DataInputConfig gives every 4-D (image) input in **NCHW**, e.g.
``{"input_1": [1, 3, 224, 224]}`` for a model whose input is ``(None, 224, 224, 3)``; a shape in the wrong layout
is refused with Neo's error text. As in Neo (whose TVM Keras frontend converted the model to NCHW), the compiled
package takes those inputs in NCHW as given: the model is traced behind a transpose to NHWC. Inputs of other ranks
(features, sequences) are given and fed as the model declares them. Input names are the model's input layer names.

Nothing in the file runs as code: before Keras reads the file, its model config (``config.json`` in the zip, the
``model_config`` attribute of the HDF5 file) is checked for Lambda layers, Python lambdas, custom or third-party
objects and Keras utilities that load or fetch files, and the model is then loaded with ``safe_mode=True`` and
``compile=False``. What remains are Keras's own layers.

After loading, the model goes the TensorFlow loader's way (``tensorflow.convert``: tf2onnx -> ONNX first, TF's
TFLite converter -> TFLITE second), traced with the given static shapes; the reference is the Keras model itself.
"""
from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..datainput import TensorSpec, check_against_model
from ..errors import InputConfigurationError
from .base import LoadedModel, Loader
from .tensorflow import SAVED_MODEL_FILES, TracedModel, convert, resolve_names

CANNOT_LOAD = "Unable to load provided Keras model. Error"
NCHW_RULE = "Input shapes should be provided in NCHW format."
#: Layers whose loading runs code from the file, loads other files, or unpickles: refused before Keras sees them.
REFUSED_LAYERS = {
    "Lambda": "its Python function would have to run",
    "TFSMLayer": "it loads another SavedModel from a path",
    "TorchModuleWrapper": "it unpickles a PyTorch module",
    "JaxLayer": "it wraps Python functions",
    "FlaxLayer": "it wraps Python functions",
    "StringLookup": "it may read its vocabulary from a file path",
    "IntegerLookup": "it may read its vocabulary from a file path",
    "TextVectorization": "it may read its vocabulary from a file path",
}
# Keras modules no model needs that reach files, the network or global settings.
_REFUSED_MODULES = ("keras.utils", "keras.saving", "keras.config", "keras.backend", "keras.preprocessing",
                    "keras.src.utils", "keras.src.saving", "keras.src.backend.config", "keras.src.legacy.saving",
                    "keras.src.legacy.preprocessing")
# Keras functions that load, save or fetch (Keras's own NON_MODELING_APIS, by name, whatever module a config names).
_REFUSED_FUNCTIONS = {"clear_session", "enable_unsafe_deserialization", "load_model", "model_from_json", "save_model",
                      "image_dataset_from_directory", "text_dataset_from_directory", "audio_dataset_from_directory",
                      "load_img", "save_img", "deserialize_keras_object", "serialize_keras_object", "load_weights",
                      "save_weights", "register_keras_serializable", "get_file"}
CONFIG_LIMIT = 64 << 20  # bytes of model config read from a .keras zip


def _keras() -> Any:
    """Keras on its TensorFlow backend (the routes trace the model with tf.function)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from .tensorflow import _tf

    _tf()
    import keras

    if keras.backend.backend() != "tensorflow":
        raise InputConfigurationError(
            f"Keras runs on its {keras.backend.backend()} backend in this process; neocompile converts Keras models "
            "on the tensorflow backend (set KERAS_BACKEND=tensorflow)")
    return keras


# -- the config, read before Keras does ------------------------------------------------------------------------------
def read_config(path: Path) -> tuple[Any, str]:
    """The model config of a ``.keras`` or ``.h5`` file as JSON, and the Keras version that saved it ("" unknown)."""
    if path.suffix.lower() == ".keras":
        try:
            with zipfile.ZipFile(path) as archive:
                info = archive.getinfo("config.json")
                if info.file_size > CONFIG_LIMIT:
                    raise ValueError(f"config.json is {info.file_size} bytes, more than {CONFIG_LIMIT}")
                config = json.loads(archive.read(info).decode("utf-8"))
                version = ""
                if "metadata.json" in archive.namelist() and archive.getinfo("metadata.json").file_size < 1 << 20:
                    version = str(json.loads(archive.read("metadata.json")).get("keras_version", ""))
        except KeyError:
            raise InputConfigurationError(f"{CANNOT_LOAD}: {path.name} has no config.json; expected a .keras file "
                                          "written by model.save('model.keras')") from None
        except (zipfile.BadZipFile, ValueError, UnicodeDecodeError, OSError) as exc:
            raise InputConfigurationError(f"{CANNOT_LOAD}: {path.name} is not a .keras zip with a JSON config "
                                          f"({type(exc).__name__}: {exc})") from exc
        return config, version
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            version = f.attrs.get("keras_version", "")
            weights_only = raw is None and ("layer_names" in f.attrs or "model_weights" not in f)
    except OSError as exc:
        raise InputConfigurationError(f"{CANNOT_LOAD}: {path.name} is not an HDF5 file ({exc})") from exc
    if raw is None:
        what = "weights only (model.save_weights)" if weights_only else "no model config"
        raise InputConfigurationError(
            f"{CANNOT_LOAD}: {path.name} holds {what}; save the whole model with model.save('model.h5') or "
            "model.save('model.keras')")
    text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    version = version.decode("utf-8") if isinstance(version, bytes) else str(version)
    try:
        return json.loads(text), version
    except ValueError as exc:
        raise InputConfigurationError(f"{CANNOT_LOAD}: the model_config of {path.name} is not JSON ({exc})") from exc


def refuse_code(config: Any) -> None:
    """Refuse a model config that asks for code to run (see the module docstring)."""
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        stack.extend(node.values())
        class_name = node.get("class_name")
        if not isinstance(class_name, str):
            continue
        inner = node.get("config")
        name = inner.get("name") if isinstance(inner, dict) and isinstance(inner.get("name"), str) else node.get("name")
        label = f"{class_name} layer '{name}'" if name else f"{class_name} object"
        if class_name in REFUSED_LAYERS:
            raise InputConfigurationError(
                f"{CANNOT_LOAD}: the model has a {label}, which neocompile refuses without running it "
                f"({REFUSED_LAYERS[class_name]}; Keras safe_mode). Replace it by built-in layers, or export the model "
                "to a SavedModel (model.export('export_dir')) and compile that with Framework TENSORFLOW")
        if class_name == "__lambda__":
            raise InputConfigurationError(
                f"{CANNOT_LOAD}: the model config holds a Python lambda, which neocompile refuses without running it "
                "(Keras safe_mode). Use built-in layers and activations")
        module = node.get("module")
        if class_name in _REFUSED_FUNCTIONS or (isinstance(module, str) and module and not _keras_module(module)):
            raise InputConfigurationError(
                f"{CANNOT_LOAD}: the model config asks for {label} from module '{module or '?'}'; neocompile loads "
                "Keras's own layers only (no custom or third-party objects, no Keras utilities that load, save or "
                "fetch files, nothing imported from the file's say-so)")
        registered = node.get("registered_name")
        if isinstance(registered, str) and ">" in registered:
            raise InputConfigurationError(
                f"{CANNOT_LOAD}: the model config asks for the custom object '{registered}' ({label}); neocompile "
                "loads Keras's own layers only. Rebuild the model from built-in layers")


def _keras_module(module: str) -> bool:
    if module in ("keras", "builtins"):
        return True
    return module.startswith("keras.") and not any(module == p or module.startswith(p + ".") for p in _REFUSED_MODULES)


# -- the loader ------------------------------------------------------------------------------------------------------
def _nchw(shape: tuple) -> tuple:
    n, h, w, c = shape
    return (n, c, h, w)


def _text(shape: Sequence[Any]) -> str:
    return "(" + ",".join("None" if d is None else str(d) for d in shape) + ")"


def check_layout(name: str, given: tuple[int, ...], declared: tuple) -> None:
    """Neo's check of a 4-D input: ``given`` is NCHW, the model's ``declared`` shape NHWC."""
    nchw = _nchw(declared)
    if len(given) == 4 and all(d is None or d == g for d, g in zip(nchw, given)):
        return
    raise InputConfigurationError(
        f"Input {name} has wrong shape in Input Shape dictionary. {NCHW_RULE} For example, {_text(nchw)}. "
        f"Got {list(given)}; the Keras model's input is NHWC {_text(declared)}, which DataInputConfig gives in NCHW "
        f"as {_text(nchw)}")


class KerasLoader(Loader):
    name = "KERAS"
    suffixes = (".h5", ".keras")
    layout = "NCHW"
    example = '{"input_1": [1, 3, 224, 224]}'

    def find_model(self, root: Path) -> Path:
        from ..archive import visible_files

        files = visible_files(root)
        found = [p for p in files if p.suffix.lower() in self.suffixes]
        if len(found) > 1:
            listed = [p.relative_to(root).as_posix() for p in found]
            raise InputConfigurationError(f"Multiple h5 files provided, {listed}, when only one is allowed. "
                                          "Expected exactly one .h5 or .keras file")
        if not found:
            listed = ", ".join(p.relative_to(root).as_posix() for p in files[:10]) or "none"
            hint = ""
            if any(p.name in SAVED_MODEL_FILES for p in files) or any(p.suffix.lower() in (".pb", ".pbtxt") for p in files):
                hint = " The archive holds a TensorFlow model: compile it with Framework TENSORFLOW."
            raise InputConfigurationError(
                f"No h5 file provided in the archive (found: {listed}). Expected exactly one .h5 or .keras file "
                f"(model.save('model.h5') or model.save('model.keras')).{hint}")
        return found[0]

    def load(self, path: Path, shapes: dict[str, tuple[int, ...]] | None, options: dict[str, Any]) -> LoadedModel:
        path = Path(path)
        config, saved_by = read_config(path)
        refuse_code(config)  # before Keras parses anything
        keras = _keras()
        import tensorflow as tf
        import tf2onnx

        try:
            model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
        except InputConfigurationError:
            raise
        except Exception as exc:
            text = " ".join(str(exc).split())[:600] or type(exc).__name__
            raise InputConfigurationError(f"{CANNOT_LOAD}: {text}") from exc
        tensors = list(getattr(model, "inputs", None) or [])
        if not tensors:
            raise InputConfigurationError(
                f"{CANNOT_LOAD}: the model declares no inputs (a subclassed or never-built model); save a functional "
                "or Sequential model built with keras.Input")
        names = [t.name for t in tensors]
        declared = [tuple(t.shape) for t in tensors]
        image = [len(s) == 4 for s in declared]
        specs = [TensorSpec(n, str(t.dtype), _nchw(s) if img else s) for n, t, s, img in zip(names, tensors, declared, image)]
        example = json.dumps({s.name: [d or 1 for d in s.shape] for s in specs})
        shapes = resolve_names(shapes, {f"{n}:0": n for n in names}, self.name)
        for name, given, dims, img in zip(names, tensors, declared, image):
            if img and name in shapes:
                check_layout(name, shapes[name], dims)
        layout = "NCHW" if all(image) else "NCHW (4-D image inputs; other inputs as the model declares them)"
        shapes = check_against_model(shapes, specs, self.name, layout, example)
        inputs = [TensorSpec(s.name, s.dtype, tuple(shapes[s.name])) for s in specs]
        struct = getattr(model, "_inputs_struct", None)

        def pack(xs: list[Any]) -> Any:
            if isinstance(struct, dict):
                return dict(zip(names, xs))
            return xs[0] if len(xs) == 1 else list(xs)

        def call(*xs: Any) -> list[Any]:
            xs = [tf.transpose(x, [0, 2, 3, 1]) if img else x for x, img in zip(xs, image)]
            return tf.nest.flatten(model(pack(xs), training=False))

        def reference(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
            xs = [tf.constant(np.transpose(a, (0, 2, 3, 1)) if img else a) for a, img in zip(arrays, image)]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Keras's numpy-2 __array__ deprecation notices
                return [np.asarray(t) for t in tf.nest.flatten(model(pack(xs), training=False))]

        output_names = [str(n) for n in (getattr(model, "output_names", None) or [])]
        result = convert(TracedModel(call, inputs, output_names, reference, "Keras"), options)
        fmt = ".keras" if path.suffix.lower() == ".keras" else "HDF5"
        written = f", saved by keras {saved_by}" if saved_by else ""
        return LoadedModel(
            mod=result["mod"], inputs=result["inputs"], outputs=result["outputs"], reference=result["reference"],
            framework=self.name,
            framework_version=f"keras {keras.__version__} ({fmt}{written}), tensorflow {tf.__version__}, "
                              f"tf2onnx {tf2onnx.__version__}",
            route=result["route"], routes_failed=result["routes_failed"], precision=result["precision"],
            data_input_config={s.name: list(s.shape) for s in result["inputs"]},
        )
