"""CompilerOptions: a tolerant parser for the JSON-ish strings SageMaker users pass."""
from __future__ import annotations

from typing import Any

from .datainput import parse_structured
from .errors import ValidationError

#: Canonical option names; '_' and '-' are interchangeable and case is ignored (AWS mixes them).
KNOWN = {
    "dtype": "Input data type(s) for PyTorch TorchScript models: one for every input, float32 (float) or int64 (long), "
             "also float16, float64, int32, int8, uint8, bool; or one per input, a list in input order or "
             "{\"input_name\": dtype} (inputs left out are float32).",
    "mcpu": "LLVM CPU name overriding the device default, e.g. cortex-a72.",
    "mattr": "LLVM CPU features, a list or comma string, e.g. ['+neon'].",
    "gpu-code": "CUDA arch of an NVIDIA accelerator, e.g. sm_53.",
    "trt-ver": "TensorRT version on the device (recorded; TensorRT is not used).",
    "cuda-ver": "CUDA version on the device (recorded).",
    "jetpack-version": "JetPack version on the device (recorded).",
    "android-platform": "Android API level 21-29 (recorded; Android is not a registry target yet).",
    "signature-def-key": "TensorFlow SavedModel: the signature to compile (default serving_default).",
    "output-names": "TensorFlow frozen GraphDef: the output tensors, a list or comma string, e.g. [\"logits:0\"] "
                    "(default: the tensors no operation consumes).",
    "verify": "true/false: run the compiled model next to the source framework when possible (default true).",
    "cpu-kernels": "true/false: schedule CPU kernels with neocompile's templates (default true); false leaves TVM's default lowering.",
    "cpu-layout": "NHWC or NCHW: the activation layout CPU kernels run 2-D convs in (default NHWC, channels-last, whatever "
                  "the model's own layout; inputs and outputs keep the model's layout).",
    "verify-rtol": "Relative tolerance of the verification (default 1e-3; float16/bfloat16/quantized models: 16 units of their arithmetic).",
    "verify-atol": "Absolute tolerance of the verification (default 1e-4; float16/bfloat16/quantized models: 1 unit of their arithmetic).",
    "tuning": "{\"trials\": N[, \"max-trials-per-task\": M][, \"rpc\": {\"server\": \"host:port\"}]}: tune the CPU "
              "kernels with MetaSchedule, here or on the device through its TVM RPC server (records are cached and reused "
              "by later jobs); false: do not use the tuning cache either.",
}

#: The fields of the tuning option: name -> required.
TUNING_FIELDS = {"trials": True, "max-trials-per-task": False, "rpc": False}
#: tuning.rpc: time candidates on the device itself, through its TVM RPC server or a tracker the servers registered with.
RPC_FIELDS = ("server", "tracker", "key", "cores")

#: CompilerOptions dtype values (Neo's: float32/float, int64/long; and the other tensor types torch models take).
DTYPES = {"float32": "float32", "float": "float32", "int64": "int64", "long": "int64", "float16": "float16",
          "half": "float16", "float64": "float64", "double": "float64", "int32": "int32", "int": "int32",
          "int16": "int16", "int8": "int8", "uint8": "uint8", "bool": "bool"}
MAX_LENGTH = 1024
#: CompilerOptions cpu-layout values.
LAYOUTS = ("NHWC", "NCHW")


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
        return _check_dtype(key, val)
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
    if canon == "tuning":
        return _check_tuning(key, val)
    if canon == "cpu-layout":
        if not isinstance(val, str) or val.strip().upper() not in LAYOUTS:
            raise ValidationError(f"OutputConfig.CompilerOptions.{key}: {val!r} is not valid; expected one of {', '.join(LAYOUTS)}")
        return val.strip().upper()
    if canon in ("verify-rtol", "verify-atol"):
        if isinstance(val, bool) or not isinstance(val, (int, float)) or val < 0:
            raise ValidationError(f"OutputConfig.CompilerOptions.{key}: {val!r} is not valid; expected a non-negative number")
        return float(val)
    return val


