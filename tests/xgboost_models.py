"""Real XGBoost models for the loader tests, and the legacy binary format of xgboost 1.x written from them.

xgboost 3 can no longer save (or read) the binary format that SageMaker's 1.x containers wrote, so
``legacy_binary`` writes it from the model's JSON, field by field as xgboost 1.x ``Learner::SaveModel`` laid it out.
"""
from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from tests.need import need

xgb = need("xgboost")

NUM_FEATURE = 6


def data(rows: int = 400, seed: int = 0, missing: float = 0.15) -> np.ndarray:
    """Features with about ``missing`` of the values NaN."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, NUM_FEATURE)).astype(np.float32)
    x[rng.random(x.shape) < missing] = np.nan
    return x


def labels(objective: str, x: np.ndarray) -> np.ndarray:
    signal = np.nan_to_num(x[:, 0]) * 2 + np.nan_to_num(x[:, 1]) - np.nan_to_num(x[:, 2])
    if objective.startswith(("binary:", "reg:logistic")):
        return (signal > 0).astype(np.float32)
    if objective.startswith(("multi:", "rank:")):
        return np.digitize(signal, [-1.0, 1.0]).astype(np.float32)
    if objective in ("count:poisson",):
        return np.round(np.exp(signal / 3)).astype(np.float32)
    if objective in ("reg:gamma", "reg:tweedie"):
        return np.exp(signal / 3).astype(np.float32)
    return signal.astype(np.float32)


def train(objective: str, rounds: int = 8, depth: int = 3, seed: int = 0, **params: Any) -> Any:
    """A booster for ``objective`` trained on NaN-laden data (so nodes learn default branches)."""
    x = data(seed=seed)
    y = labels(objective, x)
    p = {"objective": objective, "max_depth": depth, "seed": seed, "nthread": 1, **params}
    if objective.startswith("multi:"):
        p.setdefault("num_class", 3)
    matrix = xgb.DMatrix(x, y)
    if objective.startswith("rank:"):
        matrix.set_group([100] * (len(x) // 100))
    return xgb.train(p, matrix, rounds)


def early_stopped(objective: str = "binary:logistic") -> Any:
    """A booster trained with early stopping: best_iteration well before its last round."""
    x, xv = data(400, seed=1), data(200, seed=2)
    y, yv = labels(objective, x), labels(objective, xv)
    y = np.where(np.random.default_rng(3).random(len(y)) < 0.3, 1 - y, y)  # noisy: overfits soon
    p = {"objective": objective, "max_depth": 5, "eta": 0.5, "nthread": 1, "seed": 0}
    booster = xgb.train(p, xgb.DMatrix(x, y), 60, evals=[(xgb.DMatrix(xv, yv), "v")], early_stopping_rounds=3,
                        verbose_eval=False)
    assert booster.best_iteration + 1 < booster.num_boosted_rounds(), "early stopping did not stop early"
    return booster


def legacy_binary(booster: Any, major: int = 1, minor: int = 3) -> bytes:
    """The model as xgboost ``major.minor`` (1.x) saved it with ``save_model('xgboost-model')``: the binary format,
    with the learner attributes (``best_iteration``) at its end."""
    model = json.loads(bytes(booster.save_raw("json")))["learner"]
    param = model["learner_model_param"]
    base_score = float(str(param["base_score"]).strip("[]").split(",")[0])
    num_class = int(param["num_class"])
    objective = model["objective"]["name"]
    gbtree = model["gradient_booster"]["model"]
    trees = gbtree["trees"]
    attributes = model.get("attributes", {})
    out = [struct.pack("<fIiiiIII", base_score, int(param["num_feature"]), num_class, 1 if attributes else 0, 0,
                       major, minor, 0), struct.pack("<26i", *([0] * 26))]
    for text in (objective, "gbtree"):
        out.append(struct.pack("<Q", len(text)) + text.encode())
    out.append(struct.pack("<iiiiqii", len(trees), 1, int(param["num_feature"]), 0, 0, max(num_class, 1), 0))
    out.append(struct.pack("<32i", *([0] * 32)))
    for tree in trees:
        left, right = tree["left_children"], tree["right_children"]
        nodes = len(left)
        out.append(struct.pack("<6i", 1, nodes, 0, 0, int(param["num_feature"]), 0) + struct.pack("<31i", *([0] * 31)))
        parents = tree["parents"]
        for i in range(nodes):
            parent = -1 if i == 0 else parents[i] | (1 << 31 if left[parents[i]] == i else 0)
            sindex = tree["split_indices"][i] | (1 << 31 if tree["default_left"][i] else 0)
            out.append(struct.pack("<iiiIf", _i32(parent), left[i], right[i], sindex, tree["split_conditions"][i]))
        for i in range(nodes):
            out.append(struct.pack("<fffi", tree["loss_changes"][i], tree["sum_hessian"][i], tree["base_weights"][i], 0))
    out.append(struct.pack(f"<{len(trees)}i", *gbtree["tree_info"]))
    if attributes:
        out.append(struct.pack("<Q", len(attributes)))
        for key, value in attributes.items():
            for text in (key, str(value)):
                out.append(struct.pack("<Q", len(text)) + text.encode())
    return b"".join(out)


def _i32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value
