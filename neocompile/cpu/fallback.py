"""The floor under every kernel: parallel outer loops and vectorized inner loops for whatever no template or
dlight rule schedules (pooling, elementwise chains, layout changes, odd reductions)."""
from __future__ import annotations

from typing import Any

from tvm import s_tir

REDUCE = 2  # tirx.IterVar.CommReduce


def schedule_fallback(sch: s_tir.Schedule, lanes: int) -> int:
    """Inline elementwise producers, then give each remaining root block parallel + vectorized loops.

    Returns the number of root blocks scheduled."""
    root = sch.get_sblock("root")
    _inline_all(sch, root)
    done = 0
    for block in sch.get_child_blocks(root):
        if _schedule_block(sch, block, lanes):
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


def _schedule_block(sch: s_tir.Schedule, block: Any, lanes: int) -> bool:
    loops = sch.get_loops(block)
    ivs = sch.get(block).iter_vars
    if not loops or len(loops) != len(ivs):
        return False
    kinds = [int(iv.iter_type) for iv in ivs]
    n_spatial = next((i for i, k in enumerate(kinds) if k == REDUCE), len(kinds))
    if any(k != REDUCE for k in kinds[n_spatial:]):
        return False  # spatial iterators after a reduction: leave the nest as legalized
    extents = [int(sch.get(l).extent) if hasattr(sch.get(l).extent, "value") else None for l in loops]
    spatial, reduce = loops[:n_spatial], loops[n_spatial:]
    if not spatial:
        return False
    inner = spatial[-1]
    e_inner = extents[n_spatial - 1]
    vector = None
    if e_inner is not None and e_inner >= lanes:
        factor = lanes if e_inner % lanes == 0 else None
        if factor:
            outer_part, vector = sch.split(inner, [None, factor])
            spatial = spatial[:-1] + [outer_part]
            if reduce:
                try:
                    sch.reorder(*spatial, *reduce, vector)
                except Exception:  # noqa: BLE001
                    pass
    elif e_inner is not None and e_inner > 1 and not reduce and len(spatial) > 1:
        vector = inner
        spatial = spatial[:-1]
    if spatial:
        fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
        sch.parallel(fused)
    if vector is not None:
        try:
            sch.vectorize(vector)
        except Exception:  # noqa: BLE001
            pass
    return True