def _check_dtype(key: str, val: Any) -> Any:
    """One dtype for every input, a list (input order) or a dict (input name -> dtype), in canonical names."""
    expected = (f"expected one of {', '.join(DTYPES)}, a list of them (one per input, in input order) or "
                '{"input_name": dtype, ...}')

    def one(value: Any, where: str) -> str:
        if not isinstance(value, str) or value.strip().lower() not in DTYPES:
            raise ValidationError(f"OutputConfig.CompilerOptions.{where}: {value!r} is not valid; {expected}")
        return DTYPES[value.strip().lower()]

    if isinstance(val, (list, tuple)):
        if not val:
            raise ValidationError(f"OutputConfig.CompilerOptions.{key}: [] is not valid; {expected}")
        return [one(v, f"{key}[{i}]") for i, v in enumerate(val)]
    if isinstance(val, dict):
        if not val or not all(isinstance(k, str) and k for k in val):
            raise ValidationError(f"OutputConfig.CompilerOptions.{key}: {val!r} is not valid; {expected}")
        return {k: one(v, f"{key}.{k}") for k, v in val.items()}
    return one(val, key)


def _check_tuning(key: str, val: Any) -> Any:
    expected = ('expected {"trials": N} with N an integer >= 1 (optionally "max-trials-per-task": M, '
                '"rpc": {"server": "host:port"}), or false')
    if val is False:
        return False
    if not isinstance(val, dict):
        raise ValidationError(f"OutputConfig.CompilerOptions.{key}: {val!r} is not valid; {expected}")
    out = {}
    for field, value in val.items():
        canon = str(field).strip().lower().replace("_", "-")
        if canon not in TUNING_FIELDS:
            raise ValidationError(f"OutputConfig.CompilerOptions.{key}: unknown field '{field}'; {expected}")
        if canon == "rpc":
            out[canon] = _check_rpc(f"{key}.{field}", value)
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValidationError(f"OutputConfig.CompilerOptions.{key}.{field}: {value!r} is not valid; expected an integer >= 1")
        out[canon] = value
    missing = [f for f, required in TUNING_FIELDS.items() if required and f not in out]
    if missing:
        raise ValidationError(f"OutputConfig.CompilerOptions.{key}: {val!r} lacks '{missing[0]}'; {expected}")
    return out


def _check_rpc(key: str, val: Any) -> dict[str, Any]:
    expected = 'expected {"server": "host:port"} or {"tracker": "host:port", "key": "<device key>"}, optionally "cores": N'
    if not isinstance(val, dict):
        raise ValidationError(f"OutputConfig.CompilerOptions.{key}: {val!r} is not valid; {expected}")
    out: dict[str, Any] = {}
    for field, value in val.items():
        canon = str(field).strip().lower()
        if canon not in RPC_FIELDS:
            raise ValidationError(f"OutputConfig.CompilerOptions.{key}: unknown field '{field}'; {expected}")
        if canon in ("server", "tracker"):
            host, _, port = str(value).rpartition(":")
            if not isinstance(value, str) or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValidationError(f"OutputConfig.CompilerOptions.{key}.{field}: {value!r} is not valid; expected host:port")
        elif canon == "key":
            if not isinstance(value, str) or not value.strip():
                raise ValidationError(f"OutputConfig.CompilerOptions.{key}.{field}: {value!r} is not valid; expected the device key the RPC server registered")
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValidationError(f"OutputConfig.CompilerOptions.{key}.{field}: {value!r} is not valid; expected the device's core count, an integer >= 1")
        out[canon] = value
    if ("server" in out) == ("tracker" in out) or ("tracker" in out) != ("key" in out):
        raise ValidationError(f"OutputConfig.CompilerOptions.{key}: {val!r} is not valid; {expected}")
    return out
