"""neocompile's additions to TVM's Relax TFLite frontend, as a subclass of its ``OperatorConverter`` (the frontend's
``op_converter`` extension point; nested subgraphs are converted with ``type(self)``, so they get them too).

TVM 0.27 refuses every quantized operator outside its ``_SUPPORTED_QUANTIZED_OPS`` list, which leaves out the
operators that only move, pick or pad values: a full-integer Keras MobileNet (ZeroPadding2D -> PAD) or any model
slicing a quantized tensor (STRIDED_SLICE) fails to import. TFLite's kernels for these operators copy int8/uint8
values unchanged and its quantizer gives their inputs and outputs the same scale and zero point, so TVM's own
conversions, which are dtype-agnostic, are exact on the integer tensors; PAD/PADV2 already pad with the zero point.
Where a (TFLite 1.x uint8) model gives the output other parameters than the input, the output is requantized.
"""
from __future__ import annotations

import functools
from typing import Any

#: Quantized operators that only move, select or pad values (or return indices), converted by TVM's own code.
VALUE_PRESERVING = frozenset({
    "ARG_MAX", "ARG_MIN", "BATCH_TO_SPACE_ND", "BROADCAST_TO", "DEPTH_TO_SPACE", "EXPAND_DIMS", "GATHER",
    "GATHER_ND", "PACK", "PAD", "PADV2", "RESIZE_NEAREST_NEIGHBOR", "REVERSE_V2", "SLICE", "SPACE_TO_BATCH_ND",
    "SPACE_TO_DEPTH", "SPLIT", "SPLIT_V", "SQUEEZE", "STRIDED_SLICE", "TILE", "TRANSPOSE", "UNPACK",
})


def operator_converter() -> type:
    """TVM's ``OperatorConverter`` with the quantized value-preserving operators enabled."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.tflite.tflite_frontend import OperatorConverter

    class NeoOperatorConverter(OperatorConverter):
        _SUPPORTED_QUANTIZED_OPS = OperatorConverter._SUPPORTED_QUANTIZED_OPS | VALUE_PRESERVING

        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            for name in VALUE_PRESERVING & set(self.convert_map):
                self.convert_map[name] = functools.partial(self._value_preserving, name, self.convert_map[name])

        def _value_preserving(self, name: str, convert: Any, op: Any) -> Any:
            quantized = [t for t in self.get_input_tensors(op) if t.qnn_params is not None]
            if not quantized:
                return convert(op=op)
            first = quantized[0]
            if any(not self.has_same_qnn_params(first, t) for t in quantized[1:]):
                raise tvm.error.OpNotImplemented(
                    f"quantized {name} with inputs of different scales or zero points is not supported")
            result = convert(op=op)
            outputs = self.get_output_tensors(op)
            if all(o.qnn_params is None or self.has_same_qnn_params(first, o) for o in outputs):
                return result
            requantize = lambda expr, out: self.quantize(self.dequantize(expr, first), out)
            if len(outputs) == 1:
                return requantize(result, outputs[0])
            result = self.bb.normalize(result)
            return relax.Tuple([
                requantize(relax.TupleGetItem(result, i), o) if o.qnn_params is not None else relax.TupleGetItem(result, i)
                for i, o in enumerate(outputs)
            ])

    return NeoOperatorConverter
