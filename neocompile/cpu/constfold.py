"""Fold the importers' constant bookkeeping (bias reshapes, weight transposes, Clip's isnan checks) with numpy.

Relax's FoldConstant folds such calls after legalization by building each one with LLVM: a few hundred
milliseconds apiece, which made it 13 s of MobileNetV2's 17 s compile. Folding them here first leaves
FoldConstant nothing to build for them. Only layout and elementwise ops whose numpy meaning is exact are
handled; anything else is left to FoldConstant.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import tvm
from tvm import relax

_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "relax.add": np.add,
    "relax.subtract": np.subtract,
    "relax.multiply": np.multiply,
}
_CONSTANT = ("Constant", "GenericConst")


def _is_const(expr: Any) -> bool:
    return type(expr).__name__ in _CONSTANT


@relax.expr_functor.mutator
class _Folder(relax.PyExprMutator):
    def visit_call_(self, call):  # noqa: D401 - PyExprMutator hook
        call = super().visit_call_(call)
        name = getattr(call.op, "name", None)
        if name is None or not call.args:
            return call
        args = [self._resolve(a) for a in call.args]
        if not _is_const(args[0]):
            return call
        try:
            value = _fold(name, call, args)
        except Exception:  # noqa: BLE001 - anything unexpected is left to FoldConstant
            return call
        return call if value is None else relax.const(_tensor(value))

    def _resolve(self, arg):
        """A variable bound to a constant (a folded call) stands for that constant."""
        if isinstance(arg, relax.Var):
            bound = self.lookup_binding(arg)
            if bound is not None and _is_const(bound):
                return bound
        return arg


def _array(tensor) -> np.ndarray:
    """A numpy view of a TVM tensor's memory (no copy), or a copy for a dtype numpy's DLPack import lacks."""
    try:
        return np.from_dlpack(tensor)
    except (TypeError, BufferError, RuntimeError):
        return tensor.numpy()


def _tensor(value: np.ndarray):
    """A new TVM tensor holding ``value`` (a lazy result such as a transposed view is computed straight into it):
    the one copy a folded constant needs."""
    try:
        out = tvm.runtime.empty(value.shape, str(value.dtype))
        np.copyto(_array_out(out), value, casting="no")
        return out
    except (TypeError, BufferError, RuntimeError):
        return tvm.runtime.tensor(np.ascontiguousarray(value))


def _array_out(tensor) -> np.ndarray:
    view = np.from_dlpack(tensor)
    if not view.flags.writeable:
        raise BufferError("read-only view")
    return view


def _fold(name: str, call, args: list) -> np.ndarray | None:
    """The folded value: possibly a view of the constant (reshape, transpose), copied once by the caller."""
    data = _array(args[0].value)
    if name == "relax.reshape":
        shape = getattr(args[1], "values", None)
        return None if shape is None else data.reshape([int(d) for d in shape])
    if name == "relax.permute_dims":
        axes = call.attrs.axes
        return np.transpose(data, None if axes is None else [int(a) for a in axes])
    if name == "relax.isnan" and data.dtype.kind == "f":
        return np.isnan(data)
    if name == "relax.where" and len(args) == 3 and all(_is_const(a) for a in args[1:]) and data.dtype == bool:
        a, b = _array(args[1].value), _array(args[2].value)
        return np.where(data, a, b).astype(a.dtype) if a.dtype == b.dtype else None
    if name in _BINARY and len(args) == 2 and _is_const(args[1]):
        other = _array(args[1].value)
        if data.dtype != other.dtype or data.dtype.kind != "f":
            return None
        return _BINARY[name](data, other).astype(data.dtype)
    return None


def _rewrite(mod: tvm.IRModule, folder) -> tvm.IRModule:
    """Run a mutator over every Relax function of ``mod``."""
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            folder.builder_.update_func(gv, folder.visit_expr(func))
    return folder.builder_.get()


@tvm.transform.module_pass(opt_level=0, name="neocompile.FoldConstantNumpy")
def fold_constants_numpy(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    return _rewrite(mod, _Folder(mod))


# Weight packing: SplitLayoutRewritePreproc leaves ``call_tir(<kernel>_weight_prepack, (constant,))``, one PrimFunc
# copying ``src[v...]`` to ``dst[f(v...)]``. FoldConstant would build each with LLVM (4 s for MobileNetV2's 31);
# here the index expressions are evaluated with numpy broadcasting instead and the result becomes the constant.
_INDEX_OPS = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "FloorDiv": np.floor_divide, "FloorMod": np.mod}


def _eval_index(expr, axes: dict) -> Any:
    kind = type(expr).__name__
    if kind == "IntImm":
        return int(expr.value)
    for var, value in axes.items():
        if expr.same_as(var):
            return value
    if kind in _INDEX_OPS:
        return _INDEX_OPS[kind](_eval_index(expr.a, axes), _eval_index(expr.b, axes))
    raise ValueError(f"index expression {kind} is not folded here")


def _copy_block(func) -> Any:
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    if len(blocks) != 1 or len(sch.get_loops(blocks[0])) != len(sch.get(blocks[0]).iter_vars):
        return None
    return sch.get(blocks[0])


def evaluate_layout_copy(func, src: np.ndarray, out: Callable[[list[int]], np.ndarray] | None = None) -> np.ndarray | None:
    """``dst`` for a PrimFunc whose one block writes ``dst[f(v)] = src[v]`` over all of ``src``; None otherwise.
    ``out(shape)`` gives the array to write ``dst`` into (default: a new numpy array)."""
    block = _copy_block(func)
    if block is None:
        return None
    store = block.body
    if type(store).__name__ != "BufferStore" or type(store.value).__name__ not in ("BufferLoad", "TensorLoad"):
        return None
    ivars = [iv.var for iv in block.iter_vars]
    extents = [int(iv.dom.extent) for iv in block.iter_vars]
    load = store.value
    if list(extents) != list(src.shape) or len(load.indices) != len(ivars) or \
            not all(i.same_as(v) for i, v in zip(load.indices, ivars)):
        return None
    axes = {}
    for d, (var, n) in enumerate(zip(ivars, extents)):
        shape = [1] * len(ivars)
        shape[d] = n
        axes[var] = np.arange(n).reshape(shape)
    index = tuple(np.broadcast_to(np.asarray(_eval_index(e, axes)), src.shape) for e in store.indices)
    dst_shape = [int(s) for s in store.buffer.shape] if hasattr(store, "buffer") else None
    if dst_shape is None or int(np.prod(dst_shape)) != src.size:
        return None
    dst = np.empty(dst_shape, dtype=src.dtype) if out is None else out(dst_shape)
    dst[index] = src
    return dst


@relax.expr_functor.mutator
class _PrepackFolder(relax.PyExprMutator):
    def __init__(self, mod, budget: int):
        super().__init__(mod)
        self.mod_ = mod
        self.budget = budget  # bytes packed in this run before the rest waits for the next
        self.deferred = False

    def visit_call_(self, call):  # noqa: D401 - PyExprMutator hook
        call = super().visit_call_(call)
        if getattr(call.op, "name", None) != "relax.call_tir":
            return call
        gv, args = call.args[0], call.args[1]
        fields = list(getattr(args, "fields", []))
        if not gv.name_hint.endswith("_weight_prepack") or len(fields) != 1 or not _is_const(fields[0]):
            return call
        src = fields[0].value
        if self.budget <= 0:
            self.deferred = True
            return call
        packed: list = []

        def out(shape: list[int]) -> np.ndarray:  # the packed weight is written straight into its TVM tensor
            packed.append(tvm.runtime.empty(shape, str(src.dtype)))
            return _array_out(packed[-1])

        try:
            value = evaluate_layout_copy(self.mod_[gv], _array(src), out)
        except Exception:  # noqa: BLE001 - FoldConstant still folds it
            return call
        if value is None:
            return call
        self.budget -= value.nbytes
        return relax.const(packed[0] if packed else _tensor(value))


class FoldWeightPrepack:
    """Pack the weights, ``budget`` bytes per run: a step of ``pipeline.weight_steps`` that sets ``unfinished``
    while weights are left, and is then run again on its own output. Each run's input module still holds the
    source weights the run packs, so packed and source copies of all weights would coexist in one run (ResNet-50:
    100 MB more at the compile's peak); in chunks, a caller that lets each input go holds one chunk twice."""

    def __init__(self, budget: int = 16 << 20):
        self.budget = budget
        self.unfinished = False

    def __call__(self, mod: tvm.IRModule) -> tvm.IRModule:
        folder = _PrepackFolder(mod, self.budget)
        out = _rewrite(mod, folder)
        self.unfinished = folder.deferred
        return out
