"""XGBoost loader: one model file (JSON, UBJSON or the legacy binary of xgboost 1.x), compiled as one forest kernel.

Treelite reads all three formats (xgboost 3 no longer reads the binary that SageMaker's 1.x containers wrote). The
forest becomes a hand-scheduled TIR kernel: every tree's nodes as arrays (padded to full depth when that stays
small, so a child is ``2i+1+right``; otherwise explicit child indices with leaves pointing at themselves), walked a
fixed number of levels for 16 rows at a time (16 independent chains of loads in flight), parallel over blocks of
rows; a NaN feature takes the node's default branch; the objective's transform (sigmoid, softmax, ...) is applied as
the rows are written. A Relax ``main`` calls it with a symbolic row count, so one package serves any batch, and it
shares the compile, package, runtime and verification path of every other framework.

Never unpickled: a pickled Booster is refused with the way to save a model file instead.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..datainput import TensorSpec
from ..errors import InputConfigurationError
from .base import LoadedModel, Loader

#: How XGBoost models get into Relax; named in the manifest and in conversion errors.
ROUTE = "xgboost ({fmt}) -> treelite.frontend -> neocompile forest kernel (TIR, call_tir)"
INPUT = "data"
ROWS = "N"  # the symbolic row count of the input and output
ROW_BLOCK = 16  # rows walked together through one tree
#: The fraction of the verification inputs that is NaN: every job checks the default branches too.
MISSING_IN_VERIFICATION = 0.1
#: Full-depth padding is used while it costs at most this many leaves over all trees (else child indices).
PADDED_LEAF_BUDGET = 1 << 20
SAVE_HINT = ("Save the model with Booster.save_model('xgboost-model.json') (JSON) or 'xgboost-model.ubj' (UBJSON); "
             "models saved by xgboost 1.x in its binary format are read too")
#: Postprocessors (treelite's names) that the kernel implements.
_POSTPROCESSORS = {"identity", "identity_multiclass", "sigmoid", "softmax", "max_index", "exponential",
                   "exponential_standard_ratio", "logarithm_one_plus_exp", "hinge", "multiclass_ova"}
_PICKLE_PROTOCOLS = {2, 3, 4, 5}


# -- reading the file ------------------------------------------------------------------------------------------------
def import_treelite() -> Any:
    """``import treelite``, also as the load sandbox's unprivileged user: treelite probes
    ``<sys.base_prefix>/lib/libtreelite.so`` with pathlib, which raises PermissionError where the base Python is
    unreadable (installed under /root); its own library is inside the package, so the probe looks in the
    environment's prefix instead while it imports."""
    import sys

    if "treelite" in sys.modules:
        return sys.modules["treelite"]
    saved = sys.base_prefix
    try:
        sys.base_prefix = sys.prefix
        import treelite
    finally:
        sys.base_prefix = saved
    return treelite


def sniff_format(path: Path) -> str:
    """"json", "ubjson" or "legacy" from the file's first bytes; raise for a pickle or an empty file."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise InputConfigurationError(f"XGBoost model file {path.name} is empty; {SAVE_HINT}")
    if head[0] == 0x80 and len(head) > 1 and head[1] in _PICKLE_PROTOCOLS:
        raise InputConfigurationError(
            f"XGBoost model file {path.name} is a Python pickle (a pickled Booster or estimator); neocompile never "
            f"unpickles model files, because unpickling runs code. {SAVE_HINT}")
    text = head.lstrip()
    if text[:1] == b"{":
        return "json" if text[1:].lstrip()[:1] in (b'"', b"}") else "ubjson"
    return "legacy"


def _load_treelite(data: bytes, name: str, fmt: str) -> Any:
    """The treelite model from the file's bytes (treelite's path loaders resolve the absolute path, which the load
    sandbox's user may not traverse; it reads the file by its relative name)."""
    import ctypes

    treelite = import_treelite()
    try:
        if fmt == "json":
            return treelite.frontend.from_xgboost_json(data, allow_unknown_field=True)
        if fmt == "ubjson":
            return treelite.frontend.from_xgboost_ubjson(data, allow_unknown_field=True)
        # The C API's in-memory legacy reader, which the Python package does not wrap (treelite is pinned):
        # (buffer, length, config JSON, out handle), as its file reader takes (path, config JSON, out handle).
        from treelite.core import _LIB, _check_call

        handle = ctypes.c_void_p()
        buffer = ctypes.create_string_buffer(data, len(data))
        _check_call(_LIB.TreeliteLoadXGBoostModelLegacyBinaryFromMemoryBuffer(
            buffer, ctypes.c_size_t(len(data)), ctypes.c_char_p(b"{}"), ctypes.byref(handle)))
        return treelite.Model(handle=handle)
    except Exception as exc:  # treelite raises TreeliteError with the parser's message
        raise InputConfigurationError(
            f"Treelite failed to convert XGBoost model {name} (read as {_FORMAT_NAMES[fmt]}): {_last_line(exc)}. "
            f"Is it an XGBoost model file? {SAVE_HINT}") from exc


