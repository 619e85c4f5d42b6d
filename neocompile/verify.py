"""Verification: run the compiled model next to the source framework on seeded random inputs."""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from .datainput import TensorSpec
from .errors import VerificationError

DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-4
SEED = 20261126

#: One unit of the arithmetic a narrower-than-float32 model computes in: the float's machine epsilon, or one step of
#: an 8-bit grid over the output's range for quantized graphs (onnxruntime itself moves those by a few steps between
#: its optimization levels, as it fuses QuantizeLinear/DequantizeLinear pairs into integer kernels).
PRECISION_UNITS = {"float16": 2.0**-10, "bfloat16": 2.0**-7, "int8": 2.0**-8}


def default_tolerance(precision: str) -> tuple[float, float, str]:
    """``(rtol, atol, why)`` for a model computing in ``precision`` when CompilerOptions set no tolerance.

    float32 (and anything unknown): 1e-3 / 1e-4. Narrower arithmetic: rtol 16 units (rounding that accumulates
    through the layers and differs in order between the two runtimes), atol 1 unit (outputs near zero)."""
    unit = PRECISION_UNITS.get(precision)
    if unit is None:
        return DEFAULT_RTOL, DEFAULT_ATOL, "default for float32"
    return 16 * unit, unit, f"default for {precision} arithmetic (rtol 16 units, atol 1 unit of {unit:g})"


#: The size verification gives a symbolic dimension (an XGBoost model's rows): not a multiple of the usual row
#: blocks, so partial blocks are checked too.
SYMBOLIC_DIM = 203


def random_inputs(specs: Sequence[TensorSpec], seed: int = SEED, missing: float = 0.0) -> list[np.ndarray]:
    """Seeded inputs: standard normal for floats, the whole range for 8-bit integers (quantized or image inputs:
    a few small values would sit at one end of the quantization grid), small non-negative integers for wider ints
    (token ids, indices), 0/1 for bools; a symbolic dimension (a name such as "N") gets ``SYMBOLIC_DIM``.
    ``missing``: the fraction of float values made NaN, for a model that handles missing values (XGBoost)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in specs:
        shape = tuple(SYMBOLIC_DIM if isinstance(d, str) else int(d) for d in spec.shape)
        if spec.dtype.startswith("float"):
            values = rng.standard_normal(shape).astype(spec.dtype)
            if missing:
                values[np.random.default_rng(seed + 1).random(shape) < missing] = np.nan
            arrays.append(values)
        elif spec.dtype == "bool":
            arrays.append(rng.integers(0, 2, shape).astype(bool))
        elif spec.dtype in ("int8", "uint8"):
            info = np.iinfo(spec.dtype)
            arrays.append(rng.integers(int(info.min), int(info.max) + 1, shape).astype(spec.dtype))
        else:
            arrays.append(rng.integers(0, 10, shape).astype(spec.dtype))
    return arrays


def compare(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray], names: Sequence[str], rtol: float, atol: float) -> tuple[bool, list[dict[str, Any]]]:
    """Per-output max abs/rel error and whether all are within ``max|a-e| <= atol + rtol*max|e|``."""
    if len(actual) != len(expected):
        raise VerificationError(
            f"Verification failed: the compiled model returned {len(actual)} outputs, the source framework {len(expected)}"
        )
    rows, ok = [], True
    for i, (a, e) in enumerate(zip(actual, expected)):
        name = names[i] if i < len(names) else f"output_{i}"
        a, e = np.asarray(a), np.asarray(e)
        if a.shape != e.shape:
            raise VerificationError(
                f"Verification failed: output '{name}' has shape {list(a.shape)}, the source framework gives {list(e.shape)}"
            )
        e64 = e.astype(np.float64)
        diff = np.abs(a.astype(np.float64) - e64)
        max_abs = float(diff.max()) if diff.size else 0.0
        max_rel = float((diff / np.maximum(np.abs(e64), 1e-12)).max()) if diff.size else 0.0
        # Relative to the output's scale, not per element: deep float32 nets reorder sums, and an element
        # near zero would otherwise fail on rounding noise that is tiny next to the output's magnitude.
        scale = float(np.abs(e64).max()) if diff.size else 0.0
        within = bool(max_abs <= atol + rtol * scale)
        ok &= within
        rows.append({"name": name, "shape": list(a.shape), "max_abs_error": max_abs, "max_rel_error": max_rel,
                     "scale": scale, "within_tolerance": within})
    return ok, rows


def verify(
    run_compiled: Callable[[list[np.ndarray]], list[np.ndarray]],
    reference: Callable[[Sequence[np.ndarray]], list[np.ndarray]],
    inputs: Sequence[TensorSpec],
    output_names: Sequence[str],
    mode: str,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    tolerance_source: str = "",
    missing: float = 0.0,
) -> dict[str, Any]:
    """Run both sides, return the report; raise VerificationError when outside tolerance.

    ``tolerance_source`` says where rtol/atol came from (CompilerOptions or the model's precision); it goes into
    the report and the error."""
    arrays = random_inputs(inputs, missing=missing)
    start = time.perf_counter()
    expected = reference(arrays)
    actual = run_compiled(arrays)
    ok, rows = compare(actual, expected, output_names, rtol, atol)
    report = {
        "status": "passed" if ok else "failed",
        "mode": mode,
        "seed": SEED,
        "rtol": rtol,
        "atol": atol,
        **({"tolerance": tolerance_source} if tolerance_source else {}),
        **({"missing": missing} if missing else {}),
        "outputs": rows,
        "seconds": round(time.perf_counter() - start, 3),
    }
    if not ok:
        worst = ", ".join(f"{r['name']}: max abs {r['max_abs_error']:.3g}, max rel {r['max_rel_error']:.3g}" for r in rows if not r["within_tolerance"])
        err = VerificationError(
            f"Verification failed: the compiled model differs from the source framework beyond tolerance "
            f"(max|diff| <= atol {atol} + rtol {rtol} * max|expected|"
            f"{'; ' + tolerance_source if tolerance_source else ''}) on seeded random inputs: {worst}"
        )
        err.report = report  # type: ignore[attr-defined]
        raise err
    return report


def skipped(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason}
