"""Register-tiled multiply-accumulate kernels: conv2d (any kernel, stride, groups, depthwise), dense, matmul and
batch matmul, written as one shape-parameterised template over the legalized block's iterators.

A fused PrimFunc qualifies when it has exactly one reduction block whose body is ``C += A * B`` (the anchor).
The template picks two spatial iterators from how the operands are indexed:

- the *vector* iterator: one that indexes the weight-like operand ``B`` but not ``A`` (the output channel of a
  conv, the column of a matmul). A tile of ``nv`` vectors of the target's width runs along it, so each step of
  the reduction loads ``nv`` vectors of ``B`` and broadcasts scalars of ``A``;
- the *row* iterator: one that indexes ``A`` but not ``B`` (output column of a conv, row of a matmul); ``rt``
  rows of the tile are held in registers.

``rt * nv`` accumulators fit the target's vector register file (``cpu.vector_registers``). When no iterator
indexes ``B`` alone (depthwise and grouped conv) the vector runs along the output's innermost axis instead.
The accumulator tile lives in a local buffer; the elementwise epilogue (bias, batch norm, activation, residual
add) is inlined into one block computed per tile, straight from the accumulators. A constant ``B`` (a
``layout_free_buffers`` parameter) is read through a ``meta_schedule.layout_rewrite_preproc`` block that packs
it into ``[n/T, ..., T]``: ``SplitLayoutRewritePreproc`` and ``constfold.FoldWeightPrepack`` then pack it at
compile time.

Variants: a stride-1 conv with a short reduction (a 1x1 conv from few channels) swaps the two iterators
(``conv2d-spatial``: whole-vector stores of the output row); a strided conv whose vector runs along the row reads
a de-interleaved copy of its padded input, so each tap is a contiguous load. A depthwise conv (every reduction
over the window) runs plane by plane: the padded copy of one input plane is made inside the parallel loop,
right before its tiles read it from cache, and the window is unrolled under a tile that leaves registers for
its weights (MobileNetV2's stride-2 3x3 at 112x112: 3.4 -> 0.45 ms). Channels-last, a plane is one output row;
a parallel task then takes a band of output rows (``_band``), so its padded copy holds each input row about once
rather than once per window row (MobileNetV2's 3x3 at 56x56x144: 0.34 -> 0.26 ms, onnxruntime 0.31).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from tvm import DataType, s_tir, tirx
from tvm.tirx.analysis import undefined_vars

from .fallback import PARTITION, schedule_block, vectorize_innermost

PREPROC = "meta_schedule.layout_rewrite_preproc"
_UNROLL_TAPS = 5  # depthwise windows up to 5x5 are unrolled whole under the register tile
_BAND_MAX, _BAND_TASKS = 8, 8  # a channels-last depthwise conv's band of output rows per task (_band)
_BAND_SCRATCH_BYTES = 400 * 1024  # ... whose padded input rows stay within this, in L2 (_band_fitting)
_SHORT_REDUCTION = 128  # a conv reducing over at most this many products may keep a register for its epilogue,
_SPARE_SCORE = 0.85  # ... with a tile of as many accumulators and at least this share of multiply-adds per load
_FUSED_MIN_CHANNELS = 16  # a windowed or strided conv runs over fused pixels from this many input channels (_pixel_rows)
_EPILOGUE_UNROLL = 64  # vectors of a tile's epilogue unrolled at most (_unroll_epilogue); a tile holds 16-32
REDUCE = 2  # tirx.IterVar.CommReduce


@dataclasses.dataclass(frozen=True)
class Knobs:
    """What tuning may choose instead of the template's own rules (None: the rule decides).

    ``rows``/``vectors``: the register tile (rt, nv), taken only when it fits the iterators (the rows need not
    divide theirs unless ``ragged`` is False) and the registers; ``weights_outer``: whether the loop over vector blocks of packed weights is the outermost (each B
    panel stays in cache while every row reuses it) or the output's own order (consecutive tiles share input)."""

    rows: int | None = None
    vectors: int | None = None
    weights_outer: bool | None = None
    spatial: bool | None = None  # a stride-1 conv's vector along the output row (conv2d-spatial), where it can
    ragged: bool | None = None  # rows need not divide the row extent, the last row tile partial (False: they must)
    fuse_rows: bool | None = None  # a channels-last conv's rows along (h, w) fused (False: along w only)
    band: int | None = None  # output rows per parallel task of a channels-last depthwise conv (1: one row each)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


#: The template variants tuning times against the template's own choice (those that do not apply to a kernel, or
#: schedule it the same way, are dropped): other register tiles, including the one-vector tall tiles that suit a
#: 1x1 conv over many channels (ResNet-50's 256->128 at 56x56: 4.6 -> 3.5 ms at 1 thread), the other loop order,
#: a stride-1 conv's vector along the output row, and the rules before partial row tiles: rows that divide their
#: extent (``ragged=False``) and a conv's rows along the image width only (``fuse_rows=False``), and a
#: channels-last depthwise conv one output row per parallel task (``band=1``, more tasks for many cores).
VARIANTS = (
    *(Knobs(rows=r, vectors=v) for r, v in ((14, 1), (12, 1), (8, 1), (7, 1), (6, 2), (5, 2), (4, 2), (3, 3), (2, 4))),
    Knobs(weights_outer=True), Knobs(weights_outer=False), Knobs(spatial=True),
    Knobs(ragged=False), Knobs(fuse_rows=False), Knobs(band=1),
)


@dataclasses.dataclass
class Tile:
    kind: str  # conv2d | conv2d-spatial | depthwise | matmul
    rows: int  # rt: rows of the register tile
    vectors: int  # nv: vectors along the vector iterator
    lanes: int  # elements per vector
    packed: bool  # B packed at compile time

    def describe(self) -> str:
        return f"{self.kind} {self.rows}x{self.vectors}x{self.lanes}" + (" packed" if self.packed else "")