_FORMAT_NAMES = {"json": "JSON", "ubjson": "UBJSON", "legacy": "the legacy binary format of xgboost 1.x"}


def _info_xgboost(data: bytes, name: str) -> dict[str, Any]:
    """Objective, version, best iteration, rounds and booster of a JSON or UBJSON model, as xgboost reads them."""
    import xgboost

    try:
        booster = xgboost.Booster(model_file=bytearray(data))
        config = json.loads(booster.save_config())
    except Exception as exc:
        raise InputConfigurationError(
            f"xgboost {xgboost.__version__} cannot read XGBoost model {name}: {_last_line(exc)}. Is it an XGBoost model file? {SAVE_HINT}") from exc
    learner = config.get("learner", {})
    best = booster.attributes().get("best_iteration")
    version = config.get("version") or []
    return {
        "objective": learner.get("objective", {}).get("name", ""),
        "booster": learner.get("gradient_booster", {}).get("name", ""),
        "best_iteration": int(best) if best not in (None, "") else None,
        "rounds": booster.num_boosted_rounds(),
        "saved_by": "xgboost " + ".".join(str(v) for v in version) if version else "xgboost",
        "base_score": learner.get("learner_model_param", {}).get("base_score"),
    }


def read_legacy_header(data: bytes) -> dict[str, Any]:
    """What treelite does not keep from an xgboost 1.x binary model: objective, version, parallel trees and the
    learner attributes (``best_iteration``), read by walking the file's layout (xgboost 1.x ``Learner::SaveModel``)."""
    pos = 4 if data[:4] == b"binf" else 0

    def take(fmt: str) -> tuple:
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise ValueError("the file ends inside its header")
        out = struct.unpack_from(fmt, data, pos)
        pos += size
        return out

    def string() -> str:
        (length,) = take("<Q")
        if length > len(data) - pos:
            raise ValueError("a string length runs past the end of the file")
        (raw,) = take(f"<{length}s")
        return raw.decode("utf-8", "replace")

    base_score, num_feature, num_class, extra_attrs, _metrics, major, minor, _num_target = take("<fIiiiIII")
    take("<26i")
    objective, booster = string(), string()
    num_trees, num_roots = take("<ii")
    take("<iiq")  # num_feature, pad, pad
    num_output_group, _size_leaf_vector = take("<ii")
    take("<32i")
    for _ in range(max(num_trees, 0)):
        tree = take("<37i")  # TreeParam: num_roots, num_nodes, num_deleted, max_depth, num_feature, size_leaf_vector
        pos += tree[1] * (20 + 16)  # nodes, then their stats
        if tree[5] != 0 and major < 2:
            (length,) = take("<Q")
            pos += 4 * length
    pos += 4 * max(num_trees, 0)  # tree_info
    if booster == "dart":
        (length,) = take("<Q")
        pos += 4 * length
    attributes: dict[str, str] = {}
    if extra_attrs and pos < len(data):
        (count,) = take("<Q")
        for _ in range(count):
            key = string()
            attributes[key] = string()
    best = attributes.get("best_iteration")
    parallel = num_roots if (major, minor) >= (1, 6) else 1
    return {
        "objective": objective, "booster": booster, "base_score": base_score, "num_class": num_class,
        "num_feature": num_feature, "best_iteration": int(best) if best not in (None, "") else None,
        "rounds": num_trees // max(1, max(num_output_group, 1) * max(parallel, 1)) if num_trees else 0,
        "saved_by": f"xgboost {major}.{minor} (legacy binary)", "attributes": attributes,
    }


