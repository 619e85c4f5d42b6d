"""``BatchNormalization`` of float16/bfloat16 data (inference) as plain arithmetic in the data's type.

TVM's ``relax.op.nn.batch_norm`` legalizes float16 data into a float32 result, so the next ``Conv`` meets a float32
input and a float16 weight (``Binary operators must have the same datatype``). float32 data, and training mode, keep
TVM's converter (the CPU pipeline schedules its batch_norm as it is)."""
from __future__ import annotations

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import BatchNormalization as TvmBatchNormalization
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter


class BatchNormalization(OnnxOpConverter):
    """``y = (x - mean) / sqrt(var + epsilon) * scale + bias`` per channel (axis 1)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        data, scale, bias, mean, var = (bb.normalize(x) for x in inputs[:5])
        dtype = str(data.ty.dtype)
        if dtype == "float32" or attr.get("training_mode", 0) or attr["tvm_custom"]["num_outputs"] > 1:
            return TvmBatchNormalization.get_converter(15)(bb, inputs, attr, params)
        shape = [1, -1] + [1] * (data.ty.ndim - 2)

        def channel(value):
            return bb.normalize(relax.op.reshape(bb.normalize(relax.op.astype(value, dtype)), shape))

        epsilon = relax.const(attr.get("epsilon", 1e-5), dtype)
        normalized = relax.op.divide(relax.op.subtract(data, channel(mean)), relax.op.sqrt(relax.op.add(channel(var), epsilon)))
        return relax.op.add(relax.op.multiply(normalized, channel(scale)), channel(bias))
