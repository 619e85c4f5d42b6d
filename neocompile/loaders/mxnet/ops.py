"""MXNet operators -> Relax: one converter per operator of the symbol JSON, with MXNet's defaults and conventions.

A converter is ``f(cx, node, inputs)``: ``inputs`` are Relax expressions (parameters are constants, see
``Context.numpy``), the result is one expression or a list (multi-output operators: SliceChannel, BatchNorm).
Attribute values that change the arithmetic and are not implemented raise ``AttributeNotSupported``; a shape that
cannot be right for the operator (the input given in the wrong layout) raises ``InputConfigurationError`` naming the
layout rule. Semantics follow MXNet 1.9 (src/operator/...), e.g. BatchNorm's default ``fix_gamma=True`` reads gamma
as 1, Pooling's ``full`` convention rounds the output size up and averages over the window clipped at ``H + pad``.
"""
from __future__ import annotations

import ast
import math
import re
from typing import Any, Callable, Sequence

import numpy as np

from ...errors import InputConfigurationError


class AttributeNotSupported(ValueError):
    """An attribute value of an MXNet operator that the converter does not implement."""


class Context:
    """What converters share: the BlockBuilder, the node's name for messages, and layout hints for errors."""

    def __init__(self, bb: Any, layout_hint: str):
        self.bb = bb
        self.layout_hint = layout_hint

    def emit(self, expr: Any) -> Any:
        return self.bb.emit(expr)

    @staticmethod
    def shape(expr: Any) -> list[int]:
        return [int(d) for d in expr.ty.shape.values]

    @staticmethod
    def dtype(expr: Any) -> str:
        return str(expr.ty.dtype)

    @staticmethod
    def numpy(expr: Any) -> np.ndarray | None:
        """The value of a constant (a parameter of the checkpoint), else None."""
        from tvm.ir.expr import Constant

        return expr.value.numpy() if isinstance(expr, Constant) else None

    def const(self, value: Any, dtype: str = "float32") -> Any:
        from tvm import relax

        return relax.const(np.asarray(value, dtype=dtype))

    def layout_error(self, node: "Node", message: str) -> InputConfigurationError:
        return InputConfigurationError(f"{node.op} '{node.name}': {message}. {self.layout_hint}")


class Node:
    """One node of the symbol JSON."""

    def __init__(self, op: str, name: str, attrs: dict[str, str], inputs: list[tuple[int, int]]):
        self.op, self.name, self.attrs, self.inputs = op, name, attrs, inputs

    # -- attribute parsing (values are strings as MXNet prints them: "(3, 3)", "True", "1e-05", "None")
    def raw(self, key: str) -> str | None:
        value = self.attrs.get(key)
        return None if value is None or value.strip() in ("None", "") else value.strip()

    def tuple(self, key: str, default: Sequence[int] | None = None) -> tuple[int, ...] | None:
        value = self.raw(key)
        if value is None:
            return None if default is None else tuple(default)
        ints = re.findall(r"-?\d+", value)  # "(3, 3)", "[3,3]", "(3L, 3L)", "3"
        return tuple(int(i) for i in ints)

    def int(self, key: str, default: int | None = None) -> int | None:
        value = self.raw(key)
        return default if value is None else int(float(value.rstrip("L")))

    def float(self, key: str, default: float | None = None) -> float | None:
        value = self.raw(key)
        return default if value is None else float(value)

    def bool(self, key: str, default: bool = False) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        return value.lower() in ("true", "1")

    def str(self, key: str, default: str | None = None) -> str | None:
        value = self.raw(key)
        if value is None:
            return default
        if value[:1] in "'\"":
            value = ast.literal_eval(value)
        return value

    def unsupported(self, key: str, value: Any, supported: str) -> AttributeNotSupported:
        return AttributeNotSupported(f"attribute {key}={value!r} is not supported; supported: {supported}")


Converter = Callable[[Context, Node, list], Any]
CONVERTERS: dict[str, Converter] = {}