def _last_line(exc: BaseException) -> str:
    """The message of a treelite or xgboost error: its first line without the "[hh:mm:ss] file.cc:123: " prefix."""
    import re

    lines = [l for l in str(exc).strip().splitlines() if l.strip() and not l.lstrip().startswith(("[bt]", "Stack trace"))]
    return re.sub(r"^\[[0-9:]+\] \S+:\d+: ", "", lines[0].strip()) if lines else type(exc).__name__


# -- the forest as arrays ---------------------------------------------------------------------------------------------
class Forest:
    """The trees a prediction uses, as the kernel's arrays.

    ``layout`` "padded": ``node``/``thr`` hold the internal nodes of a full binary tree of depth ``depth`` in heap
    order, ``leaf`` its ``2**depth`` leaves (a leaf above the last level is copied to every leaf below it, so the
    tests on the padding nodes do not matter), chosen while it costs at most ``budget`` leaves (by default
    PADDED_LEAF_BUDGET, or 8 per real node if more). "linked": ``node``/``thr``/``leaf`` per node, ``child`` the two
    children (a leaf is its own child, so every row walks ``depth`` levels). ``node`` packs ``feature << 1 |
    default_left``."""

    def __init__(self, model: Any, used: int, budget: int | None = None):
        header = model.get_header_accessor()
        self.num_feature = int(header.get_field("num_feature")[0])
        num_target = int(header.get_field("num_target")[0])
        num_class = [int(c) for c in header.get_field("num_class")]
        if list(header.get_field("leaf_vector_shape")) != [1, 1]:
            raise InputConfigurationError(
                "XGBoost model has vector leaves (multi_strategy='multi_output_tree'); neocompile compiles trees with "
                "one output per tree (the default multi_strategy='one_output_per_tree')")
        if int(header.get_field("average_tree_output")[0]):
            raise InputConfigurationError("XGBoost model averages its trees' outputs; expected a boosted (summed) forest")
        self.num_class = max(num_class)
        self.groups = num_target * self.num_class
        target_id = np.asarray(header.get_field("target_id"), dtype=np.int64)[:used]
        class_id = np.asarray(header.get_field("class_id"), dtype=np.int64)[:used]
        self.group = (np.maximum(target_id, 0) * self.num_class + np.maximum(class_id, 0)).astype("int32")
        self.base = np.asarray(header.get_field("base_scores"), dtype=np.float64).reshape(-1).astype("float32")
        if self.base.size == 1 and self.groups > 1:
            self.base = np.repeat(self.base, self.groups)
        self.postprocessor = str(header.get_field("postprocessor"))
        self.sigmoid_alpha = float(header.get_field("sigmoid_alpha")[0])
        self.ratio_c = float(header.get_field("ratio_c")[0])
        trees = [_tree_arrays(model.get_tree_accessor(i), i, self.num_feature) for i in range(used)]
        if not trees:  # a model with no trees (or best_iteration before the first): its base scores only
            trees, self.group = [_stump()], np.zeros(1, "int32")
        self.num_trees = len(trees)
        self.depth = max(1, max(t["depth"] for t in trees))
        self.nodes = int(sum(t["count"] for t in trees))
        budget = max(PADDED_LEAF_BUDGET, 8 * self.nodes) if budget is None else budget
        self.layout = "padded" if len(trees) << self.depth <= budget and self.depth <= 24 else "linked"
        (self._padded if self.layout == "padded" else self._linked)(trees)

    def _padded(self, trees: list[dict[str, np.ndarray]]) -> None:
        d, inner = self.depth, (1 << self.depth) - 1
        self.node = np.zeros((len(trees), inner), "int32")
        self.thr = np.zeros((len(trees), inner), "float32")
        self.leaf = np.zeros((len(trees), inner + 1), "float32")
        self.child = None
        for t, tree in enumerate(trees):
            stack = [(0, 0, 0)]  # (node, heap position, level)
            while stack:
                nid, pos, level = stack.pop()
                if tree["left"][nid] < 0:
                    span = 1 << (d - level)
                    first = (pos + 1) * span - 1 - inner
                    self.leaf[t, first:first + span] = tree["value"][nid]
                    continue
                self.node[t, pos] = tree["code"][nid]
                self.thr[t, pos] = tree["thr"][nid]
                stack.append((int(tree["left"][nid]), 2 * pos + 1, level + 1))
                stack.append((int(tree["right"][nid]), 2 * pos + 2, level + 1))

    def _linked(self, trees: list[dict[str, np.ndarray]]) -> None:
        width = max(t["count"] for t in trees)
        self.node = np.zeros((len(trees), width), "int32")
        self.thr = np.zeros((len(trees), width), "float32")
        self.leaf = np.zeros((len(trees), width), "float32")
        self.child = np.tile(np.repeat(np.arange(width, dtype="int32"), 2), (len(trees), 1))
        for t, tree in enumerate(trees):
            n = tree["count"]
            inner = tree["left"] >= 0
            self.node[t, :n] = np.where(inner, tree["code"], 0)
            self.thr[t, :n] = np.where(inner, tree["thr"], 0)
            self.leaf[t, :n] = np.where(inner, 0, tree["value"])
            idx = np.arange(n)
            self.child[t, 2 * idx] = np.where(inner, tree["left"], idx)
            self.child[t, 2 * idx + 1] = np.where(inner, tree["right"], idx)

    @property
    def output_1d(self) -> bool:
        return self.groups == 1 or self.postprocessor == "max_index"

    def arrays(self) -> list[np.ndarray]:
        extra = [self.child] if self.child is not None else []
        return [self.node, ordered_keys(self.thr), *extra, self.leaf, self.group, self.base]

    def describe(self) -> dict[str, Any]:
        return {"Trees": self.num_trees, "Depth": self.depth, "Nodes": self.nodes, "Layout": self.layout,
                "Groups": self.groups, "RowsPerTreeWalk": ROW_BLOCK}


