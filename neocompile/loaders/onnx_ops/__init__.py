"""neocompile's own ONNX operator conversions, used before TVM's Relax ONNX frontend's.

TVM's frontend lacks some operators that exporters write: ``ConvInteger`` (``quantize_dynamic``), ``QLinearConv``
and ``QLinearMatMul`` (``quantize_static`` in QOperator format) with onnxruntime's ``com.microsoft`` ``QGemm``,
``QLinearAdd``, ``QLinearSoftmax``, ... beside them. It converts a few others wrongly for what exporters write:
``ConstantOfShape`` with a rank-0 shape (``torch.onnx.export(dynamo=False)`` of a BERT encoder), ``Constant`` with
``value_float(s)``/``value_int(s)``, ``BatchNormalization`` of float16 data.

Each module holds one operator or family as an ``OnnxOpConverter`` (TVM's converter interface: ``_impl_v<opset>``
class methods taking ``(bb, inputs, attr, params)``); ``converters()`` maps ONNX ``(domain, op_type)`` to the class,
and ``loaders/onnx.py`` consults it before TVM's own map.
"""
from __future__ import annotations

from typing import Any


def converters() -> dict[tuple[str, str], Any]:
    """``{(domain, op_type): converter class}``; domain ``""`` is the default ONNX domain (also ``ai.onnx``).

    Imported on call: the converters import TVM, which the loader imports only when it loads a model."""
    from .batch_norm import BatchNormalization
    from .constant import Constant, ConstantOfShape
    from .contrib_qlinear import (QGemm, QLinearAdd, QLinearAveragePool, QLinearConcat, QLinearGlobalAveragePool,
                                  QLinearLeakyRelu, QLinearMul, QLinearSigmoid, QLinearSoftmax)
    from .integer import ConvInteger
    from .qlinear import QLinearConv, QLinearMatMul

    return {
        ("", "BatchNormalization"): BatchNormalization,
        ("", "Constant"): Constant,
        ("", "ConstantOfShape"): ConstantOfShape,
        ("", "ConvInteger"): ConvInteger,
        ("", "QLinearConv"): QLinearConv,
        ("", "QLinearMatMul"): QLinearMatMul,
        **{("com.microsoft", cls.__name__): cls for cls in (
            QGemm, QLinearAdd, QLinearMul, QLinearGlobalAveragePool, QLinearAveragePool, QLinearSigmoid,
            QLinearLeakyRelu, QLinearSoftmax, QLinearConcat)},
    }
