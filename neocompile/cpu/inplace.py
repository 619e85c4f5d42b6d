"""Kernels that write their output over an input that dies with them: a residual add's input, for one.

A ResNet bottleneck ends in ``relu(conv(x) + bias + shortcut)``: the fused kernel reads the shortcut tensor, which
nothing reads afterwards, and writes an output of the same shape to a buffer of its own. Written over the shortcut
instead (Relax's ``call_tir_inplace``), the kernel streams one tensor instead of two, and what it writes is in
cache already (the shortcut was read a few kernels earlier), where a fresh buffer is cold: onnxruntime's conv does
the same with its fused sum.

:func:`use_inplace` finds such calls and swaps their kernels for in-place copies (``<name>_inplace``, the output
parameter replaced by the input's), when both hold:

* in Relax, the input is a tensor a kernel made earlier in the same dataflow block (not a parameter, a weight or a
  view), of the output's shape and dtype, passed once, used by nothing after this call and only ever as a kernel
  argument (so no reshape view of it outlives it);
* in the kernel, the input only feeds the output element by element: every block that reads it (or a buffer made
  from it this way) reads one element and writes the same element of one buffer, with no reduction, so each
  output element is written after the one input element it overwrites was read, and by nothing else.

Run after ``RewriteDataflowReshape`` (a reshape kernel becomes a view op, which then disqualifies its input), before
the dataflow blocks are lowered.
"""
from __future__ import annotations

import collections
from typing import Any

import tvm
import tvm_ffi
from tvm import relax, s_tir

#: Suffix of a kernel's in-place copy (KernelReport.rename follows it).
SUFFIX = "_inplace"
_REDUCE = 2  # tirx.IterVar.CommReduce