def _tree_arrays(tree: Any, index: int, num_feature: int) -> dict[str, Any]:
    """One treelite tree as flat arrays, checked for what the kernel computes (numeric ``x < threshold`` tests)."""
    get = tree.get_field
    if int(get("has_categorical_split")[0]):
        raise InputConfigurationError(
            f"XGBoost model tree {index} has categorical splits (enable_categorical); neocompile compiles numerical "
            "splits only: one-hot or ordinal-encode categorical features before training")
    left = np.asarray(get("cleft"), dtype=np.int64)
    right = np.asarray(get("cright"), dtype=np.int64)
    feature = np.asarray(get("split_index"), dtype=np.int64)
    inner = left >= 0
    cmp = np.asarray(get("cmp"))
    if np.any(cmp[inner] != 2):  # treelite Operator kLT: xgboost's test is x < threshold
        raise InputConfigurationError(f"XGBoost model tree {index} has a split that is not 'x < threshold'")
    if np.any(feature[inner] >= num_feature) or np.any(feature[inner] < 0):
        raise InputConfigurationError(f"XGBoost model tree {index} splits on a feature beyond num_feature={num_feature}")
    default_left = np.asarray(get("default_left"), dtype=np.int64)
    # Depth of every node from its parent's (xgboost numbers children after their parents).
    count = len(left)
    depth = np.zeros(count, np.int64)
    order = np.arange(count)
    for nid in order[inner]:
        depth[left[nid]] = depth[right[nid]] = depth[nid] + 1
    return {
        "count": count, "left": left, "right": right, "depth": int(depth.max()) if count else 0,
        "code": np.where(inner, (feature << 1) | (default_left & 1), 0).astype("int32"),
        "thr": np.asarray(get("threshold"), dtype=np.float64).astype("float32"),
        "value": np.asarray(get("leaf_value"), dtype=np.float64).astype("float32"),
    }


def _stump() -> dict[str, Any]:
    zero = np.zeros(1, np.int64)
    return {"count": 1, "left": zero - 1, "right": zero - 1, "depth": 0, "code": zero.astype("int32"),
            "thr": np.zeros(1, "float32"), "value": np.zeros(1, "float32")}


# -- the kernel --------------------------------------------------------------------------------------------------------
#: A NaN's key: above every other key (+inf's is 0x7F800000), so a NaN goes right unless its node says default-left.
NAN_KEY = 0x7FC00000