def schedule_anchor(sch: s_tir.Schedule, vector_bits: int, registers: int, knobs: Knobs | None = None) -> Tile | None:
    """Schedule the function's multiply-accumulate anchor; None (schedule untouched) when there is none.
    ``knobs`` override the template's choices where they fit (tuning tries them)."""
    knobs = knobs or Knobs()
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    reductions = [b for b in blocks if any(int(iv.iter_type) == REDUCE for iv in sch.get(b).iter_vars)]
    if len(reductions) != 1:
        return None
    anchor = reductions[0]
    block = sch.get(anchor)
    roles = _roles(sch, anchor)
    if roles is None:
        return None
    a_index, b_index, vec, row, kind, swap = roles
    loops = sch.get_loops(anchor)
    ivars = [iv.var for iv in block.iter_vars]
    if len(loops) != len(ivars) or not _one_to_one(sch, anchor, loops):
        return None
    lanes_full = max(1, vector_bits // DataType(block.writes[0].source.dtype).bits)
    extents = [int(iv.dom.extent) for iv in block.iter_vars]
    depth = 1
    for iv in block.iter_vars:
        if int(iv.iter_type) == REDUCE:
            depth *= int(iv.dom.extent)
    # Short reductions (a 1x1 conv from few channels) spend their time writing the tile out: with the vector
    # along the output row those writes are whole vectors (e.g. 16->96 at 112x112: 2.9 -> 2.5 ms).
    spatial = depth <= 32 if knobs.spatial is None else knobs.spatial
    if swap is not None and spatial and extents[swap[0]] % lanes_full == 0:
        vec, row = swap
        kind = "conv2d-spatial"
    # A channels-last conv runs its rows along (h, w) fused: a 1x1 one is a matmul over pixels, a 3x3 one at 14x14
    # or 7x7 gets 6x2 tiles over 196 or 49 pixels instead of 2x4 or 7x1 over a row of 14 or 7 (ResNet-50's: 1.15-1.18x
    # -> 0.98-1.03x onnxruntime per kernel; its strided 3x3 and 1x1 convs 1.10-1.25x -> 0.82-0.93x).
    fused = _pixel_rows(block, a_index, row, kind) if knobs.fuse_rows is not False else None
    width = extents[row] if row is not None else 1
    if fused is not None:
        extents = list(extents)
        extents[row] *= extents[fused]
    e_vec = extents[vec]
    e_row = extents[row] if row is not None else 1
    # A depthwise conv runs plane by plane with its whole window unrolled under the tile: the window's
    # weights stay in registers (broadcast once per plane), which leaves fewer for the tile.
    per_plane = kind == "depthwise" and _window_only(sch, anchor, a_index)
    window = depth if per_plane else 0
    # A tile whose rows do not divide the row extent: its last row tile is partial, and that tail runs as a loop of
    # its own (:data:`PARTITION`), so the full tiles keep their accumulators in registers. By default only where at least
    # :data:`_RAGGED_TILES` full tiles run: ResNet-50's 1x1 convs over pixels with 6x2 instead of 4x2 went from
    # 0.97-1.27x to 0.88-1.06x onnxruntime; at 7 rows a 6+1 split lost to 7x1.
    ragged_ok = (knobs.ragged is not False) and row is not None and not per_plane and kind != "conv2d-spatial"
    usable = registers - min(window, registers // 2)
    rt, nv, lanes = _tile_sizes(e_vec, e_row, lanes_full, usable, ragged_from=_RAGGED_TILES if ragged_ok else 0)
    if kind == "conv2d" and depth <= _SHORT_REDUCTION:
        # A short reduction's time goes to the epilogue as much as to the multiply-adds: where a tile of as many
        # accumulators leaves a register spare, it takes that one. Using all 16, a 4x3 tile's accumulators went
        # through memory for the bias and clip, a 6x2 one's did not (MobileNetV2's 16->96 1x1 at 112x112: 0.93 ->
        # 0.62 ms, 24->144 at 56x56: 0.39 -> 0.29 ms; whole model 1.19 -> 1.06x onnxruntime). With fewer
        # accumulators, or far fewer multiply-adds per load, it is not worth it (40 channels: 2x5 beat 8x1 by 20-25%).
        spare_rt, spare_nv, _ = _tile_sizes(e_vec, e_row, lanes_full, usable - 1,
                                            ragged_from=_RAGGED_TILES if ragged_ok else 0)
        if spare_rt * spare_nv >= rt * nv and _tile_score(spare_rt, spare_nv) >= _SPARE_SCORE * _tile_score(rt, nv):
            rt, nv = spare_rt, spare_nv
    windowed = sum(1 for iv in block.iter_vars if int(iv.iter_type) == REDUCE and int(iv.dom.extent) > 1) > 1
    if kind == "conv2d" and not windowed and depth >= _TALL_FROM and row is not None \
            and _innermost_is(block.reads[a_index], ivars[row]):
        rt, nv = _tall_tile(e_row, rt, nv, registers)
    if knobs.rows is not None and knobs.vectors is not None and _tile_fits(knobs.rows, knobs.vectors, e_vec, e_row, lanes, registers,
                                                                           ragged_from=1 if ragged_ok else 0):
        rt, nv = knobs.rows, knobs.vectors
    ragged = row is not None and e_row % rt != 0  # the last row tile is partial (a loop of its own: PARTITION)
    tile_n = nv * lanes

    # Epilogue: collapse the anchor's elementwise consumer chain into one final block.
    final = _collapse_epilogue(sch, anchor)
    # Reduction loops, longest innermost: a conv runs (ry, rx, rc), so LLVM does not unroll the short kernel
    # window under the tile and share broadcasts across it (that spilled the accumulators of a 3x3 conv).
    # B is packed into [n/T, ..., T] in that order when it is a compile-time constant and the tile divides it.
    reduce = sorted((i for i, iv in enumerate(block.iter_vars) if int(iv.iter_type) == REDUCE), key=lambda i: extents[i])
    if kind == "conv2d-spatial":  # B broadcast along the tile's rows: pack rt output channels innermost
        packed = _pack_weight(sch, anchor, b_index, ivars[row], rt, [ivars[i] for i in reduce])
    else:
        packed = _pack_weight(sch, anchor, b_index, ivars[vec], tile_n, [ivars[i] for i in reduce])

    unroll_tap, stride = _deinterleave_strided_input(sch, anchor, a_index, ivars[vec]) \
        if kind in ("depthwise", "conv2d-spatial") else (None, 1)

    if kind == "conv2d" and row is not None:
        if not _pack_rows(sch, anchor, a_index, ivars[row], rt) and not _channels_last(sch, anchor, a_index):
            _inline_plain_copy(sch, anchor, a_index)
    local = sch.cache_write(anchor, 0, "local")
    consumer = local
    if final is not None:
        try:
            sch.compute_inline(local)
            consumer = final
        except Exception:  # noqa: BLE001 - the epilogue stays a separate block; the write-back goes per tile
            consumer = local

    if fused is not None:  # the accumulators, the epilogue and the loop over pixels, all as [n, h * W + w, c]
        dtype = str(ivars[row].ty)  # the function's index type: NarrowDataType must not rename the row loop
        pixels = tirx.IndexMap.from_func(lambda n, h, w, c: (n, h * width + w, c), index_dtype=dtype)
        sch.transform_layout(anchor, ("write", 0), pixels)
        sch.transform_block_layout(consumer, pixels)
        sch.transform_block_layout(anchor, tirx.IndexMap.from_func(
            lambda *v: (*v[:fused], v[fused] * width + v[row], *v[row + 1:]), ndim=len(ivars), index_dtype=dtype))
        new = sch.get_loops(anchor)  # one loop fewer: the old iterators' loops, the row's now over pixels
        loops = [new[i - (i > fused)] if i != fused else None for i in range(len(loops))]
    spatial = [i for i, iv in enumerate(block.iter_vars) if int(iv.iter_type) != REDUCE and i != fused]
    vo, vt, vi = sch.split(loops[vec], [None, nv, lanes])
    if row is not None:
        ro, ri = sch.split(loops[row], [None, rt])
    weights_outer = packed and kind != "conv2d-spatial" if knobs.weights_outer is None else knobs.weights_outer
    if knobs.weights_outer is None and weights_outer and _innermost_is(block.writes[0], ivars[vec]):
        # Channels-last, the output's own order writes each pixel's channels together; small weights stay in
        # cache across it (MobileNetV2's 16->96 1x1 at 112x112: 2.7 -> 1.2 ms), large ones are swept once.
        weights_outer = _nbytes(block.reads[b_index].source) > _WEIGHTS_OUTER_FROM
    if weights_outer:
        # The B panel of one vector block ([K, T] packed) stays in cache while every row reuses it; the batch goes
        # first, so one image's input stays in cache while every vector block sweeps it (vector blocks outermost
        # re-read a whole batch of activations from L3 once per block: MobileNetV2 at batch 8 ran 2.4x onnxruntime).
        lead = block.writes[0].region[0].min
        outer_idx = [i for i in spatial if i not in (vec, row)]
        batch = [i for i in outer_idx if isinstance(lead, tirx.Var) and lead.same_as(ivars[i])]
        tile_outer = [loops[i] for i in batch] + [vo] + [loops[i] for i in outer_idx if i not in batch] \
            + ([ro] if row is not None else [])
    else:  # the output's own order: consecutive tiles read neighbouring input
        placed = {vec: vo, **({row: ro} if row is not None else {})}
        tile_outer = [placed.get(i, loops[i]) for i in spatial]
    inner = ([ri] if row is not None else []) + [vt, vi]
    # A depthwise conv runs plane by plane: the parallel loop goes over (batch, channel), and the padded
    # (de-interleaved) copy of one input plane is made right before its tiles read it, from cache.
    serial = [l for l in (ro if row is not None else None, vo) if l is not None] if per_plane else []
    parallel_loops = [l for l in tile_outer if not any(l.same_as(s) for s in serial)]
    height = _window_axis(block, a_index, [i for i in spatial if i not in (vec, row)]) if per_plane else None
    if height is not None and any(l.same_as(loops[height]) for l in parallel_loops):
        # Channels-last, a plane is one output row, and its padded copy would be the window's input rows copied
        # again for every output row (3x the input for a 3x3 window, more work than the conv's own at 56x56x144).
        # A band of output rows per parallel task copies each input row (band + window - 1) / band times.
        band = knobs.band or _band(extents[height], math.prod(extents[i] for i in spatial if i not in (vec, row, height)),
                                   _band_fitting(block, a_index, height))
        if band > 1 and extents[height] % band == 0:
            bo, bi = sch.split(loops[height], [None, band])
            parallel_loops = [bo if l.same_as(loops[height]) else l for l in parallel_loops]
            serial = [bi, *serial]
    if ragged:
        # The row-tile loop stays a loop of its own, for LoopPartition to split off its partial last tile (PARTITION):
        # the tile loops ahead of it run in parallel and it and those after it serially in the same order, or, where
        # nothing ahead of it has more than one iteration (a batch of one in the output's order), the row tiles
        # themselves run in parallel.
        sch.annotate(ro, PARTITION, 1)
        at = [l.same_as(ro) for l in tile_outer].index(True)
        ahead = [l for l in tile_outer[:at] if int(sch.get(l).extent) > 1]
        parallel_loops, serial = (ahead, tile_outer[at:]) if ahead else ([ro], tile_outer[:at] + tile_outer[at + 1:])
    if not parallel_loops:
        per_plane, serial, parallel_loops = False, [], tile_outer
    sch.reorder(*parallel_loops, *serial, *[loops[i] for i in reduce], *inner)
    outer = sch.fuse(*parallel_loops) if len(parallel_loops) > 1 else parallel_loops[0]
    sch.parallel(outer)
    if per_plane:
        for producer in sch.get_producers(anchor):
            if PREPROC not in sch.get(producer).annotations:
                sch.compute_at(producer, outer)
                _plane_copy(sch, producer, outer, stride, lanes_full)
    if row is not None:
        sch.unroll(ri)
    sch.unroll(vt)
    sch.vectorize(vi)
    if per_plane:  # the whole window under the tile: LLVM reuses each loaded input row across taps
        for i in reduce:
            if 1 < extents[i] <= _UNROLL_TAPS:
                sch.unroll(loops[i])
    elif unroll_tap is not None:
        sch.unroll(loops[[v.same_as(unroll_tap) for v in ivars].index(True)])
    init = sch.decompose_reduction(anchor, loops[reduce[0]])
    vectorize_innermost(sch, init)
    at = serial[-1] if serial else outer
    sch.reverse_compute_at(consumer, at)
    # The epilogue under the tile, unrolled in whole vectors: the accumulators are then read at constant offsets
    # and stay in registers (as one loop, or as vectors of a tile's whole row, LLVM stored them to the stack after
    # the reduction and loaded them back: MobileNetV2's 16->96 1x1 at 112x112 0.72 -> 0.59 ms, ResNet-50's
    # 64->256 at 56x56 1.27 -> 1.13 ms).
    _unroll_epilogue(sch, consumer, at, lanes)
    # What else sits at the root (the padding copy, a transpose feeding B) gets the fallback's loops.
    for other in sch.get_child_blocks(sch.get_sblock("root")):
        other_loops = sch.get_loops(other)
        if other_loops and all(int(sch.get(l).kind) == 0 for l in other_loops) and PREPROC not in sch.get(other).annotations:
            schedule_block(sch, other, lanes_full)
    return Tile(kind=kind, rows=rt, vectors=nv, lanes=lanes, packed=packed)


def _unroll_epilogue(sch: s_tir.Schedule, block: Any, at: Any, lanes: int) -> None:
    """Unroll ``block``'s loops below ``at``, its innermost split into vectors of ``lanes`` (vectorized); where that
    does not fit (no loop below ``at``, an innermost loop not a multiple of ``lanes``), just vectorize the innermost.
    Loops are unrolled from the innermost out while they make at most :data:`_EPILOGUE_UNROLL` vectors: an epilogue
    that broadcasts the tile over more (a squeeze-and-excitation block's scale, ``sigmoid(conv) * x`` over a whole
    56x56 map) keeps its outer loops, which unrolled made 18,816 vector statements and 40 s of LLVM per kernel."""
    loops = sch.get_loops(block)
    below = [i for i, loop in enumerate(loops) if sch.get(loop).same_as(sch.get(at))]
    inner = loops[below[0] + 1:] if below else []
    if not inner or int(sch.get(inner[-1]).extent) % lanes:
        vectorize_innermost(sch, block)
        return
    vo, vi = sch.split(inner[-1], [None, lanes])
    vectors = 1
    for loop in reversed([*inner[:-1], vo]):
        vectors *= int(sch.get(loop).extent)
        if vectors > _EPILOGUE_UNROLL:
            break
        sch.unroll(loop)
    sch.vectorize(vi)


def _roles(sch: s_tir.Schedule, anchor: Any):
    """(A read index, B read index, vector iter, row iter, kind, swapped (vector, row) or None) for a
    ``C += A * B`` block, else None."""
    block = sch.get(anchor)
    body = block.body
    if not isinstance(body, tirx.BufferStore) or not isinstance(body.value, tirx.Add):
        return None
    if not any(isinstance(_strip_cast(x), tirx.Mul) for x in (body.value.a, body.value.b)):
        return None
    if len(block.reads) != 2 or len(block.writes) != 1:
        return None
    ivars = [iv.var for iv in block.iter_vars]

    def dims(region) -> list[set[int]]:
        out = []
        for rng in region.region:
            used = {id_ for id_, v in enumerate(ivars) if any(u.same_as(v) for u in undefined_vars(rng.min))}
            out.append(used)
        return out

    a_dims, b_dims, o_dims = dims(block.reads[0]), dims(block.reads[1]), dims(block.writes[0])
    a_index, b_index = 0, 1
    free = _layout_free(sch)
    if block.reads[0].source.name in free and block.reads[1].source.name not in free:
        a_index, b_index, a_dims, b_dims = 1, 0, b_dims, a_dims
    in_a, in_b = set().union(*a_dims) if a_dims else set(), set().union(*b_dims) if b_dims else set()
    spatial = [i for i, iv in enumerate(block.iter_vars) if int(iv.iter_type) != REDUCE and int(iv.dom.extent) > 1]
    reduce = [i for i, iv in enumerate(block.iter_vars) if int(iv.iter_type) == REDUCE]
    out_pos = {}
    for d, used in enumerate(o_dims):
        for i in used:
            out_pos[i] = max(out_pos.get(i, -1), d)
    conv = any(any(r in used for r in reduce) and len(used) > 1 for used in a_dims)
    only_b = [i for i in spatial if i in in_b and i not in in_a]
    if only_b:
        vec = max(only_b, key=lambda i: out_pos.get(i, -1))
        only_a = [i for i in spatial if i in in_a and i not in in_b]
        row = max(only_a, key=lambda i: out_pos.get(i, -1)) if only_a else None
        if conv and row is not None and out_pos.get(row) == len(o_dims) - 1 and _unit_stride(block.reads[a_index], ivars[row]):
            # A stride-1 conv can also run the vector along the output row (contiguous loads of A and stores
            # of C) with output channels as the tile's rows: "conv2d-spatial".
            return a_index, b_index, vec, row, "conv2d", (row, vec)
        return a_index, b_index, vec, row, "conv2d" if conv else "matmul", None
    # Depthwise / grouped conv: the channel indexes both operands; vectorize along the output's innermost axis.
    by_pos = sorted((i for i in spatial if i in out_pos), key=lambda i: out_pos[i])
    if not by_pos:
        return None
    vec = by_pos[-1]
    row = by_pos[-2] if len(by_pos) > 1 else None
    return a_index, b_index, vec, row, "depthwise" if conv else "matmul", None


def _strided_read(expr: Any) -> tuple[Any, int, Any]:
    """An index of the form ``v``, ``s * v``, ``v + r`` or ``s * v + r`` (a conv's input along one axis, ``r`` its
    window tap) as ``(v, s, r)``, ``r`` None without a tap; ``v`` is None for any other form."""
    tap = None
    if isinstance(expr, tirx.Add) and isinstance(expr.b, tirx.Var):
        expr, tap = expr.a, expr.b
    stride = 1
    if isinstance(expr, tirx.Mul) and isinstance(expr.b, tirx.IntImm):
        expr, stride = expr.a, int(expr.b.value)
    return (expr if isinstance(expr, tirx.Var) else None), stride, tap


def _pixel_rows(block: Any, a_index: int, row: int | None, kind: str) -> int | None:
    """The iterator of the output's height, when a conv's rows (its output width) can run along height and width
    fused: a conv whose input and output are both ``[..., h, w, c]`` (channels-last), read with one stride ``s``
    along both axes. A 1x1 unpadded stride-1 one is then a matmul over pixels ``h * W + w``; a windowed or strided
    one reads ``A[s * (p // W) + ry, s * (p % W) + rx]``, whose row addresses the tile computes once per tap,
    outside the reduction over channels, which must be long enough to pay for them (:data:`_FUSED_MIN_CHANNELS`).
    None otherwise."""
    if kind != "conv2d" or row is None:
        return None
    ivars = [iv.var for iv in block.iter_vars]
    taps = {i for i, iv in enumerate(block.iter_vars) if int(iv.iter_type) == REDUCE}

    def plain(expr) -> tuple[int | None, int]:  # ``v``, ``s * v``, either ``+ r`` with a window tap ``r``: (v, s)
        var, stride, tap = _strided_read(expr)
        if tap is not None and not any(j in taps and tap.same_as(v) for j, v in enumerate(ivars)):
            return None, 1
        hits = [j for j, v in enumerate(ivars) if var is not None and var.same_as(v)]
        return (hits[0] if hits else None), stride

    a, out = block.reads[a_index], block.writes[0]
    if len(a.region) != 4 or len(out.region) != 4:
        return None
    a_idx, strides = zip(*(plain(r.min) for r in a.region))
    o_idx, o_strides = zip(*(plain(r.min) for r in out.region))
    h = o_idx[1]
    if h is None or o_idx[2] != row or a_idx[1] != h or a_idx[2] != row or h != row - 1:
        return None
    if set(o_strides) != {1} or strides[1] != strides[2]:
        return None  # the output is written plainly; the input read with one stride along both axes
    if a_idx[3] is None or int(block.iter_vars[a_idx[3]].iter_type) != REDUCE or strides[3] != 1:
        return None  # the input's innermost axis is not the reduction over channels
    windowed = any(int(iv.dom.extent) > 1 for i, iv in enumerate(block.iter_vars) if i in taps and i != a_idx[3])
    if not windowed and strides[1] == 1:
        plain_matmul = all(int(a.source.shape[d]) == int(out.source.shape[d]) for d in (1, 2))
        return h if plain_matmul else None  # else padded
    # A windowed or strided one computes its input addresses per pixel and tap: worth it over a long channel
    # reduction only (a 3x3 conv from 3 or 8 channels ran 1.4x onnxruntime fused, 0.8-1.0x along the width).
    return h if int(block.iter_vars[a_idx[3]].dom.extent) >= _FUSED_MIN_CHANNELS else None


def _deinterleave_strided_input(sch: s_tir.Schedule, anchor: Any, a_index: int, var: Any):
    """For a vector along ``x`` reading ``A[..., s*x + rx]`` (a strided conv), store the producer of ``A`` (its
    padding block) de-interleaved as ``A[..., w % s, w // s]``: with ``rx`` unrolled every tap is then a
    contiguous vector load instead of a gather. Returns (the tap variable to unroll, the stride), or (None, 1)."""
    block = sch.get(anchor)
    region = block.reads[a_index]
    last = region.region[-1].min
    if not isinstance(last, tirx.Add):
        return None, 1
    terms = [last.a, last.b]
    scaled = [t for t in terms if isinstance(t, tirx.Mul) and isinstance(t.a, tirx.Var) and t.a.same_as(var)
              and isinstance(t.b, tirx.IntImm)]
    taps = [t for t in terms if isinstance(t, tirx.Var)]
    if len(scaled) != 1 or len(taps) != 1:
        return None, 1
    stride = int(scaled[0].b.value)
    width = int(region.source.shape[-1])
    if stride < 2:
        return None, 1
    producers = [p for p in sch.get_producers(anchor) if any(w.source.same_as(region.source) for w in sch.get(p).writes)]
    if len(producers) != 1:
        return None, 1
    split = lambda *idx: (*idx[:-1], idx[-1] % stride, idx[-1] // stride)  # noqa: E731
    sch.transform_layout(producers[0], ("write", 0), split, pad_value=None if width % stride == 0 else 0.0)
    return taps[0], stride


def _plane_copy(sch: s_tir.Schedule, block: Any, loop: Any, stride: int, lanes: int) -> None:
    """Make the padding copy computed under ``loop`` cheap: where the innermost axis is padded, a fill of the pad
    value, then a copy of the interior without conditions (``decompose_padding``); else one pass whose condition
    does not vary along the vector. A contiguous copy is vectorized; a de-interleaving
    one walks its input in steps of ``stride`` with the phases unrolled, so the division by the stride folds
    away and one load feeds every phase (LLVM's interleaved access)."""
    loops = sch.get_loops(block)
    inner = loops[[sch.get(l).same_as(sch.get(loop)) for l in loops].index(True) + 1:]
    if not inner:  # a one-pixel plane: nothing to split
        return
    copy = sch.get(block)
    if len(copy.reads) == 1 and int(copy.reads[0].source.shape[-1]) == int(copy.writes[0].source.shape[-1]):
        # Padded along outer axes only (channels-last: rows and columns of whole pixels): each pixel's channels
        # are copied or zeroed as a whole, the condition the same for every lane. One pass, not a fill of the
        # whole band and then a copy of its interior over it (MobileNetV2's stride-2 depthwise conv at 112x112:
        # 0.36 -> 0.28 ms).
        blocks = [block]
    else:
        try:
            blocks = [sch.decompose_padding(block, inner[0]), block]
        except Exception:  # noqa: BLE001 - not a padding pattern
            blocks = [block]
    for b in blocks:
        if len(sch.get_loops(b)) <= len(loops) - len(inner):
            continue  # no loop of its own under the plane loop
        last = sch.get_loops(b)[-1]
        extent = int(sch.get(last).extent)
        if stride > 1 and extent % stride == 0:
            sch.unroll(sch.split(last, [None, stride])[1])
        elif stride == 1 and extent % lanes == 0:
            sch.vectorize(sch.split(last, [None, lanes])[1])


def _window_axis(block: Any, a_index: int, candidates: list[int]) -> int | None:
    """The one of ``candidates`` (iterator indices) that reads A through a window (``A[..., s*y + ry, ...]`` with a
    reduction of more than one tap): a channels-last depthwise conv's output height; None if there is none."""
    ivars = [iv.var for iv in block.iter_vars]
    taps = [iv.var for iv in block.iter_vars if int(iv.iter_type) == REDUCE and int(iv.dom.extent) > 1]
    for rng in block.reads[a_index].region:
        used = undefined_vars(rng.min)
        if not any(any(v.same_as(t) for t in taps) for v in used):
            continue
        for i in candidates:
            if any(v.same_as(ivars[i]) for v in used):
                return i
    return None


def _band(height: int, others: int, largest: int = _BAND_MAX) -> int:
    """Output rows per parallel task for a channels-last depthwise conv of ``height`` rows (``others``: the other
    parallel iterations, the batch): the largest divisor up to :data:`_BAND_MAX` (and ``largest``) that leaves at
    least :data:`_BAND_TASKS` tasks (else half that many), 1 where none does."""
    for tasks in (_BAND_TASKS, _BAND_TASKS // 2):
        for band in range(min(_BAND_MAX, largest, height), 1, -1):
            if height % band == 0 and others * height // band >= tasks:
                return band
    return 1


def _band_fitting(block: Any, a_index: int, height: int) -> int:
    """The most output rows whose padded input rows (a band's copy, ``(rows - 1) * stride + window`` rows of the
    padded input) fit in :data:`_BAND_SCRATCH_BYTES`; :data:`_BAND_MAX` where the read is not ``s * y + ry``.
    MobileNetV2's stride-2 depthwise conv at 112x112x96 read its 7-row band's 15 input rows (657 KB) from beyond
    L2: 0.40 ms; 4 rows (9 input rows, 394 KB): 0.33 ms."""
    ivar = block.iter_vars[height].var
    region = block.reads[a_index]
    for axis, rng in enumerate(region.region):
        var, stride, tap = _strided_read(rng.min)
        if var is None or not var.same_as(ivar):
            continue
        taps = [iv for iv in block.iter_vars if tap is not None and iv.var.same_as(tap)]
        window = int(taps[0].dom.extent) if taps else 1
        row_bytes = math.prod(int(d) for d in region.source.shape[axis + 1:]) * DataType(region.source.dtype).bits // 8
        rows = _BAND_SCRATCH_BYTES // max(row_bytes, 1)
        return max(1, (rows - window) // stride + 1)
    return _BAND_MAX


def _window_only(sch: s_tir.Schedule, anchor: Any, a_index: int) -> bool:
    """Every reduction of the anchor runs over a window (``A[..., y + ry, ...]``), none over channels: a
    depthwise conv, not a grouped one (whose ``A[ff // m * k + rc]`` mixes a reduction with an iterator of
    ``B``), so one output plane reads exactly one input plane."""
    block = sch.get(anchor)
    b_vars = [v for rng in block.reads[1 - a_index].region for v in undefined_vars(rng.min)]
    for iv in block.iter_vars:
        if int(iv.iter_type) != REDUCE or int(iv.dom.extent) == 1:
            continue
        uses = [undefined_vars(rng.min) for rng in block.reads[a_index].region
                if any(v.same_as(iv.var) for v in undefined_vars(rng.min))]
        if not uses or any(len(u) < 2 for u in uses):
            return False  # a plain reduction index: over channels
        for used in uses:
            others = [v for v in used if not v.same_as(iv.var)]
            if any(any(o.same_as(bv) for bv in b_vars) for o in others):
                return False
    return True


def _unit_stride(region, var) -> bool:
    """The innermost index of ``region`` is ``var`` or ``var + r``: consecutive ``var`` read consecutive elements."""
    last = region.region[-1].min
    terms = [last.a, last.b] if isinstance(last, tirx.Add) else [last]
    return any(isinstance(t, tirx.Var) and t.same_as(var) for t in terms) and \
        all(isinstance(t, tirx.Var) for t in terms)


def _innermost_is(region, var) -> bool:
    """The innermost index of ``region`` is ``var`` itself: an NCHW conv's input along its row (a tall tile's rows
    are then consecutive floats of one channel; channels-last they would be one pixel, ``C`` floats, apart each and
    touch that many cache lines per step: ResNet-50's 1024->256 at 14x14 ran 2x slower), or a channels-last
    output along its vector iterator."""
    last = region.region[-1].min
    return isinstance(last, tirx.Var) and last.same_as(var)


#: Weight bytes from which a channels-last kernel keeps one packed panel of weights in cache while every row
#: reuses it (weights outermost) rather than sweeping all of them per row tile: measured on ResNet-50 and
#: MobileNetV2 at 1 thread, 128 KiB was as good as always on ResNet-50 and 10% faster on MobileNetV2; 1 MiB
#: made ResNet-50's deep convs 30% slower.
_WEIGHTS_OUTER_FROM = 128 * 1024


def _nbytes(buffer) -> int:
    n = DataType(buffer.dtype).bits // 8
    for d in buffer.shape:
        n *= int(d)
    return n


def _strip_cast(expr):
    return expr.value if isinstance(expr, tirx.Cast) else expr


def _layout_free(sch: s_tir.Schedule) -> set[str]:
    func = sch.mod["main"]
    attrs = func.attrs or {}
    idx = attrs["layout_free_buffers"] if "layout_free_buffers" in attrs else []
    return {func.params[int(i)].name for i in idx}


def _one_to_one(sch: s_tir.Schedule, block_rv: Any, loops: list) -> bool:
    """Each block iterator is bound to exactly its own loop (as LegalizeOps writes them)."""
    for loop, iv in zip(loops, sch.get(block_rv).iter_vars):
        if int(sch.get(loop).extent) != int(iv.dom.extent):
            return False
    return True


#: Full row tiles from which the template takes a tile whose rows do not divide the row extent (see above).
_RAGGED_TILES = 4


def _tile_sizes(e_vec: int, e_row: int, lanes_full: int, registers: int, ragged_from: int = 0) -> tuple[int, int, int]:
    """(rt, nv, lanes): the register tile for extents along the vector and row iterators.

    The vector split is kept exact (a predicate on the vector lane would scalarize the whole inner loop), so
    ``lanes`` may be shorter or oddly sized: 14 -> 7 lanes, 13 -> 13 lanes (LLVM splits it in two). Rows divide
    exactly unless ``ragged_from`` full row tiles run (the tail then runs as a loop of its own, :data:`PARTITION`;
    a tail's predicate inside the reduction loop made a 3x3 conv 10x slower). The tile maximises
    multiply-adds per load, ``rt*nv / (rt + nv)``, with accumulators, B vectors and the broadcast in registers."""
    lanes = _lanes(e_vec, lanes_full)
    best, best_score = (1, 1), -1.0
    # Up to 8 vectors: a matrix-vector product to 1000 classes (125 vectors) has only 1 and 5 dividing it; with 1,
    # one accumulator chain ran at half onnxruntime's speed (2048 -> 1000: 0.33 -> 0.15 ms, onnxruntime 0.17).
    for nv in range(1, 9):
        for rt in range(1, min(e_row, 16) + 1):
            if not _tile_fits(rt, nv, e_vec, e_row, lanes, registers, ragged_from):
                continue
            score = _tile_score(rt, nv)
            if score > best_score + 1e-9:
                best, best_score = (rt, nv), score
    return best[0], best[1], lanes


def _tile_score(rt: int, nv: int) -> float:
    """Multiply-adds per load of a register tile: ``rt`` broadcasts and ``nv`` vector loads feed ``rt * nv``."""
    return rt * nv / (rt + nv)


#: Reduction length from which a 1x1 conv takes a tall one-vector tile (:func:`_tall_tile`).
_TALL_FROM = 256


def _tall_tile(e_row: int, rt: int, nv: int, registers: int) -> tuple[int, int]:
    """A 1x1 conv over many channels: one vector of output channels and as many rows (consecutive floats of its
    row-packed input) as the registers hold, when that is at least 7: twice the accumulators of a 4x2 tile keep both
    FMA pipes busy through a long reduction (ResNet-50 at 1 thread: 1024->256 at 14x14 2.19 -> 1.39 ms, 256->128 at
    56x56 4.55 -> 3.52 ms), while a short one (64 channels) spends its time writing the tile out, where 4x2 is better."""
    tall = max((r for r in range(1, registers - 1) if e_row % r == 0), default=1)
    return (tall, 1) if tall >= 7 else (rt, nv)


def _tile_fits(rt: int, nv: int, e_vec: int, e_row: int, lanes: int, registers: int, ragged_from: int = 0) -> bool:
    """A register tile (rt, nv) that divides both iterators (with ``ragged_from``, rows need not divide where at
    least that many full row tiles run) and keeps its accumulators, B vectors and the broadcast in ``registers``."""
    groups = e_vec // lanes if e_vec % lanes == 0 else 0
    rows_ok = e_row % rt == 0 or (ragged_from > 0 and e_row // rt >= ragged_from)
    if rt < 1 or nv < 1 or not rows_ok or (groups == 0 and nv > 1) or (groups and groups % nv):
        return False
    return rt * nv + nv + 1 <= registers


def _lanes(extent: int, lanes_full: int) -> int:
    """Vector length along an axis of ``extent``: the full width when it divides, else a divisor of at least half
    the width, else the whole axis when it fits in two vectors, else the full width with a predicated tail."""
    if extent % lanes_full == 0:
        return lanes_full
    divisor = max(d for d in range(1, lanes_full + 1) if extent % d == 0)
    if 2 * divisor >= lanes_full:
        return divisor
    return extent if extent <= 2 * lanes_full else lanes_full


def _collapse_epilogue(sch: s_tir.Schedule, anchor: Any):
    """Inline the anchor's chain of elementwise consumers into the last one; that block, or None."""
    func = sch.mod["main"]
    outputs = {p.name for p in func.params}
    for _ in range(64):
        consumers = sch.get_consumers(anchor)
        if len(consumers) != 1:
            return None
        block = consumers[0]
        if any(w.source.name in outputs for w in sch.get(block).writes):
            return block
        if sch.get_consumers(block) and len(sch.get_consumers(block)) == 1:
            try:
                sch.compute_inline(block)
                continue
            except Exception:  # noqa: BLE001
                return None
        return None
    return None


def _pack_weight(sch: s_tir.Schedule, anchor: Any, b_index: int, vec_var: Any, tile_n: int, reduce_order: list) -> bool:
    """Read B through a layout-rewrite block packing it as ``[n/T, <other dims>, <reduction dims in loop order>, T]``:
    the tile walks it sequentially."""
    block = sch.get(anchor)
    region = block.reads[b_index]
    if region.source.name not in _layout_free(sch):
        return False
    dims = [d for d, rng in enumerate(region.region) if isinstance(rng.min, tirx.Var) and rng.min.same_as(vec_var)]
    if len(dims) != 1:
        return False
    d = dims[0]
    shape = [int(s) for s in region.source.shape]
    if shape[d] % tile_n or tile_n == 1:
        return False
    def rank(j: int) -> int:
        var = region.region[j].min
        for r, rv in enumerate(reduce_order):
            if isinstance(var, tirx.Var) and var.same_as(rv):
                return 1 + r
        return 0

    order = sorted((j for j in range(len(shape)) if j != d), key=rank)
    cache = sch.cache_read(anchor, b_index, "global")
    sch.transform_layout(anchor, ("read", b_index), lambda *idx: (idx[d] // tile_n, *[idx[j] for j in order], idx[d] % tile_n))
    sch.annotate(cache, PREPROC, True)
    return True




def _pack_rows(sch: s_tir.Schedule, anchor: Any, a_index: int, row_var: Any, rt: int) -> bool:
    """A 1x1, stride-1 NCHW conv reads ``A[n, c, h, w]`` through its input copy (TOPI's ``pad_temp``): store that
    copy as ``[n, h, w // rt, c, w % rt]``, so a tile's ``rt`` broadcasts per channel are consecutive and a tile
    walks its rows of ``A`` sequentially instead of one cache line per channel (ResNet-50 and MobileNetV2: about 5%
    faster at 1 thread)."""
    block = sch.get(anchor)
    region = block.reads[a_index]
    unit = [iv.var for iv in block.iter_vars if int(iv.iter_type) == REDUCE and int(iv.dom.extent) == 1]
    reduce_vars = [iv.var for iv in block.iter_vars if int(iv.iter_type) == REDUCE and int(iv.dom.extent) > 1]

    def plain(expr):  # ``x + rx`` with a one-tap ``rx`` (a 1x1 window) is ``x``
        if isinstance(expr, tirx.Add) and isinstance(expr.b, tirx.Var) and any(expr.b.same_as(u) for u in unit):
            return plain(expr.a)
        return expr if isinstance(expr, tirx.Var) else None

    index = [plain(rng.min) for rng in region.region]
    if len(index) != 4 or index[3] is None or not index[3].same_as(row_var) or index[2] is None:
        return False
    if index[1] is None or not any(index[1].same_as(v) for v in reduce_vars):
        return False  # the channel is not the reduction (a grouped or depthwise conv)
    if int(region.source.shape[3]) % rt:
        return False
    producers = [p for p in sch.get_producers(anchor) if any(w.source.same_as(region.source) for w in sch.get(p).writes)]
    if len(producers) != 1 or PREPROC in sch.get(producers[0]).annotations:
        return False
    sch.transform_layout(producers[0], ("write", 0), lambda n, c, h, w: (n, h, w // rt, c, w % rt))
    return True



def _inline_plain_copy(sch: s_tir.Schedule, anchor: Any, a_index: int) -> bool:
    """A conv without padding still reads its input through TOPI's ``pad_temp``, a plain copy: read the input
    itself (channels-last, a 1x1 conv's copy was a pass over its whole input: 512->128 at 28x28, 0.3 of 1.5 ms)."""
    block = sch.get(anchor)
    region = block.reads[a_index]
    producers = [p for p in sch.get_producers(anchor) if any(w.source.same_as(region.source) for w in sch.get(p).writes)]
    if len(producers) != 1 or PREPROC in sch.get(producers[0]).annotations:
        return False
    body = sch.get(producers[0]).body
    if type(body).__name__ != "BufferStore" or type(body.value).__name__ not in ("BufferLoad", "TensorLoad"):
        return False  # a real padding copy (if_then_else): inlined, its condition would run in the reduction
    try:
        sch.compute_inline(producers[0])
    except Exception:  # noqa: BLE001 - not inlinable here: the copy stays
        return False
    return True


#: Channels from which a conv's padded input copy is stored channels-last (below that the transposed copy costs
#: more than it saves: a 3-channel stem conv).
_CHANNELS_LAST_FROM = 32


def _channels_last(sch: s_tir.Schedule, anchor: Any, a_index: int) -> bool:
    """A KxK NCHW conv reducing over many channels (innermost, the longest reduction) reads its padded input
    ``pad_temp[n, c, y + ry, x + rx]`` one plane apart per step: store that copy as ``[n, y, x, c]`` so
    consecutive channels are consecutive floats (ResNet-50's 256-channel 3x3 at 14x14: 5.1 -> 3.9 ms)."""
    block = sch.get(anchor)
    region = block.reads[a_index]
    channel = region.region[1].min if len(region.region) == 4 else None
    reduce = [iv for iv in block.iter_vars if int(iv.iter_type) == REDUCE]
    ivs = [iv for iv in reduce if isinstance(channel, tirx.Var) and channel.same_as(iv.var)]
    if not ivs or int(ivs[0].dom.extent) < _CHANNELS_LAST_FROM:
        return False
    producers = [p for p in sch.get_producers(anchor) if any(w.source.same_as(region.source) for w in sch.get(p).writes)]
    if len(producers) != 1 or PREPROC in sch.get(producers[0]).annotations:
        return False
    sch.transform_layout(producers[0], ("write", 0), lambda n, c, h, w: (n, h, w, c))
    return True
