"""onnxruntime's quantized contrib operators (domain ``com.microsoft``) that ``quantize_static`` writes in QOperator
format next to ``QLinearConv``: ``QGemm``, ``QLinearAdd``, ``QLinearMul``, ``QLinearGlobalAveragePool``,
``QLinearAveragePool``, ``QLinearSigmoid``, ``QLinearLeakyRelu``, ``QLinearSoftmax``, ``QLinearConcat``.

``QGemm`` accumulates exactly in int32 like ``QLinearMatMul``; the others dequantize their inputs, apply the float
operator and quantize the result, as onnxruntime's reference kernels define them (its lookup-table kernels may round
an element one step differently, which the int8 verification tolerance allows)."""
from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import AveragePool, OnnxOpConverter

from .integer import centered, optional, per_axis
from .qlinear import requantize


def dequantize(bb: Any, x: Any, scale: Any, zero_point: Any) -> Any:
    """``(float(x) - float(zero_point)) * scale`` with a scalar scale and zero point."""
    value = relax.op.astype(centered(bb, x, zero_point), "float32")
    return bb.normalize(relax.op.multiply(value, per_axis(bb, scale, 1, 0)))


def quantize(bb: Any, y: Any, scale: Any, zero_point: Any, dtype: str) -> Any:
    """``saturate(round(y / scale) + zero_point)`` as ``dtype`` (round half to even, as onnxruntime)."""
    value = relax.op.round(relax.op.divide(y, per_axis(bb, scale, 1, 0)))
    if zero_point is not None:
        value = relax.op.add(value, relax.op.astype(per_axis(bb, zero_point, 1, 0), "float32"))
    info = np.iinfo(dtype)
    return relax.op.astype(relax.op.clip(value, int(info.min), int(info.max)), dtype)


def _dtype(x: Any) -> str:
    return str(x.ty.dtype)


class _Unary(OnnxOpConverter):
    """``X, X_scale, X_zero_point, Y_scale, Y_zero_point``: quantize(op(dequantize(X)))."""

    @classmethod
    def float_op(cls, bb, x, attr):
        raise NotImplementedError

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x, x_scale, x_zp, y_scale, y_zp = (optional(inputs, i) for i in range(5))
        y = bb.normalize(cls.float_op(bb, dequantize(bb, x, x_scale, x_zp), attr))
        return quantize(bb, y, y_scale, y_zp, _dtype(x))


class QLinearSigmoid(_Unary):
    @classmethod
    def float_op(cls, bb, x, attr):
        return relax.op.sigmoid(x)


class QLinearLeakyRelu(_Unary):
    @classmethod
    def float_op(cls, bb, x, attr):
        return relax.op.nn.leakyrelu(x, attr.get("alpha", 0.01))


class QLinearGlobalAveragePool(_Unary):
    @classmethod
    def float_op(cls, bb, x, attr):
        spatial = list(range(1, x.ty.ndim - 1)) if attr.get("channels_last", 0) else list(range(2, x.ty.ndim))
        return relax.op.mean(x, axis=spatial, keepdims=True)


class QLinearAveragePool(_Unary):
    @classmethod
    def float_op(cls, bb, x, attr):
        if attr.get("channels_last", 0):
            raise ValueError("QLinearAveragePool: channels_last=1 is not supported; expected 0 (NCHW)")
        attr = {k: v for k, v in attr.items() if k != "channels_last"}
        return AveragePool.get_converter(19)(bb, [x], attr, None)


class QLinearSoftmax(_Unary):
    @classmethod
    def float_op(cls, bb, x, attr):
        axis = attr.get("axis", -1)
        if attr.get("opset", 13) >= 13:
            return relax.op.nn.softmax(x, axis=axis)
        # Before opset 13 Softmax normalizes over the flattened dimensions from ``axis`` on.
        shape = [int(d) for d in x.ty.shape.values]
        axis = axis % len(shape)
        flat = relax.op.reshape(x, [int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))])
        return relax.op.reshape(relax.op.nn.softmax(flat, axis=1), shape)


class _Binary(OnnxOpConverter):
    """``A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale, C_zero_point``."""

    op = staticmethod(relax.op.add)

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        a, a_scale, a_zp, b, b_scale, b_zp, c_scale, c_zp = (optional(inputs, i) for i in range(8))
        y = bb.normalize(cls.op(dequantize(bb, a, a_scale, a_zp), dequantize(bb, b, b_scale, b_zp)))
        return quantize(bb, y, c_scale, c_zp, _dtype(a))


class QLinearAdd(_Binary):
    op = staticmethod(relax.op.add)


class QLinearMul(_Binary):
    op = staticmethod(relax.op.multiply)


class QLinearConcat(OnnxOpConverter):
    """``Y_scale, Y_zero_point``, then ``X, X_scale, X_zero_point`` per input; attribute ``axis``."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        y_scale, y_zp = inputs[0], inputs[1]
        parts = [dequantize(bb, inputs[i], inputs[i + 1], inputs[i + 2]) for i in range(2, len(inputs), 3)]
        y = bb.normalize(relax.op.concat(parts, axis=attr["axis"]))
        return quantize(bb, y, y_scale, y_zp, _dtype(inputs[2]))


class QGemm(OnnxOpConverter):
    """``A, a_scale, a_zero_point, B, b_scale, b_zero_point[, C (int32)][, y_scale, y_zero_point]``: ``alpha *
    A' B' + C`` accumulated in int32; float32 output without ``y_scale``."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        a, a_scale, a_zp, b, b_scale, b_zp, bias, y_scale, y_zp = (optional(inputs, i) for i in range(9))
        a, b = centered(bb, a, a_zp), centered(bb, b, b_zp, axis=0 if attr.get("transB", 0) else 1)
        if attr.get("transA", 0):
            a = bb.normalize(relax.op.permute_dims(a, [1, 0]))
        if attr.get("transB", 0):
            b = bb.normalize(relax.op.permute_dims(b, [1, 0]))
        acc = relax.op.matmul(a, b, out_dtype="int32")
        if bias is not None:
            acc = relax.op.add(acc, bias)
        acc = bb.normalize(acc)
        alpha = relax.const(np.float32(attr.get("alpha", 1.0)))
        if y_scale is None:
            scale = relax.op.multiply(per_axis(bb, a_scale, 2, 1), per_axis(bb, b_scale, 2, 1))
            return relax.op.multiply(relax.op.astype(acc, "float32"), relax.op.multiply(scale, alpha))
        return requantize(bb, acc, [(a_scale, None), (b_scale, None), (alpha, None)], y_scale, y_zp,
                          str((y_zp if y_zp is not None else inputs[0]).ty.dtype))