def ordered_keys(values: np.ndarray) -> np.ndarray:
    """float32 -> int32 keys whose integer order is the floats' order (-0.0 and 0.0 one key, as they compare equal):
    the kernel compares keys, so a test is two integer compares (NaN included) and no branch. Keys of the input
    rows are made the same way inside the kernel."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.int32)
    bits = np.where(bits == np.int32(-2**31), np.int32(0), bits)
    keys = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits).astype(np.int32)
    return np.where(np.isnan(values), np.int32(NAN_KEY), keys).astype(np.int32)


def forest_kernel(forest: Forest) -> Any:
    """The TIR PrimFunc ``(data[N, F], node, thr, [child,] leaf, group, base) -> out[N] | out[N, K]``, scheduled by
    hand: parallel over blocks of ``ROW_BLOCK`` rows, copied once as ordered integer keys; per tree, level by level,
    all the block's rows advance one node (independent loads the CPU overlaps), with one integer compare per test in
    a block without NaN and two (no branch) in a block with one. ``thr`` holds the thresholds' keys.
    Measured at 1 thread (100 trees of depth 6, 10,000 x 20): 9.0 ms dense and 12.7 ms with 10% NaN, against 13.6
    and 24.6 ms for xgboost 3.2's inplace_predict, and 10.3 / 17.0 ms for the float-compare walk with a NaN branch
    this replaced."""
    from tvm.script import tirx as T

    NT, D, F, K, R = forest.num_trees, forest.depth, forest.num_feature, forest.groups, ROW_BLOCK
    W = forest.node.shape[1]
    L = forest.leaf.shape[1]
    padded = forest.layout == "padded"
    post = forest.postprocessor
    alpha, ratio = forest.sigmoid_alpha, forest.ratio_c
    one_d = forest.output_1d
    child_shape = (NT, 2 * W) if not padded else (1, 1)

    # Plain loops in a root block are outside what TVMScript's well-formedness check accepts; TVM lowers it as written.
    @T.prim_func(private=True, check_well_formed=False)
    def kernel(var_x: T.handle, node: T.Buffer((NT, W), "int32"), thr: T.Buffer((NT, W), "int32"),
               child: T.Buffer(child_shape, "int32"), leaf: T.Buffer((NT, L), "float32"),
               group: T.Buffer((NT,), "int32"), base: T.Buffer((K,), "float32"), var_y: T.handle):
        # neocompile.schedule: the CPU pipeline leaves a kernel carrying it as it is (neocompile.cpu.pipeline).
        T.func_attr({"tir.noalias": True, "tir.is_scheduled": True,
                     "neocompile.schedule": f"xgboost forest: {forest.layout} depth {D}, {R} rows per walk, parallel rows"})
        n = T.int64()
        X = T.match_buffer(var_x, (n, F), "float32")
        Y = T.match_buffer(var_y, (n, K) if not one_d else (n,), "float32")
        # One opaque block under a root block: the shape Relax's SplitLayoutRewritePreproc expects of every PrimFunc.
        with T.sblock("root"):
            with T.sblock("forest"):
                for blk in T.parallel((n + R - 1) // R):
                    acc = T.decl_buffer((R, K), "float32", scope="local")
                    idx = T.decl_buffer((R,), "int32", scope="local")
                    # The block's rows, copied once as ordered integer keys (ordered_keys): every tree then reads
                    # them at constant offsets from one base, and each test is two integer compares, no branch.
                    xb = T.decl_buffer((R, F), "int32", scope="local")
                    # Whether the block has a NaN: without one, each test is a single compare.
                    nan = T.decl_buffer((1,), "int32", scope="local")
                    nan[0] = 0
                    for r in range(R):
                        for f in range(F):
                            nan[0] = T.bitwise_or(nan[0], T.Cast("int32", T.bitwise_and(
                                T.reinterpret("int32", X[T.min(blk * R + r, n - 1), f]), 0x7FFFFFFF) > 0x7F800000))
                            xb[r, f] = T.Select(
                                T.bitwise_and(T.reinterpret("int32", X[T.min(blk * R + r, n - 1), f]), 0x7FFFFFFF) > 0x7F800000,
                                NAN_KEY,
                                T.Select(T.reinterpret("int32", X[T.min(blk * R + r, n - 1), f]) < 0,
                                         T.Select(T.reinterpret("int32", X[T.min(blk * R + r, n - 1), f]) == T.int32(-2147483648),
                                                  0, T.bitwise_xor(T.reinterpret("int32", X[T.min(blk * R + r, n - 1), f]), 0x7FFFFFFF)),
                                         T.reinterpret("int32", X[T.min(blk * R + r, n - 1), f])))
                    for r in range(R):
                        for k in range(K):
                            acc[r, k] = base[k]
                    for t in range(NT):
                        for r in range(R):
                            idx[r] = 0
                        if nan[0] == 0:
                            for _level in range(D):
                                for r in T.unroll(R):
                                    if padded:
                                        idx[r] = idx[r] * 2 + 1 + T.Cast("int32", xb[r, T.shift_right(node[t, idx[r]], 1)] >= thr[t, idx[r]])
                                    else:
                                        idx[r] = child[t, idx[r] * 2 + T.Cast("int32", xb[r, T.shift_right(node[t, idx[r]], 1)] >= thr[t, idx[r]])]
                        else:
                            for _level in range(D):
                                for r in T.unroll(R):
                                    # Right when key >= threshold key, except a NaN (NAN_KEY, above +inf's key) at a
                                    # default-left node: there the key must also be <= +inf's key (0x7F800000; else
                                    # 0x7FFFFFFF). The limit is made with bit operations: TVM's simplifier moves linear
                                    # terms across a compare, which overflowed for NaN's key.
                                    # Written without let-bound names: TVM keeps those in memory, LLVM's CSE does the rest.
                                    if padded:
                                        idx[r] = idx[r] * 2 + 1 + T.bitwise_and(
                                            T.Cast("int32", xb[r, T.shift_right(node[t, idx[r]], 1)] >= thr[t, idx[r]]),
                                            T.Cast("int32", xb[r, T.shift_right(node[t, idx[r]], 1)] <= T.bitwise_or(
                                                0x7F800000, T.bitwise_and(T.bitwise_and(node[t, idx[r]], 1) - 1, 0x7FFFFF))))
                                    else:
                                        idx[r] = child[t, idx[r] * 2 + T.bitwise_and(
                                            T.Cast("int32", xb[r, T.shift_right(node[t, idx[r]], 1)] >= thr[t, idx[r]]),
                                            T.Cast("int32", xb[r, T.shift_right(node[t, idx[r]], 1)] <= T.bitwise_or(
                                                0x7F800000, T.bitwise_and(T.bitwise_and(node[t, idx[r]], 1) - 1, 0x7FFFFF))))]
                        g = group[t]
                        for r in range(R):
                            if padded:
                                acc[r, g] = acc[r, g] + leaf[t, idx[r] - (L - 1)]
                            else:
                                acc[r, g] = acc[r, g] + leaf[t, idx[r]]
                    for r in range(R):
                        if blk * R + r < n:
                            row = blk * R + r
                            if post == "softmax" or post == "max_index":
                                top = T.decl_buffer((1,), "float32", scope="local")
                                best = T.decl_buffer((1,), "int32", scope="local")
                                top[0] = acc[r, 0]
                                best[0] = 0
                                for k in range(1, K):
                                    if acc[r, k] > top[0]:
                                        top[0] = acc[r, k]
                                        best[0] = k
                                if post == "max_index":
                                    Y[row] = T.Cast("float32", best[0])
                                else:
                                    total = T.decl_buffer((1,), "float32", scope="local")
                                    total[0] = T.float32(0)
                                    for k in range(K):
                                        acc[r, k] = T.exp(acc[r, k] - top[0])
                                        total[0] = total[0] + acc[r, k]
                                    for k in range(K):
                                        Y[row, k] = acc[r, k] / total[0]
                            else:
                                for k in range(K):
                                    m = acc[r, k]
                                    if post == "sigmoid" or post == "multiclass_ova":
                                        value = T.float32(1) / (T.float32(1) + T.exp(T.float32(-alpha) * m))
                                    elif post == "exponential":
                                        value = T.exp(m)
                                    elif post == "exponential_standard_ratio":
                                        value = T.exp2(m * T.float32(-1.0 / ratio))
                                    elif post == "logarithm_one_plus_exp":
                                        value = T.log1p(T.exp(m))
                                    elif post == "hinge":
                                        value = T.if_then_else(m > T.float32(0), T.float32(1), T.float32(0))
                                    else:
                                        value = m
                                    if one_d:
                                        Y[row] = value
                                    else:
                                        Y[row, k] = value

    return kernel


def build_module(forest: Forest, input_name: str = INPUT) -> Any:
    """The Relax module: ``main(data[N, F]) -> predictions`` calling the forest kernel; arrays are constants."""
    import tvm
    from tvm import relax

    rows = tvm.tirx.Var(ROWS, "int64")
    x = relax.Var(input_name, relax.TensorType((rows, forest.num_feature), "float32"))
    out_shape = (rows,) if forest.output_1d else (rows, forest.groups)
    arrays = forest.arrays()
    if forest.child is None:  # the padded kernel takes no child array: a 1x1 placeholder keeps one signature
        arrays.insert(2, np.zeros((1, 1), "int32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        gv = bb.add_func(forest_kernel(forest), "xgboost_forest")
        out = bb.emit(relax.call_tir(gv, [x] + [relax.const(a) for a in arrays], relax.TensorType(out_shape, "float32")))
        bb.emit_func_output(out)
    return bb.get()


# -- the source framework's predictions ------------------------------------------------------------------------------
def xgboost_reference(data: bytes, iteration_range: tuple[int, int]):
    """xgboost's own ``inplace_predict`` (1 thread) on the trees the package uses."""

    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        import xgboost

        booster = xgboost.Booster(model_file=bytearray(data))
        booster.set_param({"nthread": 1})
        out = booster.inplace_predict(np.asarray(arrays[0], dtype=np.float32), iteration_range=iteration_range)
        return [np.asarray(out, dtype=np.float32)]

    return run