def converter(*names: str) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        for name in names:
            CONVERTERS[name] = fn
        return fn
    return register


def _op():
    from tvm import relax

    return relax.op


def _channel_view(value: Any, rank: int, axis: int) -> Any:
    """A per-channel vector reshaped to broadcast along ``axis`` of a rank-``rank`` tensor."""
    shape = [1] * rank
    shape[axis] = -1
    return _op().reshape(value, shape)


def _bias(cx: Context, out: Any, bias: Any) -> Any:
    rank = len(cx.shape(out))
    return _op().add(out, _channel_view(bias, rank, 1))


# -- convolutions --------------------------------------------------------------------------------------------------
def _spatial(node: Node, key: str, nd: int, default: int) -> tuple[int, ...]:
    value = node.tuple(key) or ()
    if not value:
        return (default,) * nd
    if len(value) != nd:
        raise node.unsupported(key, node.raw(key), f"{nd} values, one per spatial dimension of kernel")
    return value


def _check_layout(node: Node, supported: tuple[str, ...]) -> None:
    layout = node.str("layout")
    if layout is not None and layout not in supported:
        raise node.unsupported("layout", layout, " or ".join(supported))


@converter("Convolution")
def convolution(cx: Context, node: Node, ins: list) -> Any:
    op = _op()
    kernel = node.tuple("kernel")
    nd = len(kernel or ())
    if nd not in (1, 2, 3):
        raise node.unsupported("kernel", node.raw("kernel"), "1-D, 2-D or 3-D kernels")
    _check_layout(node, ("NCW", "NCHW", "NCDHW"))
    stride, dilate, pad = (_spatial(node, k, nd, d) for k, d in (("stride", 1), ("dilate", 1), ("pad", 0)))
    groups = node.int("num_group", 1)
    data, weight = ins[0], ins[1]
    dshape, wshape = cx.shape(data), cx.shape(weight)
    if len(dshape) != nd + 2:
        raise cx.layout_error(node, f"a {nd}-D convolution takes a rank-{nd + 2} input (N, C, spatial...), got "
                                    f"shape {dshape}")
    if dshape[1] != wshape[1] * groups:
        raise cx.layout_error(node, f"its weight {wshape} (num_group {groups}) expects {wshape[1] * groups} input "
                                    f"channels in dimension 1, got input shape {dshape}")
    fn = {1: op.nn.conv1d, 2: op.nn.conv2d, 3: op.nn.conv3d}[nd]
    out = cx.emit(fn(data, weight, strides=stride, padding=pad, dilation=dilate, groups=groups))
    if not node.bool("no_bias", False) and len(ins) > 2:
        out = _bias(cx, out, ins[2])
    return out


