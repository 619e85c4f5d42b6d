"""``Constant`` and ``ConstantOfShape``: constants in every form the ONNX spec allows.

TVM's converters read only ``Constant(value=tensor)`` and fill ``ConstantOfShape`` by broadcasting its one-element
``value`` tensor, which fails for a rank-0 requested shape (``broadcast_to expects the input shape to have the number
of ndim at least as the input tensor's``): ``torch.onnx.export(dynamo=False)`` writes exactly that for a BERT encoder.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter, get_constant, get_numpy


class Constant(OnnxOpConverter):
    """``Constant`` with ``value``, ``value_float(s)``, ``value_int(s)`` (strings are refused by name)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        if "value" in attr:
            array = get_numpy(attr["value"])
        elif "value_float" in attr:
            array = np.array(attr["value_float"], np.float32)
        elif "value_floats" in attr:
            array = np.array(attr["value_floats"], np.float32)
        elif "value_int" in attr:
            array = np.array(attr["value_int"], np.int64)
        elif "value_ints" in attr:
            array = np.array(attr["value_ints"], np.int64)
        else:
            given = sorted(k for k in attr if k != "tvm_custom")
            raise ValueError(f"Constant: attribute {given or 'none'} is not supported; expected value, value_float(s) or value_int(s)")
        if array.dtype.kind in "OSU":
            raise ValueError("Constant: string tensors are not supported")
        return relax.const(array, str(array.dtype))


class ConstantOfShape(OnnxOpConverter):
    """A tensor of the given shape (a constant, or computed at run time) filled with ``value`` (default 0.0f)."""

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        fill = get_numpy(attr["value"]) if attr.get("value") is not None else np.zeros(1, np.float32)
        if fill.size != 1:
            raise ValueError(f"ConstantOfShape: value has {fill.size} elements; expected one")
        dtype = str(fill.dtype)
        scalar = fill.reshape(())
        shape = get_constant(inputs[0], params)
        if isinstance(shape, tvm.ir.GenericConst):
            return relax.const(np.full(tuple(int(d) for d in shape.value.numpy().reshape(-1)), scalar, dtype), dtype)
        if isinstance(shape, relax.ShapeExpr) and all(isinstance(d, tirx.IntImm) for d in shape.values):
            return relax.const(np.full(tuple(int(d) for d in shape.values), scalar, dtype), dtype)
        if not isinstance(shape, relax.ShapeExpr):
            shape = relax.op.tensor_to_shape(shape)
        return relax.op.broadcast_to(relax.const(scalar, dtype), shape)