def treelite_reference(data: bytes, used: int, objective: str):
    """For legacy binaries, which xgboost 3 refuses: treelite's GTIL interpreter on the trees the package uses."""

    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        treelite = import_treelite()
        model = _load_treelite(data, "the model", "legacy")
        x = np.asarray(arrays[0], dtype=np.float32)
        if used < model.num_tree:  # best_iteration: sum the used trees' margins and transform here
            margin = _margins(model, x, used)
            out = _transform(margin, model.get_header_accessor())
        else:
            out = treelite.gtil.predict(model, x, nthread=1)
            out = out.reshape(out.shape[0], -1)
        if objective == "multi:softmax":
            out = np.argmax(out, axis=1)
        return [np.asarray(out.reshape(out.shape[0]) if out.ndim == 2 and out.shape[1] == 1 else out, np.float32)]

    return run


def _margins(model: Any, x: np.ndarray, used: int) -> np.ndarray:
    treelite = import_treelite()

    header = model.get_header_accessor()
    per_tree = treelite.gtil.predict_per_tree(model, x, nthread=1).reshape(x.shape[0], model.num_tree, -1)[:, :used]
    num_class = max(int(c) for c in header.get_field("num_class"))
    groups = int(header.get_field("num_target")[0]) * num_class
    group = (np.maximum(header.get_field("target_id"), 0) * num_class + np.maximum(header.get_field("class_id"), 0))[:used]
    margin = np.tile(np.asarray(header.get_field("base_scores"), np.float32).reshape(-1)[:groups], (x.shape[0], 1))
    if margin.shape[1] < groups:
        margin = np.tile(margin[:, :1], (1, groups))
    for t in range(used):
        margin[:, group[t]] += per_tree[:, t, 0].astype(np.float32)
    return margin