@converter("Deconvolution")
def deconvolution(cx: Context, node: Node, ins: list) -> Any:
    op = _op()
    kernel = node.tuple("kernel")
    nd = len(kernel or ())
    if nd not in (1, 2):
        raise node.unsupported("kernel", node.raw("kernel"), "1-D or 2-D kernels")
    _check_layout(node, ("NCW", "NCHW"))
    stride, dilate, pad, adj = (_spatial(node, k, nd, d)
                                for k, d in (("stride", 1), ("dilate", 1), ("pad", 0), ("adj", 0)))
    groups = node.int("num_group", 1)
    data, weight = ins[0], ins[1]
    dshape, wshape = cx.shape(data), cx.shape(weight)
    if len(dshape) != nd + 2 or dshape[1] != wshape[0]:
        raise cx.layout_error(node, f"its weight {wshape} expects {wshape[0]} input channels in dimension 1 of a "
                                    f"rank-{nd + 2} input, got shape {dshape}")
    target = node.tuple("target_shape") or ()
    if target and any(target):
        # MXNet's DeconvolutionParam::InferPad: the padding (and adj) that give exactly target_shape.
        pads, adjs = [], []
        for i in range(nd):
            total = stride[i] * (dshape[2 + i] - 1) + dilate[i] * (kernel[i] - 1) + 1 - target[i]
            if total < 0:
                raise node.unsupported("target_shape", node.raw("target_shape"), "a shape the kernel can reach")
            adjs.append(total % 2)
            pads.append((total + 1) // 2)
        pad, adj = tuple(pads), tuple(adjs)
    fn = {1: op.nn.conv1d_transpose, 2: op.nn.conv2d_transpose}[nd]
    out = cx.emit(fn(data, weight, strides=stride, padding=pad, output_padding=adj, dilation=dilate, groups=groups))
    if not node.bool("no_bias", True) and len(ins) > 2:
        out = _bias(cx, out, ins[2])
    return out


@converter("FullyConnected")
def fully_connected(cx: Context, node: Node, ins: list) -> Any:
    op = _op()
    data, weight = ins[0], ins[1]
    shape, wshape = cx.shape(data), cx.shape(weight)
    if node.bool("flatten", True) and len(shape) != 2:
        data = cx.emit(op.reshape(data, (shape[0], int(np.prod(shape[1:], dtype=np.int64)))))
    features = cx.shape(data)[-1]
    if features != wshape[1]:
        raise cx.layout_error(node, f"its weight {wshape} expects {wshape[1]} input features, got input shape {shape}")
    bias = None if node.bool("no_bias", False) or len(ins) < 3 else ins[2]
    return op.linear(data, weight, bias)


# -- normalization and activations ---------------------------------------------------------------------------------
@converter("BatchNorm", "BatchNorm_v1")
def batch_norm(cx: Context, node: Node, ins: list) -> Any:
    op = _op()
    data, gamma, beta, mean, var = ins[:5]
    rank = len(cx.shape(data))
    axis = node.int("axis", 1) % rank
    eps = node.float("eps", 1e-3)
    fix_gamma = node.bool("fix_gamma", True)  # MXNet's default: gamma is ignored (read as 1)
    values = [cx.numpy(v) for v in (gamma, beta, mean, var)]
    if all(v is not None for v in values):  # checkpoint parameters: fold into one multiply-add
        g, b, m, v = (np.asarray(a, np.float64) for a in values)
        if fix_gamma:
            g = np.ones_like(g)
        scale = g / np.sqrt(v + eps)
        shift = b - m * scale
        dtype = cx.dtype(data)
        scale_c, shift_c = cx.const(scale, dtype), cx.const(shift, dtype)
    else:
        g = cx.const(np.ones(cx.shape(gamma)), cx.dtype(data)) if fix_gamma else gamma
        scale_c = cx.emit(op.multiply(g, op.rsqrt(op.add(var, cx.const(eps, cx.dtype(var))))))
        shift_c = cx.emit(op.subtract(beta, op.multiply(mean, scale_c)))
    out = cx.emit(op.add(op.multiply(data, _channel_view(scale_c, rank, axis)),
                         _channel_view(shift_c, rank, axis)))
    return [out, mean, var]


def _activation(cx: Context, x: Any, kind: str, node: Node) -> Any:
    op = _op()
    if kind == "relu":
        return op.nn.relu(x)
    if kind == "sigmoid":
        return op.sigmoid(x)
    if kind == "tanh":
        return op.tanh(x)
    if kind == "softrelu":  # mshadow: x > 20 ? x : log1p(exp(x))
        return op.nn.softplus(x, 1.0, 20.0)
    if kind == "softsign":
        return op.divide(x, op.add(op.abs(x), cx.const(1.0, cx.dtype(x))))
    if kind == "log_sigmoid":
        return op.negative(op.nn.softplus(op.negative(x), 1.0, 20.0))
    if kind == "mish":
        return op.multiply(x, op.tanh(op.nn.softplus(x, 1.0, 20.0)))
    raise node.unsupported("act_type", kind, "relu, sigmoid, tanh, softrelu, softsign, log_sigmoid, mish")


@converter("Activation")
def activation(cx: Context, node: Node, ins: list) -> Any:
    return _activation(cx, ins[0], node.str("act_type", "relu"), node)


@converter("relu", "sigmoid", "tanh", "softsign", "log_sigmoid", "mish")
def unary_activation(cx: Context, node: Node, ins: list) -> Any:
    return _activation(cx, ins[0], node.op, node)


@converter("LeakyReLU")
def leaky_relu(cx: Context, node: Node, ins: list) -> Any:
    op = _op()
    x = ins[0]
    dt = cx.dtype(x)
    kind = node.str("act_type", "leaky")
    slope = node.float("slope", 0.25)
    if kind == "leaky":
        return op.nn.leakyrelu(x, slope)
    if kind == "rrelu":  # inference: the mean of the random slope's range
        return op.nn.leakyrelu(x, (node.float("lower_bound", 0.125) + node.float("upper_bound", 0.334)) / 2)
    if kind == "prelu":
        rank = len(cx.shape(x))
        gamma = ins[1]
        alpha = gamma if int(np.prod(cx.shape(gamma))) == 1 else _channel_view(gamma, rank, 1)
        return op.where(op.greater(x, cx.const(0.0, dt)), x, op.multiply(x, alpha))
    if kind in ("elu", "selu"):
        alpha, lam = (slope, 1.0) if kind == "elu" else (1.6732632423543772848170429916717, 1.0507009873554804934193349852946)
        neg = op.multiply(cx.const(alpha, dt), op.subtract(op.exp(x), cx.const(1.0, dt)))
        out = op.where(op.greater(x, cx.const(0.0, dt)), x, neg)
        return out if kind == "elu" else op.multiply(out, cx.const(lam, dt))
    if kind == "gelu":
        return op.nn.gelu(x)
    raise node.unsupported("act_type", kind, "leaky, prelu, rrelu, elu, selu, gelu")


# -- pooling -------------------------------------------------------------------------------------------------------
@converter("Pooling", "Pooling_v1")
def pooling(cx: Context, node: Node, ins: list) -> Any:
    op = _op()
    x = ins[0]
    shape = cx.shape(x)
    _check_layout(node, ("NCHW", "NCW", "NCDHW"))
    kind = node.str("pool_type", "max")
    if kind not in ("max", "avg", "sum"):
        raise node.unsupported("pool_type", kind, "max, avg, sum")
    if node.bool("global_pool", False):
        axes = list(range(2, len(shape)))
        reduce = {"max": op.max, "avg": op.mean, "sum": op.sum}[kind]
        return reduce(x, axis=axes, keepdims=True)
    if len(shape) != 4:
        raise cx.layout_error(node, f"2-D pooling takes a rank-4 input (N, C, H, W), got shape {shape}")
    kernel = _spatial(node, "kernel", 2, 1)
    stride = _spatial(node, "stride", 2, 1)
    pad = _spatial(node, "pad", 2, 0)
    convention = node.str("pooling_convention", "valid")
    if convention not in ("valid", "full"):
        raise node.unsupported("pooling_convention", convention, "valid, full")
    sizes, extra = [], []
    for i in range(2):
        span = shape[2 + i] + 2 * pad[i] - kernel[i]
        if span < 0:
            raise cx.layout_error(node, f"kernel {list(kernel)} is larger than the padded input {shape}")
        out = (span + stride[i] - 1) // stride[i] + 1 if convention == "full" else span // stride[i] + 1
        sizes.append(out)
        extra.append(max(0, (out - 1) * stride[i] + kernel[i] - (shape[2 + i] + 2 * pad[i])))
    padding = (pad[0], pad[1], pad[0] + extra[0], pad[1] + extra[1])
    if kind == "max":
        return op.nn.max_pool2d(x, kernel, stride, padding)
    # avg/sum: TVM's count_include_pad average divides by the full window; MXNet divides by the window clipped at
    # the padded edge (H + pad), or at the input (count_include_pad=False): rescale where the two differ.
    out = cx.emit(op.nn.avg_pool2d(x, kernel, stride, padding, count_include_pad=True))
    include_pad = node.bool("count_include_pad", True)
    full = kernel[0] * kernel[1]
    counts = np.ones(sizes, np.float64)
    for axis in range(2):
        n, k, s, p = shape[2 + axis], kernel[axis], stride[axis], pad[axis]
        start = np.arange(sizes[axis]) * s - p
        end = np.minimum(start + k, n + p)
        size = end - start
        if not include_pad:
            size = np.minimum(end, n) - np.maximum(start, 0)
        counts = counts * (size[:, None] if axis == 0 else size[None, :])
    factor = np.full(sizes, float(full)) if kind == "sum" else full / np.maximum(counts, 1)
    if np.all(factor == 1.0):
        return out
    return op.multiply(out, cx.const(factor, cx.dtype(x)))


# -- shape operators -----------------------------------------------------------------------------------------------
@converter("Flatten", "flatten")
def flatten(cx: Context, node: Node, ins: list) -> Any:
    shape = cx.shape(ins[0])
    return _op().reshape(ins[0], (shape[0], int(np.prod(shape[1:], dtype=np.int64))))


def reshape_shape(dshape: Sequence[int], spec: Sequence[int], reverse: bool = False) -> list[int]:
    """MXNet's Reshape shape inference: 0 copy, -1 infer, -2 copy the rest, -3 merge two, -4 split one in two."""
    dshape, spec = list(dshape), list(spec)
    if reverse:
        dshape, spec = dshape[::-1], spec[::-1]
    out: list[int] = []
    src, infer, i = 0, -1, 0
    while i < len(spec):
        code = spec[i]
        if code == 0:
            out.append(dshape[src])
            src += 1
        elif code == -1:
            if infer >= 0:
                raise ValueError(f"shape {spec}: more than one -1")
            infer = len(out)
            out.append(1)
            src += 1
        elif code == -2:
            out.extend(dshape[src:])
            src = len(dshape)
        elif code == -3:
            out.append(dshape[src] * dshape[src + 1])
            src += 2
        elif code == -4:
            d0, d1, d2 = dshape[src], spec[i + 1], spec[i + 2]
            if d1 == -1:
                d1 = d0 // d2
            if d2 == -1:
                d2 = d0 // d1
            if d1 * d2 != d0:
                raise ValueError(f"shape {spec}: -4 cannot split {d0} into {d1} x {d2}")
            out.extend([d1, d2])
            src += 1
            i += 2
        elif code > 0:
            out.append(code)
            src += 1
        else:
            raise ValueError(f"shape {spec}: code {code} is not valid")
        i += 1
    total = int(np.prod(dshape, dtype=np.int64))
    if infer >= 0:
        known = int(np.prod(out, dtype=np.int64))
        out[infer] = total // known if known else 0
    if int(np.prod(out, dtype=np.int64)) != total:
        raise ValueError(f"cannot reshape {dshape if not reverse else dshape[::-1]} to {out[::-1] if reverse else out}")
    return out[::-1] if reverse else out


@converter("Reshape", "reshape")
def reshape(cx: Context, node: Node, ins: list) -> Any:
    dshape = cx.shape(ins[0])
    spec = node.tuple("shape") or ()
    if not spec:  # the deprecated form: target_shape, 0 = inferred, keep_highest keeps dimension 0
        target = list(node.tuple("target_shape") or ())
        if not target:
            raise node.unsupported("shape", node.raw("shape"), "a target shape")
        spec = ([0] if node.bool("keep_highest") else []) + [-1 if d == 0 else d for d in target]
    try:
        shape = reshape_shape(dshape, spec, node.bool("reverse"))
    except (ValueError, IndexError) as exc:
        raise cx.layout_error(node, f"cannot reshape input of shape {dshape} with shape={list(spec)}: {exc}") from None
    return _op().reshape(ins[0], shape)


@converter("Concat", "concat")
def concat(cx: Context, node: Node, ins: list) -> Any:
    return _op().concat(ins, axis=node.int("dim", 1))


@converter("SliceChannel", "split")
def slice_channel(cx: Context, node: Node, ins: list) -> Any:
    from tvm import relax

    op = _op()
    n = node.int("num_outputs")
    axis = node.int("axis", 1)
    parts = cx.emit(op.split(ins[0], n, axis=axis))
    outs = [cx.emit(relax.TupleGetItem(parts, i)) for i in range(n)]
    if node.bool("squeeze_axis"):
        outs = [cx.emit(op.squeeze(o, [axis])) for o in outs]
    return outs


@converter("transpose")
def transpose(cx: Context, node: Node, ins: list) -> Any:
    axes = node.tuple("axes") or None
    return _op().permute_dims(ins[0], list(axes) if axes else None)


@converter("expand_dims")
def expand_dims(cx: Context, node: Node, ins: list) -> Any:
    return _op().expand_dims(ins[0], node.int("axis"))


@converter("squeeze")
def squeeze(cx: Context, node: Node, ins: list) -> Any:
    axis = node.tuple("axis")
    return _op().squeeze(ins[0], list(axis) if axis else None)


@converter("SwapAxis", "swapaxes")
def swap_axis(cx: Context, node: Node, ins: list) -> Any:
    rank = len(cx.shape(ins[0]))
    axes = list(range(rank))
    a, b = node.int("dim1", 0) % rank, node.int("dim2", 0) % rank
    axes[a], axes[b] = axes[b], axes[a]
    return _op().permute_dims(ins[0], axes)


@converter("slice_axis")
def slice_axis(cx: Context, node: Node, ins: list) -> Any:
    shape = cx.shape(ins[0])
    axis = node.int("axis") % len(shape)
    begin, end = node.int("begin", 0), node.int("end", None)
    begin, end = slice(begin, end).indices(shape[axis])[:2]
    return _op().strided_slice(ins[0], [axis], [begin], [end])


@converter("slice", "crop")
def slice_(cx: Context, node: Node, ins: list) -> Any:
    shape = cx.shape(ins[0])
    parse = lambda key: [None if v.strip() == "None" else int(v) for v in  # noqa: E731
                         re.findall(r"None|-?\d+", node.attrs.get(key, "()"))]
    begin, end, step = parse("begin"), parse("end"), parse("step")
    axes, b, e, s = [], [], [], []
    for i in range(len(begin)):
        st = step[i] if i < len(step) and step[i] is not None else 1
        lo, hi, _ = slice(begin[i], end[i] if i < len(end) else None, st).indices(shape[i])
        axes.append(i), b.append(lo), e.append(hi), s.append(st)
    return _op().strided_slice(ins[0], axes, b, e, s)


@converter("Pad", "pad")
def pad(cx: Context, node: Node, ins: list) -> Any:
    mode = node.str("mode", "constant")
    modes = {"constant": "constant", "edge": "replicate", "reflect": "reflect"}
    if mode not in modes:
        raise node.unsupported("mode", mode, "constant, edge, reflect")
    width = list(node.tuple("pad_width"))
    return _op().nn.pad(ins[0], width, modes[mode], node.float("constant_value", 0.0))


@converter("UpSampling")
def upsampling(cx: Context, node: Node, ins: list) -> Any:
    op = _op()
    scale = node.int("scale")
    kind = node.str("sample_type", "nearest")
    if kind == "bilinear":  # a grouped Deconvolution with the (learned or bilinear-initialized) weight input
        channels = cx.shape(ins[0])[1]  # the weight is (C, 1, 2 * scale - scale % 2, same)
        pad_ = math.ceil((scale - 1) / 2.0)
        return op.nn.conv2d_transpose(ins[0], ins[1], strides=(scale, scale), padding=(pad_, pad_),
                                      groups=node.int("num_filter", channels))
    if kind != "nearest":
        raise node.unsupported("sample_type", kind, "nearest, bilinear")
    count = node.int("num_args", 1)
    size = cx.shape(ins[0])[2] * scale
    outs = []
    for x in ins[:count]:
        factor = size // cx.shape(x)[2]
        outs.append(cx.emit(op.repeat(op.repeat(x, factor, axis=2), factor, axis=3)) if factor > 1 else x)
    if len(outs) == 1:
        return outs[0]
    if node.str("multi_input_mode", "concat") == "sum":
        total = outs[0]
        for o in outs[1:]:
            total = cx.emit(op.add(total, o))
        return total
    return op.concat(outs, axis=1)


# -- arithmetic ----------------------------------------------------------------------------------------------------
_BINARY = {
    "add": ("elemwise_add", "_plus", "_Plus", "_add", "broadcast_add", "broadcast_plus"),
    "subtract": ("elemwise_sub", "_minus", "_Minus", "_sub", "broadcast_sub", "broadcast_minus"),
    "multiply": ("elemwise_mul", "_mul", "_Mul", "broadcast_mul"),
    "divide": ("elemwise_div", "_div", "_Div", "broadcast_div"),
    "power": ("_power", "_Power", "broadcast_power"),
    "maximum": ("_maximum", "_Maximum", "broadcast_maximum"),
    "minimum": ("_minimum", "_Minimum", "broadcast_minimum"),
}
_COMPARE = {
    "equal": ("_equal", "broadcast_equal"), "not_equal": ("_not_equal", "broadcast_not_equal"),
    "greater": ("_greater", "broadcast_greater"), "greater_equal": ("_greater_equal", "broadcast_greater_equal"),
    "less": ("_lesser", "broadcast_lesser"), "less_equal": ("_lesser_equal", "broadcast_lesser_equal"),
}


def _register_binary() -> None:
    for relax_name, names in _BINARY.items():
        def conv(cx, node, ins, _name=relax_name):
            return getattr(_op(), _name)(ins[0], ins[1])
        converter(*names)(conv)
    for relax_name, names in _COMPARE.items():
        def comp(cx, node, ins, _name=relax_name):
            return _op().astype(getattr(_op(), _name)(ins[0], ins[1]), cx.dtype(ins[0]))
        converter(*names)(comp)


_register_binary()

_SCALAR = {
    "_plus_scalar": ("add", False), "_PlusScalar": ("add", False),
    "_minus_scalar": ("subtract", False), "_MinusScalar": ("subtract", False),
    "_rminus_scalar": ("subtract", True), "_RMinusScalar": ("subtract", True),
    "_mul_scalar": ("multiply", False), "_MulScalar": ("multiply", False),
    "_div_scalar": ("divide", False), "_DivScalar": ("divide", False),
    "_rdiv_scalar": ("divide", True), "_RDivScalar": ("divide", True),
    "_power_scalar": ("power", False), "_PowerScalar": ("power", False),
    "_rpower_scalar": ("power", True), "_RPowerScalar": ("power", True),
    "_maximum_scalar": ("maximum", False), "_MaximumScalar": ("maximum", False),
    "_minimum_scalar": ("minimum", False), "_MinimumScalar": ("minimum", False),
    "_equal_scalar": ("equal", False), "_not_equal_scalar": ("not_equal", False),
    "_greater_scalar": ("greater", False), "_greater_equal_scalar": ("greater_equal", False),
    "_lesser_scalar": ("less", False), "_lesser_equal_scalar": ("less_equal", False),
}


@converter(*_SCALAR)
def scalar_op(cx: Context, node: Node, ins: list) -> Any:
    name, reverse = _SCALAR[node.op]
    x = ins[0]
    s = cx.const(node.float("scalar", 0.0), cx.dtype(x))
    out = getattr(_op(), name)(s, x) if reverse else getattr(_op(), name)(x, s)
    return _op().astype(out, cx.dtype(x)) if name in _COMPARE else out


@converter("add_n", "ElementWiseSum", "_sum")
def add_n(cx: Context, node: Node, ins: list) -> Any:
    total = ins[0]
    for x in ins[1:]:
        total = cx.emit(_op().add(total, x))
    return total


_UNARY = {
    "exp": "exp", "log": "log", "sqrt": "sqrt", "rsqrt": "rsqrt", "square": "square", "abs": "abs",
    "negative": "negative", "floor": "floor", "ceil": "ceil", "sin": "sin", "cos": "cos", "erf": "erf",
    "sign": "sign", "round": "round",
}


@converter(*_UNARY)
def unary(cx: Context, node: Node, ins: list) -> Any:
    return getattr(_op(), _UNARY[node.op])(ins[0])


@converter("reciprocal")
def reciprocal(cx: Context, node: Node, ins: list) -> Any:
    return _op().divide(cx.const(1.0, cx.dtype(ins[0])), ins[0])


@converter("clip")
def clip(cx: Context, node: Node, ins: list) -> Any:
    op, dt = _op(), cx.dtype(ins[0])
    return op.minimum(op.maximum(ins[0], cx.const(node.float("a_min"), dt)), cx.const(node.float("a_max"), dt))


@converter("identity", "_copy", "BlockGrad", "stop_gradient", "Dropout", "MakeLoss", "LinearRegressionOutput",
           "MAERegressionOutput")
def identity(cx: Context, node: Node, ins: list) -> Any:
    return ins[0]


@converter("LogisticRegressionOutput")
def logistic_output(cx: Context, node: Node, ins: list) -> Any:
    return _op().sigmoid(ins[0])


@converter("Cast", "cast")
def cast(cx: Context, node: Node, ins: list) -> Any:
    return _op().astype(ins[0], node.str("dtype", "float32"))


def _reduce_axes(cx: Context, node: Node, x: Any) -> list[int] | None:
    rank = len(cx.shape(x))
    axis = node.tuple("axis")
    if not axis:
        return None
    axes = sorted(a % rank for a in axis)
    return [a for a in range(rank) if a not in axes] if node.bool("exclude") else axes


@converter("sum", "mean", "max", "min", "prod")
def reduce(cx: Context, node: Node, ins: list) -> Any:
    fn = getattr(_op(), node.op)
    return fn(ins[0], axis=_reduce_axes(cx, node, ins[0]), keepdims=node.bool("keepdims"))


# -- softmax family ------------------------------------------------------------------------------------------------
@converter("softmax", "log_softmax")
def softmax(cx: Context, node: Node, ins: list) -> Any:
    op = _op()
    if node.bool("use_length"):
        raise node.unsupported("use_length", True, "false")
    x = ins[0]
    temperature = node.float("temperature")
    if temperature not in (None, 1.0):
        x = op.divide(x, cx.const(temperature, cx.dtype(x)))
    fn = op.nn.softmax if node.op == "softmax" else op.nn.log_softmax
    return fn(x, axis=node.int("axis", -1))


@converter("SoftmaxOutput", "Softmax")
def softmax_output(cx: Context, node: Node, ins: list) -> Any:
    op = _op()
    x = ins[0]
    shape = cx.shape(x)
    if node.bool("multi_output"):
        return op.nn.softmax(x, axis=1)
    if node.bool("preserve_shape"):
        return op.nn.softmax(x, axis=-1)
    flat = cx.emit(op.reshape(x, (shape[0], int(np.prod(shape[1:], dtype=np.int64)))))
    return op.reshape(op.nn.softmax(flat, axis=1), shape)


@converter("SoftmaxActivation")
def softmax_activation(cx: Context, node: Node, ins: list) -> Any:
    op = _op()
    x = ins[0]
    if node.str("mode", "instance") == "channel":
        return op.nn.softmax(x, axis=1)
    shape = cx.shape(x)
    flat = cx.emit(op.reshape(x, (shape[0], int(np.prod(shape[1:], dtype=np.int64)))))
    return op.reshape(op.nn.softmax(flat, axis=1), shape)


#: Operators whose inputs after the first are training labels: never model inputs at inference.
LOSS_OPS = {"SoftmaxOutput", "Softmax", "LinearRegressionOutput", "LogisticRegressionOutput", "MAERegressionOutput"}
