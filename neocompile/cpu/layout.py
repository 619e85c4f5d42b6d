"""Channels-last activations through the whole graph, before anything is legalized.

The importers hand over NCHW convs (ONNX, PyTorch, MXNet). A CPU kernel wants the channels innermost: a conv's
reduction then walks consecutive floats of its input, a tile's output rows are whole vector stores, and a
depthwise conv vectorizes along its channels. Converting each conv on its own costs a transposed copy of its
input and a scattered write-out per conv; converting the graph once (Relax's ``ConvertLayout``) leaves one
transpose at the graph's input and one where a layout-bound op (a flatten, a reshape) needs NCHW again, while the
elementwise epilogues, pooling and concatenations in between follow the convs' layout (ResNet-50 at 1 thread:
1.5x -> 1.25x onnxruntime). The weights keep their layout (the templates pack them anyway).

A few elementwise ops have no layout rule in TVM 0.27 (``clip``, ``nn.leakyrelu``): ConvertLayout would wrap each
in a transpose back to NCHW and another forward, around every ReLU6 of MobileNetV2. They are first written as the
equivalent ``maximum``/``minimum``/``multiply``/``add`` with scalar constants, which have one.
"""
from __future__ import annotations

import logging
from typing import Callable

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .constfold import fold_constants_numpy
from .rewrites import rewrite_functions

log = logging.getLogger(__name__)

#: The layouts the convs are converted to: NHWC data, the weights left as they are (OIHW): the templates pack
#: them at compile time in the order their tile reads them anyway, so a transposed copy would only cost memory.
#: A transposed conv stays NCHW: TVM 0.27 lowers it in no other layout (ConvertLayout would otherwise let it
#: follow its input into NHWC, which then fails to build).
LAYOUTS = {"relax.nn.conv2d": ["NHWC", "OIHW"], "relax.nn.conv2d_transpose": ["NCHW", "IOHW"]}
#: Layout-carrying ops that TVM 0.27's LegalizeOps lowers in NHWC (TOPI's layout-generic conv, pooling and
#: resize). Another op the conversion moves to NHWC would reach the VM unlowered: the graph keeps its layout.
NHWC_LOWERED = {"relax.nn.conv2d", "relax.nn.max_pool2d", "relax.nn.avg_pool2d", "relax.nn.adaptive_avg_pool2d",
                "relax.image.resize2d"}


def _float_scalar(value, dtype: str) -> relax.Constant:
    return relax.const(float(value), dtype)


@mutator
class _LayoutFreeEwise(PyExprMutator):
    """``clip(x, lo, hi)`` -> ``minimum(maximum(x, lo), hi)``; ``leakyrelu(x, a)`` -> ``maximum(x, 0) + a*minimum(x, 0)``
    (exact: one of the two terms is zero)."""

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod_ = mod

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call, relax.Call) or not isinstance(call.op, tvm.ir.Op):
            return call
        if call.op.name == "relax.call_tir":
            return self._scalar_ewise(call)
        ty = call.args[0].ty if call.args else None
        if not isinstance(ty, relax.TensorType) or not str(ty.dtype).startswith("float"):
            return call
        dtype = str(ty.dtype)
        name = call.op.name
        x = call.args[0]
        if name == "relax.clip":
            lo, hi = (getattr(a, "value", None) for a in call.args[1:3])
            if lo is None or hi is None:
                return call
            low = self.builder_.emit(relax.op.maximum(x, _float_scalar(_value(lo), dtype)))
            return relax.op.minimum(low, _float_scalar(_value(hi), dtype))
        if name == "relax.nn.leakyrelu":
            alpha = float(call.attrs.alpha)
            zero = _float_scalar(0.0, dtype)
            pos = self.builder_.emit(relax.op.maximum(x, zero))
            neg = self.builder_.emit(relax.op.minimum(x, zero))
            scaled = self.builder_.emit(relax.op.multiply(neg, _float_scalar(alpha, dtype)))
            return relax.op.add(pos, scaled)
        return call

    def _scalar_ewise(self, call: relax.Call) -> relax.Expr:
        """``call_tir(f, (x, c))`` where ``f`` computes ``out[i...] = op(x[i...], c[()])`` (the ONNX importer's
        Clip, emitted through TOPI) -> the Relax op itself, which has a layout rule."""
        gv, args = call.args[0], list(getattr(call.args[1], "fields", []))
        func = self.mod_[gv] if isinstance(gv, tvm.ir.GlobalVar) and gv in self.mod_.get_global_vars() else None
        if not isinstance(func, tvm.tirx.PrimFunc) or len(args) != 2 or len(func.params) != 3:
            return call
        op = _scalar_ewise_op(func)
        return call if op is None else op(args[0], args[1])


#: TIR binary expressions and the Relax ops that compute them elementwise.
_EWISE = {"Max": relax.op.maximum, "Min": relax.op.minimum, "Add": relax.op.add, "Sub": relax.op.subtract,
          "Mul": relax.op.multiply}