def _transform(margin: np.ndarray, header: Any) -> np.ndarray:
    post = str(header.get_field("postprocessor"))
    if post == "sigmoid":
        return 1 / (1 + np.exp(-float(header.get_field("sigmoid_alpha")[0]) * margin))
    if post == "exponential":
        return np.exp(margin)
    if post == "softmax":
        e = np.exp(margin - margin.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if post == "hinge":
        return (margin > 0).astype(np.float32)
    return margin


# -- the loader --------------------------------------------------------------------------------------------------------
class XGBoostLoader(Loader):
    name = "XGBOOST"
    suffixes = ()  # any file name: Neo ignores the extension (Autopilot writes xgboost-model-0)
    layout = "[rows, features]: one 2-D float32 input whose features equal the model's num_feature; rows may be any number"
    example = '{"data": [1, <num_feature>]}'

    def find_model(self, root: Path) -> Path:
        """Neo's rule: the one (visible) file in the archive, whatever its name."""
        from ..archive import visible_files

        found = visible_files(root)
        if len(found) != 1:
            named = [p for p in found if p.name.startswith("xgboost-model")]
            if len(named) == 1:
                return named[0]
            listed = ", ".join(str(p.relative_to(root)) for p in found) or "none"
            raise InputConfigurationError(
                f"Exactly one model file (any name, e.g. xgboost-model) is allowed for XGBOOST models. "
                f"Found {len(found)}: {listed}")
        return found[0]

    def load(self, path: Path, shapes: dict[str, tuple[int, ...]] | None, options: dict[str, Any]) -> LoadedModel:
        treelite = import_treelite()

        path = Path(path)
        fmt = sniff_format(path)
        data = path.read_bytes()
        if fmt == "legacy":
            model = _load_treelite(data, path.name, fmt)
            try:
                info = read_legacy_header(data)
            except (ValueError, struct.error) as exc:  # treelite read it: a layout it tolerates and we do not
                raise InputConfigurationError(f"XGBoost model {path.name}: its legacy binary header is not readable: "
                                              f"{exc}. {SAVE_HINT}") from exc
        else:  # xgboost first: it names a linear booster, where treelite only fails
            info = _info_xgboost(data, path.name)
        if info["booster"] not in ("gbtree", "dart"):
            raise InputConfigurationError(
                f"XGBoost model {path.name} uses booster '{info['booster']}'; neocompile compiles tree boosters "
                "(gbtree, dart), not gblinear")
        if fmt != "legacy":
            model = _load_treelite(data, path.name, fmt)
        num_feature = int(model.num_feature)
        name, rows = self._check_shapes(shapes, num_feature)
        total = int(model.num_tree)
        best = info["best_iteration"]
        per_round = total // info["rounds"] if info["rounds"] else 1
        used = total if best is None else min(total, (best + 1) * max(per_round, 1))
        forest = Forest(model, used)
        if forest.postprocessor not in _POSTPROCESSORS:
            raise InputConfigurationError(
                f"XGBoost model {path.name} has objective '{info['objective']}', whose output transform "
                f"'{forest.postprocessor}' neocompile does not implement")
        if info["objective"] == "multi:softmax":
            forest.postprocessor = "max_index"  # treelite reads it as softmax; xgboost predicts the class index
        mod = build_module(forest, name)
        out_shape: tuple[Any, ...] = (ROWS,) if forest.output_1d else (ROWS, forest.groups)
        if fmt == "legacy":
            reference = treelite_reference(data, used, info["objective"])
            checked = "treelite.gtil.predict (xgboost 3 cannot read the legacy binary)"
        else:
            reference = xgboost_reference(data, (0, used // max(per_round, 1)) if best is not None else (0, 0))
            checked = "xgboost Booster.inplace_predict"
        details = {
            "Format": _FORMAT_NAMES[fmt], "SavedBy": info["saved_by"], "Objective": info["objective"],
            "Booster": info["booster"], "NumFeature": num_feature, "NumClass": forest.num_class,
            "NumTarget": forest.groups // forest.num_class, "BaseScore": info["base_score"],
            "BaseMargins": [float(v) for v in forest.base], "OutputTransform": forest.postprocessor,
            "BestIteration": best, "TreesInFile": total, "TreesUsed": used if total else 0,
            "TreesPerRound": per_round, "Kernel": forest.describe(), "MissingValues": "NaN takes each node's default branch",
            "Reference": checked,
        }
        return LoadedModel(
            mod=mod,
            inputs=[TensorSpec(name, "float32", (ROWS, num_feature))],
            outputs=[TensorSpec("output_0", "float32", out_shape)],
            reference=reference,
            framework=self.name,
            framework_version=f"{info['saved_by']}; treelite {treelite.__version__}",
            route=ROUTE.format(fmt=_FORMAT_NAMES[fmt]) + f"; verified against {checked}",
            data_input_config={name: [rows if rows is not None else ROWS, num_feature]},
            model_details=details,
            missing_values=MISSING_IN_VERIFICATION,
        )

    def _check_shapes(self, shapes: dict[str, tuple[int, ...]] | None, num_feature: int) -> tuple[str, int | None]:
        """DataInputConfig is optional; given, it names the one input and its shape must be [rows, num_feature]."""
        if not shapes:
            return INPUT, None
        example = self.example.replace("<num_feature>", str(num_feature))
        if len(shapes) != 1:
            raise InputConfigurationError(
                f"DataInputConfig names {len(shapes)} inputs ({', '.join(shapes)}); an XGBoost model takes one 2-D input "
                f"[rows, features] with features = {num_feature} (the model's num_feature). DataInputConfig is optional "
                f"for XGBOOST; for example {example}")
        (name, dims), = shapes.items()
        if len(dims) != 2 or dims[1] != num_feature:
            raise InputConfigurationError(
                f"Input {name} has wrong shape in Input Shape dictionary: got {list(dims)}; an XGBoost model takes one "
                f"2-D input [rows, features] with features = {num_feature} (the model's num_feature), rows any number. "
                f"DataInputConfig is optional for XGBOOST; for example {example}")
        return name, int(dims[0])