def use_inplace(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with every eligible ``call_tir`` turned into a ``call_tir_inplace`` over its dying input."""
    call_tir = tvm.ir.Op.get("relax.call_tir")
    safe: dict[tuple[str, int], bool] = {}
    plans: dict[Any, dict[Any, tuple[Any, int]]] = {}  # function -> {binding var: (kernel's GlobalVar, input index)}
    for gv, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        uses = _uses(func)
        made = _made_by_kernels(func, call_tir)
        for block in _dataflow_blocks(func):
            for i, binding in enumerate(block.bindings):
                call = binding.value
                if not (isinstance(binding, relax.VarBinding) and isinstance(call, relax.Call)
                        and call.op.same_as(call_tir) and isinstance(call.args[0], tvm.ir.GlobalVar)
                        and isinstance(call.args[1], relax.Tuple)):
                    continue
                kernel = mod[call.args[0]]
                if not isinstance(kernel, tvm.tirx.PrimFunc) or not isinstance(binding.var.ty, relax.TensorType):
                    continue
                args = list(call.args[1].fields)
                for k, arg in enumerate(args):
                    if not _dies_here(arg, binding.var, args, made, uses, block, i):
                        continue
                    key = (call.args[0].name_hint, k)
                    if key not in safe:
                        safe[key] = _elementwise_into_output(kernel, k, len(args))
                    if safe[key]:
                        plans.setdefault(gv, {})[binding.var] = (call.args[0], k)
                        break
    if not plans:
        return mod
    rebind = _Rebind(mod)
    for gv, plan in plans.items():
        rebind.plan = plan
        rebind.builder_.update_func(gv, rebind.visit_expr(mod[gv]))
    return rebind.builder_.get()


def _dataflow_blocks(func: relax.Function) -> list[Any]:
    body = func.body
    if not isinstance(body, relax.SeqExpr):
        return []
    return [b for b in body.blocks if isinstance(b, relax.DataflowBlock)]


def _made_by_kernels(func: relax.Function, call_tir: Any) -> set[Any]:
    """The variables bound to a ``call_tir`` (a fresh tensor of their own) in a dataflow block of ``func``."""
    out = set()
    for block in _dataflow_blocks(func):
        for binding in block.bindings:
            value = binding.value
            if isinstance(binding, relax.VarBinding) and isinstance(value, relax.Call) and value.op.same_as(call_tir):
                out.add(binding.var)
    return out


def _uses(func: relax.Function) -> dict[Any, list[tuple[Any, bool]]]:
    """Per variable, its uses: (the binding var using it, or None for the function's result; whether it is a
    ``call_tir`` argument passed once, the only use that cannot alias it)."""
    call_tir = tvm.ir.Op.get("relax.call_tir")
    uses: dict[Any, list[tuple[Any, bool]]] = {}

    def record(expr: Any, user: Any, direct: set[Any]) -> None:
        def visit(e: Any) -> None:
            if isinstance(e, relax.Var):
                uses.setdefault(e, []).append((user, e in direct))
        relax.analysis.post_order_visit(expr, visit)

    body = func.body
    if not isinstance(body, relax.SeqExpr):
        return uses
    for block in body.blocks:
        for binding in block.bindings:
            value = binding.value
            direct: set[Any] = set()
            if isinstance(value, relax.Call) and value.op.same_as(call_tir) and isinstance(value.args[1], relax.Tuple):
                counts = collections.Counter(a for a in value.args[1].fields if isinstance(a, relax.Var))
                direct = {a for a, n in counts.items() if n == 1}
            record(value, binding.var, direct)
    record(body.body, None, set())
    return uses


def _dies_here(arg: Any, result: Any, args: list[Any], made: set[Any], uses: dict[Any, list], block: Any, index: int) -> bool:
    """Whether the kernel call binding ``result`` at ``block.bindings[index]`` may write over ``arg``."""
    if not isinstance(arg, relax.DataflowVar) or arg not in made or sum(1 for a in args if a.same_as(arg)) != 1:
        return False
    if not tvm_ffi.structural_equal(arg.ty, result.ty):
        return False  # shape and dtype as the output's (static shapes compare equal)
    shape = arg.ty.shape if isinstance(arg.ty, relax.TensorType) else None
    if not isinstance(shape, relax.ShapeExpr) or not all(isinstance(d, tvm.tirx.IntImm) for d in shape.values):
        return False
    later = {b.var for b in list(block.bindings)[index + 1:]}
    for user, direct in uses.get(arg, []):
        if not direct or user is None or user in later:
            return False  # a view or a tuple of it, a use after this call, or the block's result
    return True


def _elementwise_into_output(kernel: Any, k: int, count: int) -> bool:
    """Whether input ``k`` of ``kernel`` (with ``count`` inputs and one output after them) only feeds the output
    element by element (module docstring); False for anything this cannot tell."""
    if len(kernel.params) != count + 1:
        return False
    try:
        sch = s_tir.Schedule(kernel)
        blocks = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]
    except Exception:  # noqa: BLE001 - not a function of blocks under a root: not analysed, not touched
        return False
    target, output = kernel.params[k], kernel.params[count]
    chain = [target]
    seen = {target}
    while chain:
        buffer = chain.pop()
        for block in blocks:
            reads = [r for r in block.reads if r.source.same_as(buffer)]
            if not reads:
                continue
            if any(int(iv.iter_type) == _REDUCE for iv in block.iter_vars) or len(block.writes) != 1:
                return False
            write = block.writes[0]
            if not all(_same_point(r, write) for r in reads):
                return False
            if write.source.same_as(target):
                return False
            if not write.source.same_as(output) and write.source not in seen:
                seen.add(write.source)
                chain.append(write.source)
    return not any(w.source.same_as(target) for b in blocks for w in b.writes)  # nothing else writes the input


def _same_point(a: Any, b: Any) -> bool:
    """Both regions one element, at structurally equal indices."""
    if len(a.region) != len(b.region):
        return False
    for ra, rb in zip(a.region, b.region):
        if not (_is_one(ra.extent) and _is_one(rb.extent) and tvm_ffi.structural_equal(ra.min, rb.min)):
            return False
    return True


def _is_one(extent: Any) -> bool:
    return isinstance(extent, tvm.tirx.IntImm) and int(extent.value) == 1


@relax.expr_functor.mutator
class _Rebind(relax.PyExprMutator):
    """Turn the planned ``call_tir`` bindings into ``call_tir_inplace`` calls of in-place copies of their kernels,
    each copy added to the module once (``<kernel>_inplace``, ``<kernel>_inplace<k>`` for a second input)."""

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod = mod
        self.plan: dict[Any, tuple[Any, int]] = {}
        self.copies: dict[tuple[str, int], Any] = {}

    def visit_var_binding_(self, binding: Any) -> None:
        planned = self.plan.get(binding.var)
        if planned is None:
            super().visit_var_binding_(binding)
            return
        kernel_gv, k = planned
        call = binding.value
        key = (kernel_gv.name_hint, k)
        if key not in self.copies:
            kernel = self.mod[kernel_gv]
            count = len(call.args[1].fields)
            copy = kernel.specialize({kernel.params[count]: kernel.params[k]})
            taken = any(name == kernel_gv.name_hint for name, _ in self.copies)
            self.copies[key] = self.builder_.add_func(copy, f"{kernel_gv.name_hint}{SUFFIX}{k if taken else ''}")
        new = relax.op.call_tir_inplace(self.copies[key], self.visit_expr(call.args[1]), [k], binding.var.ty)
        self.builder_.emit_normalized(relax.VarBinding(binding.var, self.builder_.normalize(new)))
