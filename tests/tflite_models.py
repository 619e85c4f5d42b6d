"""TFLite models as TensorFlow's converter really writes them, built in the tests (seeded weights, nothing
downloaded): a float CNN with BatchNorm and a depthwise conv, an MLP, full-integer quantized CNNs with int8 and
uint8 input/output, and a quantized model of data-movement operators. Every builder returns the ``.tflite`` file's bytes."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from tests.tf_models import _randomize_batchnorm  # noqa: E402  (one copy for the TF-family builders)

SIZE = 12  # spatial size of the CNNs: small, so that compiling and running under qemu stays quick
CNN_SHAPE = (1, SIZE, SIZE, 3)
MLP_FEATURES = 20


def _keras() -> Any:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    return tf.keras




def cnn() -> Any:
    """Conv -> BatchNorm -> ReLU -> pad -> DepthwiseConv -> BatchNorm -> ReLU6 -> Conv 1x1, plus a max-pooled residual
    branch, -> global average pool -> BatchNorm -> Dense -> softmax, NHWC (a MobileNet block in small). The
    converter folds a BatchNorm after a conv into it; the one after the pool stays (MUL and ADD)."""
    keras = _keras()
    layers = keras.layers
    x = inp = keras.Input(shape=CNN_SHAPE[1:], batch_size=1, name="input")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.ZeroPadding2D(1)(x)  # padding SAME cannot express: a PAD (quantized: with the zero point)
    x = layers.DepthwiseConv2D(3, strides=2, padding="valid", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    x = layers.Conv2D(8, 1)(x)
    x = layers.Add()([x, layers.MaxPooling2D(2)(inp[..., :1] * 0.5 + 0.25)])
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.BatchNormalization()(x)
    x = layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inp, x)
    _randomize_batchnorm(model)
    return model


def mlp() -> Any:
    """Dense(32, relu) -> Dense(16, tanh) -> Dense(4) on 20 features, with a dynamic batch dimension."""
    keras = _keras()
    layers = keras.layers
    inp = keras.Input(shape=(MLP_FEATURES,), name="features")
    x = layers.Dense(32, activation="relu")(inp)
    x = layers.Dense(16, activation="tanh")(x)
    return keras.Model(inp, layers.Dense(4)(x))


def data_movement() -> Any:
    """Conv, then transpose, crop + pad, pool + nearest upsampling, concatenated: the quantized operators that only
    move values (TRANSPOSE, STRIDED_SLICE, PAD, TILE), which TVM's frontend refuses on int8 tensors by itself."""
    keras = _keras()
    layers = keras.layers
    inp = keras.Input(shape=(6, 6, 4), batch_size=1, name="input")
    x = layers.Conv2D(4, 1, activation="relu")(inp)
    cropped = layers.ZeroPadding2D(((0, 1), (1, 0)))(layers.Cropping2D(((1, 0), (0, 1)))(x))
    upsampled = layers.UpSampling2D(2)(layers.MaxPooling2D(2)(x))
    y = layers.Concatenate()([layers.Permute((2, 1, 3))(x), cropped, upsampled])
    return keras.Model(inp, layers.Reshape((108,))(layers.Conv2D(3, 1)(y)))


def convert(model: Any, quantize: str | None = None) -> bytes:
    """``TFLiteConverter.from_keras_model``; ``quantize``: None (float), "int8" or "uint8" (full-integer
    quantization with a representative dataset, inputs and outputs of that type)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize:
        shape = (1, *model.inputs[0].shape[1:])
        rng = np.random.default_rng(2)

        def representative() -> Any:
            for _ in range(32):
                yield [rng.standard_normal(shape).astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = {"int8": tf.int8, "uint8": tf.uint8}[quantize]
    return converter.convert()


def dynamic_range() -> bytes:
    """Dynamic-range quantization (int8 weights, float activations): ``Optimize.DEFAULT`` without a representative
    dataset. The converter leaves weights under 1024 elements in float, so the layer is 20 x 64."""
    import tensorflow as tf

    keras = _keras()
    inp = keras.Input(shape=(MLP_FEATURES,), name="features")
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, keras.layers.Dense(64)(inp)))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


BUILDERS: dict[str, Callable[[], bytes]] = {
    "cnn": lambda: convert(cnn()),
    "mlp": lambda: convert(mlp()),
    "cnn-int8": lambda: convert(cnn(), "int8"),
    "cnn-uint8": lambda: convert(cnn(), "uint8"),
    "moves-int8": lambda: convert(data_movement(), "int8"),
}


def operators(data: bytes) -> set[str]:
    """The builtin operator names of subgraph 0 of a ``.tflite`` file."""
    import tflite

    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    model = tflite.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    ops = set()
    for i in range(graph.OperatorsLength()):
        code = model.OperatorCodes(graph.Operators(i).OpcodeIndex())
        ops.add(names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())])
    return ops
