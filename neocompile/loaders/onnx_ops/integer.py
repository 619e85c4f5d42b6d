"""``ConvInteger`` (what ``onnxruntime.quantization.quantize_dynamic`` writes for ``Conv``) and the integer helpers
the quantized converters share: widen to int32 and subtract zero points, then convolve exactly in int32.

``MatMulInteger``, ``DynamicQuantizeLinear``, ``QuantizeLinear`` and ``DequantizeLinear`` are TVM's own converters.
"""
from __future__ import annotations

from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import Conv, OnnxOpConverter


def optional(inputs: Any, index: int) -> Any:
    """The node's input at ``index``, or None when it is absent or empty."""
    return inputs[index] if len(inputs) > index else None


def per_axis(bb: Any, value: Any, ndim: int, axis: int) -> Any:
    """A scalar or per-channel ``[C]`` tensor shaped to broadcast along ``axis`` of a rank-``ndim`` tensor."""
    value = bb.normalize(value)
    shape = [int(d) for d in value.ty.shape.values]
    if len(shape) == 0:
        return value
    if len(shape) != 1:
        raise ValueError(f"a scale or zero point of shape {shape}; expected a scalar or one value per channel")
    if shape[0] == 1:
        return bb.normalize(relax.op.reshape(value, []))
    return bb.normalize(relax.op.reshape(value, [1] * axis + [shape[0]] + [1] * (ndim - axis - 1)))


def centered(bb: Any, tensor: Any, zero_point: Any, axis: int = 0) -> Any:
    """``int32(tensor) - int32(zero_point)``, the zero point scalar or per channel along ``axis``."""
    widened = bb.normalize(relax.op.astype(tensor, "int32"))
    if zero_point is None:
        return widened
    zp = per_axis(bb, relax.op.astype(zero_point, "int32"), widened.ty.ndim, axis)
    return bb.normalize(relax.op.subtract(widened, zp))


def convolve(bb: Any, data: Any, weight: Any, bias: Any, attr: dict, params: Any) -> Any:
    """TVM's ``Conv`` conversion (auto_pad, groups, 1-3 spatial dims) on already-widened operands."""
    return Conv.get_converter(11)(bb, [data, weight, bias], dict(attr), params)


class ConvInteger(OnnxOpConverter):
    """``y = conv(x - x_zero_point, w - w_zero_point)`` accumulated in int32 (padding is ``x_zero_point``)."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        data = centered(bb, inputs[0], optional(inputs, 2))
        weight = centered(bb, inputs[1], optional(inputs, 3), axis=0)  # per output channel
        return convolve(bb, data, weight, None, attr, params)
