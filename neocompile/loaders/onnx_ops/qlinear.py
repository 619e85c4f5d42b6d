"""``QLinearConv`` and ``QLinearMatMul``: what ``onnxruntime.quantization.quantize_static`` writes in QOperator format.

Both accumulate exactly in int32 like onnxruntime, then requantize: ``y = saturate(round(acc * x_scale * w_scale /
y_scale) + y_zero_point)`` with round-half-to-even, per output channel where the weight scale is per channel.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import MatMulInteger, OnnxOpConverter

from .integer import centered, convolve, optional, per_axis


def requantize(bb: Any, acc: Any, scales: list[tuple[Any, int | None]], divisor: Any, zero_point: Any, dtype: str) -> Any:
    """``saturate(round(float(acc) * prod(scales) / divisor) + zero_point)`` as ``dtype``; ``scales`` are ``(tensor,
    channel axis)`` pairs, axis None meaning the last one."""
    acc = bb.normalize(acc)
    ndim = acc.ty.ndim
    multiplier = None
    for scale, axis in scales:
        scale = per_axis(bb, scale, ndim, ndim - 1 if axis is None else axis)
        multiplier = scale if multiplier is None else relax.op.multiply(multiplier, scale)
    multiplier = relax.op.divide(multiplier, per_axis(bb, divisor, ndim, 0))
    value = relax.op.round(relax.op.multiply(relax.op.astype(acc, "float32"), multiplier))
    if zero_point is not None:
        value = relax.op.add(value, relax.op.astype(per_axis(bb, zero_point, ndim, 0), "float32"))
    info = np.iinfo(dtype)
    return relax.op.astype(relax.op.clip(value, int(info.min), int(info.max)), dtype)


def _out_dtype(zero_point: Any, fallback: Any) -> str:
    return str((zero_point if zero_point is not None else fallback).ty.dtype)


class QLinearConv(OnnxOpConverter):
    """Inputs ``x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point[, B]`` (B: int32 bias)."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp = (optional(inputs, i) for i in range(8))
        acc = convolve(bb, centered(bb, x, x_zp), centered(bb, w, w_zp, axis=0), optional(inputs, 8), attr, params)
        return requantize(bb, acc, [(x_scale, None), (w_scale, 1)], y_scale, y_zp, _out_dtype(y_zp, x))


class QLinearMatMul(OnnxOpConverter):
    """Inputs ``a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point`` (b per column)."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp = (optional(inputs, i) for i in range(8))
        acc = MatMulInteger.get_converter(10)(bb, [a, b, a_zp, b_zp], attr, params)
        acc = bb.normalize(acc)
        return requantize(bb, acc, [(a_scale, acc.ty.ndim - 2), (b_scale, None)], y_scale, y_zp, _out_dtype(y_zp, a))
