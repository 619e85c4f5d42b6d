"""CompilerOptions: a tolerant parser for the JSON-ish strings SageMaker users pass."""
from __future__ import annotations

from typing import Any

from .datainput import parse_structured
from .errors import ValidationError

#: Canonical option names; '_' and '-' are interchangeable and case is ignored (AWS mixes them).
KNOWN = {
    "dtype": "Input data type for PyTorch models: float32 (float) or int64 (long).",
    "mcpu": "LLVM CPU name overriding the device default, e.g. cortex-a72.",
    "mattr": "LLVM CPU features, a list or comma string, e.g. ['+neon'].",
    "gpu-code": "CUDA arch of an NVIDIA accelerator, e.g. sm_53.",
    "trt-ver": "TensorRT version on the device (recorded; TensorRT is not used).",
    "cuda-ver": "CUDA version on the device (recorded).",
    "jetpack-version": "JetPack version on the device (recorded).",
    "android-platform": "Android API level 21-29 (recorded; Android is not a registry target yet).",
    "verify": "true/false: run the compiled model next to the source framework when possible (default true).",
    "cpu-kernels": "true/false: schedule CPU kernels with neocompile's templates (default true); false leaves TVM's default lowering.",
    "verify-rtol": "Relative tolerance of the verification (default 1e-3).",
    "verify-atol": "Absolute tolerance of the verification (default 1e-4).",
}

DTYPES = {"float32": "float32", "float": "float32", "int64": "int64", "long": "int64"}
MAX_LENGTH = 1024


def parse(text: Any) -> dict[str, Any]:
    """Parse OutputConfig.CompilerOptions into a dict with canonical keys."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return {}
    if isinstance(text, str) and not (3 <= len(text) <= MAX_LENGTH):
        raise ValidationError(
            f"OutputConfig.CompilerOptions: length {len(text)} is out of range; expected 3 to {MAX_LENGTH} characters"
        )
    value = parse_structured(text, "CompilerOptions")
    if not isinstance(value, dict):
        raise ValidationError(
            f"OutputConfig.CompilerOptions: {text!r} is not a JSON object; expected e.g. {{\"mcpu\": \"cortex-a72\", \"mattr\": [\"+neon\"]}}"
        )
    out: dict[str, Any] = {}
    for key, val in value.items():
        canon = str(key).strip().lower().replace("_", "-")
        if canon not in KNOWN:
            raise ValidationError(
                f"OutputConfig.CompilerOptions: unknown option '{key}'; expected one of {', '.join(sorted(KNOWN))}"
            )
        out[canon] = _check(canon, key, val)
    return out


def _check(canon: str, key: str, val: Any) -> Any:
    if canon == "dtype":
        if str(val).lower() not in DTYPES:
            raise ValidationError(f"OutputConfig.CompilerOptions.{key}: '{val}' is not valid; expected one of {', '.join(DTYPES)}")
        return DTYPES[str(val).lower()]
    if canon == "mattr":
        items = val.split(",") if isinstance(val, str) else val
        if not isinstance(items, (list, tuple)) or not all(isinstance(a, str) and a.strip()[:1] in "+-" for a in items):
            raise ValidationError(
                f"OutputConfig.CompilerOptions.{key}: {val!r} is not valid; expected a list of LLVM features such as ['+neon']"
            )
        return [a.strip() for a in items]
    if canon in ("mcpu", "gpu-code", "trt-ver", "cuda-ver", "jetpack-version"):
        if not isinstance(val, (str, int, float)) or not str(val).strip():
            raise ValidationError(f"OutputConfig.CompilerOptions.{key}: {val!r} is not valid; expected a string")
        val = str(val).strip()
        if canon == "gpu-code" and not val.startswith("sm_"):
            raise ValidationError(f"OutputConfig.CompilerOptions.{key}: '{val}' is not valid; expected a CUDA arch such as sm_53")
        return val
    if canon == "android-platform":
        if isinstance(val, bool) or not isinstance(val, int) or not 21 <= val <= 29:
            raise ValidationError(f"OutputConfig.CompilerOptions.{key}: {val!r} is not valid; expected an integer from 21 to 29")
        return val
    if canon in ("verify", "cpu-kernels"):
        if not isinstance(val, bool):
            raise ValidationError(f"OutputConfig.CompilerOptions.{key}: {val!r} is not valid; expected true or false")
        return val
    if canon in ("verify-rtol", "verify-atol"):
        if isinstance(val, bool) or not isinstance(val, (int, float)) or val < 0:
            raise ValidationError(f"OutputConfig.CompilerOptions.{key}: {val!r} is not valid; expected a non-negative number")
        return float(val)
    return val