def _scalar_ewise_op(func: tvm.tirx.PrimFunc):
    """The Relax op for a PrimFunc ``(A, c, out)`` whose one loop nest computes ``out[v...] = op(A[v...], c[()])``
    over the whole of ``A`` (same shape and dtype as ``out``, ``c`` a 0-d buffer); else None."""
    from tvm import s_tir

    try:
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
    except Exception:  # noqa: BLE001 - not one plain loop nest
        return None
    if len(blocks) != 1:
        return None
    block = sch.get(blocks[0])
    store = block.body
    if type(store).__name__ != "BufferStore" or len(block.reads) != 2:
        return None
    # the buffers in parameter order (TVM 0.27's PrimFunc names its buffers after its parameters)
    buffers = {r.source.name: r.source for r in block.reads}
    names = [str(getattr(p, "name", "")) for p in func.params]
    if names[0] not in buffers or names[1] not in buffers or store.buffer.name != names[2]:
        return None
    a, c, out = buffers[names[0]], buffers[names[1]], store.buffer
    if len(c.shape) != 0 or [int(d) for d in a.shape] != [int(d) for d in out.shape] \
            or str(a.dtype) != str(out.dtype) or str(c.dtype) != str(a.dtype):
        return None
    ivars = [iv.var for iv in block.iter_vars]
    if any(int(iv.iter_type) != 0 for iv in block.iter_vars) or \
            [int(iv.dom.extent) for iv in block.iter_vars] != [int(d) for d in out.shape]:
        return None
    value = store.value
    op = _EWISE.get(type(value).__name__)
    if op is None or not all(i.same_as(v) for i, v in zip(store.indices, ivars)):
        return None
    lhs, rhs = value.a, value.b
    def tensor_load(e) -> bool:
        return _loaded(e) == a.name and len(e.indices) == len(ivars) and all(i.same_as(v) for i, v in zip(e.indices, ivars))

    def scalar_load(e) -> bool:
        return _loaded(e) == c.name and len(e.indices) == 0

    if tensor_load(lhs) and scalar_load(rhs):
        return op
    if tensor_load(rhs) and scalar_load(lhs) and op in (relax.op.maximum, relax.op.minimum, relax.op.add, relax.op.multiply):
        return op  # commutative: op(A, c) is op(c, A)
    return None


def _loaded(expr) -> str | None:
    """The name of the buffer a load reads (``BufferLoad.buffer``, TVM 0.27's ``TensorLoad.source``), else None."""
    if type(expr).__name__ not in ("BufferLoad", "TensorLoad"):
        return None
    source = getattr(expr, "buffer", None) or getattr(expr, "source", None)
    return str(source.name) if source is not None else None


def _value(prim) -> float:
    """A PrimValue's number: an ``IntImm``/``FloatImm``, or already a Python number (TVM's ONNX HardSigmoid and
    HardSwish converters build their clip from Python ints, which the FFI hands back as ints)."""
    return float(getattr(prim, "value", prim))


def _layouts(mod: tvm.IRModule) -> set[tuple[str, str]]:
    """(op, layout) of every call in ``mod`` whose attributes name a data layout."""
    found: set[tuple[str, str]] = set()

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.attrs is not None:
            for field in ("data_layout", "layout"):
                layout = getattr(expr.attrs, field, None)
                if layout is not None:
                    found.add((expr.op.name, str(layout)))

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return found


def has_conv(mod: tvm.IRModule, layouts: set[tuple[str, str]] | None = None) -> bool:
    """``mod`` has a 2-D conv (``layouts``: its :func:`_layouts`, when already at hand)."""
    return any(op == "relax.nn.conv2d" for op, _ in (_layouts(mod) if layouts is None else layouts))


def channels_last(mod: tvm.IRModule, note: Callable[[str], None] | None = None) -> tvm.IRModule:
    """Run after ``fold_constants_numpy`` (a Clip's bounds are then constants).
    ``mod`` with its 2-D convs (and what follows their layout) in NHWC; ``mod`` unchanged when it has no conv or
    when the conversion fails (then each conv's kernel makes its own channels-last copy, as before). ``note`` gets
    the layout the convs run in: "NHWC", or "NCHW (...)" saying why the conversion failed."""
    before = _layouts(mod)
    if not has_conv(mod, before):
        return mod
    try:
        converted = rewrite_functions(_LayoutFreeEwise, mod)
        converted = relax.transform.ConvertLayout(LAYOUTS)(converted)
        moved = sorted(_layouts(converted) - before - {(op, "NHWC") for op in NHWC_LOWERED})
        if moved:
            raise ValueError(f"{moved[0][0]} in {moved[0][1]} has no lowering in TVM")
        converted = fold_constants_numpy(relax.transform.DeadCodeElimination()(converted))  # e.g. reshaped biases
    except Exception as exc:  # noqa: BLE001 - a graph ConvertLayout cannot handle keeps its own layout
        why = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        log.warning("channels-last conversion skipped: %s", why)
        if note is not None:
            note(f"NCHW (the channels-last conversion failed: {why})")
        return mod
    if note is not None:
        note("NHWC")
    return converted
