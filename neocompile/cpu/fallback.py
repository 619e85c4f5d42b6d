"""The floor under every kernel: parallel outer loops and vectorized inner loops for whatever no template or
dlight rule schedules (pooling, elementwise chains, layout changes, odd reductions)."""
from __future__ import annotations

from typing import Any

from tvm import s_tir
from tvm.tirx.analysis import undefined_vars

REDUCE = 2  # tirx.IterVar.CommReduce
#: The hint for TVM's LoopPartition pass to split a loop at the conditions inside it: a template's row-tile loop whose
#: last tile is partial (the full tiles and the tail as two loops; left as one, the tail's predicate sits on every
#: accumulator update and LLVM keeps the predicated rows in memory, 2x slower), a concatenation's vector loop here.
#: It only reaches LoopPartition in a function that indexes in int32 (``pipeline._legalize`` narrows them):
#: NarrowDataType renames an int64 loop variable at build time but not the hint's.
PARTITION = "pragma_loop_partition_hint"


def schedule_fallback(sch: s_tir.Schedule, lanes: int) -> int:
    """Inline elementwise producers, then give each remaining root block parallel + vectorized loops.

    Returns the number of root blocks scheduled."""
    root = sch.get_sblock("root")
    _inline_all(sch, root)
    done = 0
    for block in sch.get_child_blocks(root):
        if schedule_block(sch, block, lanes):
            done += 1
    return done


def vectorize_innermost(sch: s_tir.Schedule, block: Any) -> None:
    """Vectorize a block's innermost loop when it is spatial and short enough to be a vector (tile epilogues)."""
    loops = sch.get_loops(block)
    if not loops:
        return
    extent = sch.get(loops[-1]).extent
    if not hasattr(extent, "value") or extent.value < 2 or extent.value > 64:
        return
    try:
        sch.vectorize(loops[-1])
    except Exception:  # noqa: BLE001 - a reduction or a non-vectorizable innermost loop stays scalar
        pass


def _selects_along(block: Any, var: Any) -> bool:
    """Whether ``block`` picks its value by a condition on ``var`` (``if_then_else(c < 64, A[..], B[..])``: a
    concatenation along the innermost axis, channels-last). Its vector loop is then split at the inputs' boundaries
    (LoopPartition, :data:`PARTITION`), each part a plain vectorized copy: with the selects, every element evaluated
    one per input (DenseNet-121's concatenations of up to 25 inputs with their batch norm and ReLU: 55 of 125 ms)."""
    def visit(node: Any) -> bool:
        if type(node).__name__ == "Call":
            if str(getattr(node.op, "name", "")).endswith("if_then_else") and \
                    any(v.same_as(var) for v in undefined_vars(node.args[0])):
                return True
            return any(visit(arg) for arg in node.args)
        return any(visit(getattr(node, field)) for field in ("a", "b", "value", "condition", "true_value",
                                                              "false_value") if hasattr(node, field))

    body = block.body
    return type(body).__name__ == "BufferStore" and visit(body.value)


def _inline_all(sch: s_tir.Schedule, root: Any) -> None:
    """compute_inline every block that allows it (injective, one consumer), until nothing changes."""
    changed = True
    while changed:
        changed = False
        blocks = sch.get_child_blocks(root)
        if len(blocks) < 2:
            return
        for block in blocks[:-1]:
            try:
                sch.compute_inline(block)
                changed = True
                break
            except Exception:  # noqa: BLE001 - not inlinable (output, reduction, several consumers)
                continue


def schedule_block(sch: s_tir.Schedule, block: Any, lanes: int) -> bool:
    """Parallel outer spatial loops and a vectorized innermost one for one block as legalized; False if it
    does not have that shape.

    The innermost spatial loop is never fused into the parallel loop: every element would then recover its
    indices with integer divisions (that made a padding copy 5x slower than the serial nest)."""
    loops = sch.get_loops(block)
    ivs = sch.get(block).iter_vars
    if not loops or len(loops) != len(ivs):
        return False
    kinds = [int(iv.iter_type) for iv in ivs]
    n_spatial = next((i for i, k in enumerate(kinds) if k == REDUCE), len(kinds))
    if any(k != REDUCE for k in kinds[n_spatial:]) or n_spatial == 0:
        return False  # spatial iterators after a reduction: leave the nest as legalized
    extent = sch.get(loops[n_spatial - 1]).extent
    e_inner = int(extent.value) if hasattr(extent, "value") else None
    outer, inner, reduce = loops[: n_spatial - 1], loops[n_spatial - 1], loops[n_spatial:]
    vector = None
    if e_inner is not None and e_inner >= lanes and e_inner % lanes == 0:
        rest, vector = sch.split(inner, [None, lanes])
        if reduce:  # the vector runs under the reduction: reorder the reduction loops outside it
            try:
                sch.reorder(rest, *reduce, vector)
            except Exception:  # noqa: BLE001
                pass
        if not outer:
            outer = [rest]
        elif not reduce and _selects_along(sch.get(block), ivs[n_spatial - 1].var):
            sch.annotate(rest, PARTITION, 1)
    elif e_inner is not None and 1 < e_inner <= 4 * lanes and not reduce:
        vector = inner  # short rows (7, 14, 49): one (odd-sized) vector each
    elif not outer:
        outer = [inner]
    if outer:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
    if vector is not None:
        try:
            sch.vectorize(vector)
        except Exception:  # noqa: BLE001 - a loop LLVM cannot take as one vector stays a loop
            pass
    return True
