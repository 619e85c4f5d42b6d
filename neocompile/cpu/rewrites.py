"""Graph rewrites before legalization that give the kernel templates a better-shaped operator."""
from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator


def _ints(values) -> list[int] | None:
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError):
        return None


def _is_conv2d(expr: relax.Expr) -> bool:
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.nn.conv2d"


def _constant_conv(call: relax.Expr) -> tuple[Any, Any, str] | None:
    """A conv2d's attributes, its constant OIHW weights (the Relax constant) and its data layout, NCHW or NHWC (the
    output's too); None for any other call."""
    if not _is_conv2d(call):
        return None
    attrs, weight = call.attrs, call.args[1]
    layout = str(attrs.data_layout)
    if (type(weight).__name__ not in ("Constant", "GenericConst") or str(attrs.kernel_layout) != "OIHW"
            or layout not in ("NCHW", "NHWC") or str(attrs.out_layout) != layout):
        return None
    return attrs, weight, layout


@mutator
class _StridedPointwise(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not _is_conv2d(call):
            return call
        attrs = call.attrs
        strides, padding, dilation = _ints(attrs.strides), _ints(attrs.padding), _ints(attrs.dilation)
        weight = call.args[1].ty
        kernel = _ints(weight.shape.values) if isinstance(weight, relax.TensorType) and weight.shape is not None else None
        data = call.args[0].ty
        # H and W must be known; the batch may be symbolic
        dims = _ints(list(data.shape.values)[2:]) if isinstance(data, relax.TensorType) and data.shape is not None \
            and len(data.shape.values) == 4 else None
        if (None in (strides, padding, dilation, kernel, dims) or str(attrs.data_layout) != "NCHW"
                or str(attrs.kernel_layout) != "OIHW" or kernel[2:] != [1, 1] or max(strides) < 2 or any(padding)
                or any(d != 1 for d in dilation)):
            return call
        sliced = self.builder_.emit(relax.op.strided_slice(call.args[0], axes=[2, 3], begin=[0, 0], end=dims,
                                                           strides=strides))
        return relax.op.nn.conv2d(sliced, call.args[1], strides=[1, 1], padding=[0, 0, 0, 0], dilation=[1, 1],
                                  groups=int(attrs.groups), data_layout="NCHW", kernel_layout="OIHW",
                                  out_layout=str(attrs.out_layout), out_dtype=attrs.out_dtype)


def strided_pointwise_conv(mod: tvm.IRModule) -> tvm.IRModule:
    """A 1x1 conv with a stride (ResNet's downsampling shortcut) reads one pixel in ``s*s`` of its input, each from
    another cache line: run it as a stride-1 1x1 conv of the subsampled input. The slice is a kernel of its own (a
    copy of a quarter of the input), and the conv is then packed row-wise like any stride-1 1x1 conv (ResNet-50's 512->1024 stride-2
    conv at 28x28: 11.5 -> 3.2 ms at 1 thread, onnxruntime 3.1 ms)."""
    return rewrite_functions(_StridedPointwise, mod)


def pad_conv_channels(mod: tvm.IRModule, lanes: int) -> tvm.IRModule:
    """A conv whose output channels are not a whole number of vectors (ShuffleNetV2's 58, 116 and 232 on AVX2) runs
    with its constant weights padded with zero filters to the next multiple of ``lanes``, and the extra channels
    sliced off its output: the templates then tile and pack it like any other (a 58->58 1x1 conv at 28x28 ran
    unpacked, one scalar column at a time: 0.99 ms, onnxruntime 0.08 ms). The slice is fused into the conv's
    kernel as part of its epilogue."""

    @mutator
    class _PadChannels(PyExprMutator):
        def visit_call_(self, call: relax.Call) -> relax.Expr:
            call = super().visit_call_(call)
            conv = _constant_conv(call)
            if conv is None or int(conv[0].groups) != 1 or str(conv[1].ty.dtype) != "float32":
                return call
            attrs, weight, layout = conv
            value = weight.value.numpy()
            out = value.shape[0]
            if out < lanes or out % lanes == 0:
                return call
            padded = np.concatenate([value, np.zeros((-out % lanes, *value.shape[1:]), value.dtype)])
            conv = self.builder_.emit(relax.op.nn.conv2d(
                call.args[0], relax.const(padded), strides=attrs.strides, padding=attrs.padding, dilation=attrs.dilation,
                groups=1, data_layout=layout, kernel_layout="OIHW", out_layout=layout, out_dtype=attrs.out_dtype))
            return relax.op.strided_slice(conv, axes=[layout.index("C")], begin=[0], end=[out])

    return rewrite_functions(_PadChannels, mod)


def _live_taps(size: int, out: int, kernel: int, stride: int, dilation: int, before: int) -> tuple[int, int]:
    """The first and last tap of a window along one axis that reads inside the input for some output position."""
    live = [k for k in range(kernel)
            if any(0 <= o * stride + k * dilation - before < size for o in range(out))]
    return (live[0], live[-1]) if live else (0, kernel - 1)


@mutator
class _DeadTaps(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        conv = _constant_conv(call)
        if conv is None:
            return call
        attrs, weight, layout = conv
        strides, padding, dilation = _ints(attrs.strides), _ints(attrs.padding), _ints(attrs.dilation)
        data = call.args[0].ty
        shape = _ints(data.shape.values) if isinstance(data, relax.TensorType) and data.shape is not None else None
        if None in (strides, padding, dilation, shape) or len(shape) != 4 or max(dilation) < 2:
            return call
        value = weight.value.numpy()
        sizes = [shape[layout.index("H")], shape[layout.index("W")]]
        top, left, bottom, right = padding
        outs = [(sizes[0] + top + bottom - dilation[0] * (value.shape[2] - 1) - 1) // strides[0] + 1,
                (sizes[1] + left + right - dilation[1] * (value.shape[3] - 1) - 1) // strides[1] + 1]
        (h0, h1), (w0, w1) = (_live_taps(sizes[i], outs[i], value.shape[2 + i], strides[i], dilation[i],
                                         (top, left)[i]) for i in range(2))
        if (h0, h1, w0, w1) == (0, value.shape[2] - 1, 0, value.shape[3] - 1):
            return call
        top, left = top - h0 * dilation[0], left - w0 * dilation[1]
        bottom = strides[0] * (outs[0] - 1) + dilation[0] * (h1 - h0) + 1 - sizes[0] - top
        right = strides[1] * (outs[1] - 1) + dilation[1] * (w1 - w0) + 1 - sizes[1] - left
        if min(top, left, bottom, right) < 0:
            return call  # the window would have to start inside the input: left as it is
        kept = np.ascontiguousarray(value[:, :, h0:h1 + 1, w0:w1 + 1])
        return relax.op.nn.conv2d(call.args[0], relax.const(kept), strides=strides, padding=[top, left, bottom, right],
                                  dilation=[d if k > 1 else 1 for d, k in zip(dilation, kept.shape[2:])],
                                  groups=int(attrs.groups), data_layout=layout, kernel_layout="OIHW",
                                  out_layout=layout, out_dtype=attrs.out_dtype)


def dead_taps(mod: tvm.IRModule) -> tvm.IRModule:
    """A dilated conv whose outer taps read only padding, for every output position (DeepLabV3's ASPP at rates 24 and
    36 over a 16x16 map: 8 of 9 taps), runs without them: its constant weights cut to the live taps and its padding
    reduced to match, which leaves its output exactly as it was (those taps only ever added zeros). ASPP's two
    960->256 3x3 convs became 1x1 convs: 16 ms each before."""
    return rewrite_functions(_DeadTaps, mod)


def rewrite_functions(mutator: type, mod: tvm.IRModule) -> tvm.IRModule:
    """Run a ``PyExprMutator`` class over every Relax function of ``mod``; the module it builds."""
    rewriter = mutator(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    return rewriter.builder_.get()
