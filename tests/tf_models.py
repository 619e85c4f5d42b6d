"""TensorFlow and Keras models as users save them, built in the tests (seeded weights, nothing downloaded).

SavedModels are written by ``model.export`` (Keras) and ``tf.saved_model.save`` (a ``tf.Module``), frozen GraphDefs
by freezing a traced function, Keras files by ``model.save``. Builders write into a folder and return the archive
members as ``{name: bytes}`` for ``modelzoo.write_archive``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

SIZE = 12  # spatial size of the CNNs: small, so that compiling and running under qemu stays quick
CNN_SHAPE = (1, SIZE, SIZE, 3)  # NHWC, as the model computes
MLP_FEATURES = 20
SEQ_SHAPE = (2, 6, 5)  # batch, time steps, features


def _tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    return tf


def _randomize_batchnorm(model: Any) -> None:
    """Give every BatchNormalization layer non-trivial statistics (a fresh one is the identity)."""
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n).astype("float32"), rng.normal(0, 0.2, n).astype("float32"),
                               rng.normal(0, 0.2, n).astype("float32"), rng.uniform(0.5, 2.0, n).astype("float32")])


def cnn(name: str = "input") -> Any:
    """Conv -> BatchNorm -> ReLU -> DepthwiseConv -> BatchNorm -> ReLU6 -> Conv 1x1 -> global average pool -> Dense ->
    softmax, NHWC with a dynamic batch (a MobileNet block in small)."""
    tf = _tf()
    keras, layers = tf.keras, tf.keras.layers
    x = inp = keras.Input(shape=CNN_SHAPE[1:], name=name)
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    x = layers.Conv2D(16, 1)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(10, activation="softmax", name="probabilities")(x)
    model = keras.Model(inp, x)
    _randomize_batchnorm(model)
    return model


def mlp(name: str = "features") -> Any:
    """Dense 20 -> 32 (ReLU) -> 16 (tanh) -> 4."""
    tf = _tf()
    keras, layers = tf.keras, tf.keras.layers
    inp = keras.Input(shape=(MLP_FEATURES,), name=name)
    x = layers.Dense(32, activation="relu")(inp)
    x = layers.Dense(16, activation="tanh")(x)
    return keras.Model(inp, layers.Dense(4, name="scores")(x))


def lstm() -> Any:
    """LSTM(8) over (time, features) sequences -> Dense 3; dynamic batch."""
    tf = _tf()
    keras, layers = tf.keras, tf.keras.layers
    inp = keras.Input(shape=SEQ_SHAPE[1:], name="sequence")
    return keras.Model(inp, layers.Dense(3)(layers.LSTM(8)(inp)))


def _tree(folder: Path) -> dict[str, bytes]:
    folder = Path(folder)
    return {p.relative_to(folder.parent).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def saved_model_of(model: Any, folder: Path) -> dict[str, bytes]:
    """A Keras model exported as a SavedModel (``model.export``: serving_default keyed by the input names)."""
    model.export(str(folder), verbose=False)
    return _tree(folder)


class _TwoInputs:
    """A tf.Module with two inputs (an NHWC image and a feature vector) and two named outputs."""

    def __init__(self) -> None:
        tf = _tf()
        rng = np.random.default_rng(2)
        self.module = tf.Module()
        self.module.kernel = tf.Variable(rng.normal(0, 0.3, (3, 3, 3, 4)).astype("float32"))
        self.module.dense = tf.Variable(rng.normal(0, 0.3, (4 + 6, 5)).astype("float32"))
        module = self.module

        @tf.function(input_signature=[tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="image"),
                                      tf.TensorSpec((None, 6), tf.float32, name="extra")])
        def serve(image: Any, extra: Any) -> dict[str, Any]:
            x = tf.nn.relu(tf.nn.conv2d(image, module.kernel, strides=2, padding="SAME"))
            x = tf.reduce_mean(x, axis=[1, 2])
            logits = tf.matmul(tf.concat([x, extra], axis=1), module.dense)
            return {"logits": logits, "score": tf.reduce_max(tf.nn.softmax(logits), axis=1)}

        module.serve = serve


def two_inputs_saved_model(folder: Path) -> dict[str, bytes]:
    tf = _tf()
    m = _TwoInputs().module
    tf.saved_model.save(m, str(folder), signatures={"serving_default": m.serve})
    return _tree(folder)


def frozen_graph_def(model: Any, text: bool = False) -> bytes:
    """``model`` traced with a dynamic batch and frozen to a GraphDef (variables as constants); the placeholder is
    named after the Keras input, the output op ``output``."""
    tf = _tf()
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name=model.inputs[0].name)
    function = tf.function(lambda x: tf.identity(model(x, training=False), name="output"))
    frozen = convert_variables_to_constants_v2(function.get_concrete_function(spec))
    graph_def = frozen.graph.as_graph_def()
    if text:
        from google.protobuf import text_format

        return text_format.MessageToString(graph_def).encode()
    return graph_def.SerializeToString()


def graph_def_with(op: str, folder: Path) -> bytes:
    """A frozen GraphDef whose graph writes a file (``WriteFile`` into ``folder``) besides computing: must never run."""
    tf = _tf()
    marker = str(Path(folder) / "written-by-the-model")

    @tf.function(input_signature=[tf.TensorSpec((1, 4), tf.float32, name="x")])
    def f(x: Any) -> Any:
        if op == "WriteFile":
            with tf.control_dependencies([tf.io.write_file(marker, "ran")]):
                return tf.identity(x * 2.0, name="y")
        return tf.identity(x * 2.0, name="y")

    return f.get_concrete_function().graph.as_graph_def().SerializeToString()


def svd_graph_def() -> bytes:
    """A frozen GraphDef computing singular values (Svd): neither tf2onnx nor the TFLite converter has it."""
    tf = _tf()

    @tf.function(input_signature=[tf.TensorSpec((1, 4, 4), tf.float32, name="matrix")])
    def f(x: Any) -> Any:
        return tf.identity(tf.linalg.svd(x, compute_uv=False), name="singular_values")

    return f.get_concrete_function().graph.as_graph_def().SerializeToString()


def checkpoint(folder: Path) -> dict[str, bytes]:
    """A training checkpoint of the MLP as tf.train.Checkpoint writes it (checkpoint, ckpt-1.index, ckpt-1.data-*)."""
    tf = _tf()
    tf.train.Checkpoint(model=mlp()).save(str(Path(folder) / "ckpt"))
    return _tree(folder)


def keras_file(model: Any, path: Path) -> bytes:
    """``model.save(path)``: .keras (zip) or .h5 (HDF5) by the suffix."""
    model.save(str(path))
    return Path(path).read_bytes()


def lambda_model(marker: Path) -> Any:
    """A model with a Lambda layer whose function writes ``marker`` when it runs (Keras runs it once while building
    the model, so delete the marker before loading)."""
    tf = _tf()
    keras = tf.keras
    path = str(marker)
    inp = keras.Input(shape=(4,), name="x")
    return keras.Model(inp, keras.layers.Lambda(lambda t: (open(path, "w").write("ran"), t * 2.0)[1], name="doubled")(inp))
