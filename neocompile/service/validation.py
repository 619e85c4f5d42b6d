"""Server-side checks of SageMaker request bodies, driven by botocore's own service model.

boto3 checks only required members, Python types and ``min`` before sending; ``max``, ``pattern`` and ``enum``
are the server's job. ``validate(operation, body)`` walks the operation's input shape in botocore's SageMaker
model (no copied tables), collects every violation in member order and raises ``RequestValidationError`` with
AWS's Coral wording (``1 validation error detected: Value 'x' at 'outputConfig.targetDevice' failed to
satisfy constraint: ...``). Rules the model cannot express (``InputConfig`` xor ``ModelPackageVersionArn``, ...)
live in ``CROSS_FIELD_RULES``, one small function each, run once the body fits the model.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache

import botocore.loaders
import botocore.model
import regex  # Java's \p{L}, \p{Z}, \p{N} (Tag keys and values) have no equivalent in the re module

from ..errors import ValidationError

SERVICE = "sagemaker"
#: Longest value shown in a message: a huge body must not make a huge error.
SHOWN_CHARS = 100
#: SageMaker's documented cap on a compilation job's MaxRuntimeInSeconds (28 days); the model has only min=1.
MAX_COMPILATION_RUNTIME = 28 * 24 * 3600
#: neocompile's embedded mode reads models from and writes packages to local disk, so the compile's input
#: and output locations also take ``file:///absolute/path`` besides what the model allows (s3:// and https://).
LOCAL_FILE_URI = r"file:///.+"

# Wire-level bounds of Java's int and long: a larger JSON number is not an integer to SageMaker.
_INT_BOUNDS = {"integer": 2**31, "long": 2**63}
# Epoch seconds a datetime can hold (years 1..9999): later stages turn timestamps back into datetimes.
_EPOCH_RANGE = (datetime.min.replace(tzinfo=UTC).timestamp(), datetime.max.replace(tzinfo=UTC).timestamp())
_CONTAINERS = {"structure": dict, "map": dict, "list": list}
_TYPE_NAMES = {
    "structure": "structure (a JSON object)",
    "map": "map (a JSON object)",
    "list": "list (a JSON array)",
    "timestamp": "timestamp (epoch seconds or an ISO-8601 string)",
    "blob": "blob (base64 text)",
}
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}
# Java writes a supplementary character as a surrogate pair (\uD800\uDC00); Python wants \U00010000.
_SURROGATE_PAIR = re.compile(r"\\u(D[89AB][0-9A-F]{2})\\u(D[C-F][0-9A-F]{2})", re.IGNORECASE)
# One-letter Unicode categories (\p{L}, \p{Z}, ...) are Unicode in Java; everything else (\d, \w, \s,
# POSIX \p{Alnum}) is ASCII-only there, as under regex.ASCII.
_UNICODE_CATEGORY = re.compile(r"\\[pP]\{[A-Z]\}")


class RequestValidationError(ValidationError):
    """ValidationException: ``.messages`` is the list of single-error texts; str(e) is AWS's full text."""

    code = "ValidationException"

    def __init__(self, messages: list[str]):
        self.messages = list(messages)
        count = len(self.messages)
        noun = "validation error" if count == 1 else "validation errors"
        super().__init__(f"{count} {noun} detected: " + "; ".join(self.messages))


class UnknownOperation(Exception):
    """The operation is not in SageMaker's model (AWS answers ``UnknownOperationException``)."""

    code = "UnknownOperationException"

    def __init__(self, operation: str):
        self.operation = operation
        super().__init__(f"Unknown SageMaker operation '{operation}'")


Rule = Callable[[dict], list[str]]


def _exactly_one(first: str, second: str, within: str | None = None) -> Rule:
    """A rule: exactly one of two optional members (of the body, or of its structure `within`) is given."""
    where = f" in {within}" if within else ""

    def rule(body: dict) -> list[str]:
        scope = body.get(within, {}) if within else body
        given = [name for name in (first, second) if name in scope]
        if len(given) == 2:
            return [f"Both {first} and {second} are specified{where}; specify exactly one of them"]
        if not given:
            return [f"Neither {first} nor {second} is specified{where}; specify exactly one of them"]
        return []

    return rule


def _compilation_runtime_cap(body: dict) -> list[str]:
    runtime = body["StoppingCondition"].get("MaxRuntimeInSeconds")
    if runtime is not None and runtime > MAX_COMPILATION_RUNTIME:
        return [_violation(runtime, "stoppingCondition.maxRuntimeInSeconds",
                           f"Member must have value less than or equal to {MAX_COMPILATION_RUNTIME}")]
    return []


#: Per operation, checks across members, run on the normalized body once it fits the model.
CROSS_FIELD_RULES: dict[str, list[Rule]] = {
    "CreateCompilationJob": [
        _exactly_one("InputConfig", "ModelPackageVersionArn"),
        _exactly_one("TargetDevice", "TargetPlatform", within="OutputConfig"),
        _compilation_runtime_cap,
    ],
}

#: Per operation, member path -> a pattern accepted in addition to the model's own.
EXTRA_PATTERNS: dict[str, dict[str, str]] = {
    "CreateCompilationJob": {"inputConfig.s3Uri": LOCAL_FILE_URI, "outputConfig.s3OutputLocation": LOCAL_FILE_URI},
    "CreateModel": {"primaryContainer.modelDataUrl": LOCAL_FILE_URI},
    "CreateTransformJob": {"transformInput.dataSource.s3DataSource.s3Uri": LOCAL_FILE_URI,
                           "transformOutput.s3OutputPath": LOCAL_FILE_URI},
}


def validate(operation: str, params: object) -> dict:
    """Check `params` (the decoded JSON body) against `operation`'s input shape and return a normalized copy.

    Timestamps become float epoch seconds and ``null`` members are dropped (Coral reads them as absent);
    everything else is unchanged. Raises ``RequestValidationError`` listing every violation in member order,
    or ``UnknownOperation``.
    """
    shape = _input_shape(operation)
    if not isinstance(params, dict):
        raise RequestValidationError([f"The request body must be a JSON object, not {_json_type(params)}"])
    walk = _Walk(EXTRA_PATTERNS.get(operation, {}))
    body = walk.structure(shape, params, "")
    if not walk.errors:  # the rules may then trust the model's types and required members
        for rule in CROSS_FIELD_RULES.get(operation, ()):
            walk.errors += rule(body)
    if walk.errors:
        raise RequestValidationError(walk.errors)
    return body


@cache
def service_model() -> botocore.model.ServiceModel:
    """botocore's SageMaker model, loaded once (about 0.1 s; its shapes resolve lazily and are then cached)."""
    loader = botocore.loaders.create_loader()
    return botocore.model.ServiceModel(loader.load_service_model(SERVICE, "service-2"), service_name=SERVICE)


def _input_shape(operation: str) -> botocore.model.StructureShape:
    try:
        shape = service_model().operation_model(operation).input_shape
    except botocore.model.OperationNotFoundError:
        raise UnknownOperation(operation) from None
    # Every SageMaker operation has an input shape today; one without would take only {}.
    return shape or botocore.model.StructureShape(f"{operation}Request", {"type": "structure", "members": {}})


class _Walk:
    """One request's walk: collects messages in member order and builds the normalized copy."""

    def __init__(self, extra_patterns: dict[str, str]):
        self.errors: list[str] = []
        self.extra_patterns = extra_patterns

    def value(self, shape: botocore.model.Shape, value: object, path: str) -> object:
        if value is None:
            self.errors.append(_violation(None, path, "Member must not be null"))
            return None
        kind = shape.type_name
        if kind in _CONTAINERS and not isinstance(value, _CONTAINERS[kind]):
            self._fail(shape, value, path, [_type_phrase(kind)])
            return value
        if kind == "structure":
            return self.structure(shape, value, path)
        if kind == "list":
            self._fail(shape, value, path, _length_phrases(len(value), shape.metadata))
            return [self.value(shape.member, item, f"{path}.{i}.member") for i, item in enumerate(value, 1)]
        if kind == "map":
            return self.map(shape, value, path)
        extra = self.extra_patterns.get(path)
        normalized, phrases = _scalar(shape, value, extra)
        self._fail(shape, value, path, phrases)
        return normalized

    def structure(self, shape: botocore.model.StructureShape, value: dict, path: str) -> dict:
        members, out = shape.members, {}
        for name, member in members.items():
            sub = f"{path}.{name[:1].lower()}{name[1:]}" if path else f"{name[:1].lower()}{name[1:]}"
            if value.get(name) is not None:
                out[name] = self.value(member, value[name], sub)
            elif name in shape.required_members:
                self.errors.append(_violation(None, sub, "Member must not be null"))
        for name, item in value.items():
            if name not in members:  # never from boto3: a typo of a hand-written client
                self.errors.append(_violation(item, f"{path}.{name}" if path else name,
                                              f"Member is not defined in {shape.name} (its members: "
                                              f"{', '.join(members)})"))
        if shape.metadata.get("union") and len(out) != 1:
            self._fail(shape, value, path, [f"Member must have exactly one member set, one of [{', '.join(members)}]"])
        return out

    def map(self, shape: botocore.model.MapShape, value: dict, path: str) -> dict:
        self._fail(shape, value, path, _length_phrases(len(value), shape.metadata))
        out = {}
        for key, item in value.items():
            phrases = _scalar(shape.key, key, None)[1]
            if phrases:
                self.errors.append(_violation(key, path, f"Map keys must satisfy constraint: [{', '.join(phrases)}]"))
            out[key] = self.value(shape.value, item, f"{path}.{key}")
        return out

    def _fail(self, shape: botocore.model.Shape, value: object, path: str, phrases: list[str]) -> None:
        shown = "***" if shape.metadata.get("sensitive") else value  # never echo a secret back
        self.errors += [_violation(shown, path, phrase) for phrase in phrases]


def _scalar(shape: botocore.model.Shape, value: object, extra_pattern: str | None) -> tuple[object, list[str]]:
    """(normalized value, constraint phrases it breaks) for a string, number, boolean, timestamp or blob."""
    kind, meta = shape.type_name, shape.metadata
    if kind == "string":
        if not isinstance(value, str):
            return value, [_type_phrase(kind)]
        phrases = _length_phrases(len(value), meta)
        if shape.enum and value not in shape.enum:
            phrases.append(f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")
        pattern = meta.get("pattern")
        if pattern and extra_pattern:
            pattern = f"{pattern}|{extra_pattern}"
        if pattern and not _compiled(pattern).fullmatch(value):
            shown = pattern if pattern.startswith("^") else f"^{pattern}"  # as AWS prints it
            phrases.append(f"Member must satisfy regular expression pattern: {shown}")
        return value, phrases
    if kind == "timestamp":
        epoch = _epoch(value)
        return (value, [_type_phrase(kind)]) if epoch is None else (epoch, [])
    if kind == "boolean":
        return value, [] if type(value) is bool else [_type_phrase(kind)]
    if kind == "blob":
        try:
            size = len(base64.b64decode(value, validate=True))
        except (TypeError, ValueError, binascii.Error):
            return value, [_type_phrase(kind)]
        return value, _length_phrases(size, meta)
    if kind in _INT_BOUNDS:  # a JSON bool is not an integer, nor is 3.0
        fits = type(value) is int and -_INT_BOUNDS[kind] <= value < _INT_BOUNDS[kind]
    elif kind in ("float", "double"):
        fits = type(value) in (int, float) and math.isfinite(value)
    else:
        return value, []  # a type this model does not use (documents): nothing to check
    if not fits:
        return value, [_type_phrase(kind)]
    phrases = []
    if "min" in meta and value < meta["min"]:
        phrases.append(f"Member must have value greater than or equal to {meta['min']}")
    if "max" in meta and value > meta["max"]:
        phrases.append(f"Member must have value less than or equal to {meta['max']}")
    return value, phrases


def _epoch(value: object) -> float | None:
    """Epoch seconds from a JSON number or an ISO-8601 string (no zone = UTC), or None if it is neither."""
    if type(value) in (int, float):
        return float(value) if _EPOCH_RANGE[0] <= value < _EPOCH_RANGE[1] else None  # also refuses nan, inf
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    return None


@cache
def _compiled(pattern: str) -> regex.Pattern:
    """A botocore (Java) pattern as a Python regex with Java's semantics."""
    python = _SURROGATE_PAIR.sub(lambda pair: _supplementary(pair[1], pair[2]), pattern)
    return regex.compile(python, 0 if _UNICODE_CATEGORY.search(pattern) else regex.ASCII)


def _supplementary(high: str, low: str) -> str:
    code = 0x10000 + ((int(high, 16) - 0xD800) << 10) + (int(low, 16) - 0xDC00)
    return f"\\U{code:08X}"


def _length_phrases(length: int, meta: dict) -> list[str]:
    phrases = []
    if length < meta.get("min", 0):
        phrases.append(f"Member must have length greater than or equal to {meta['min']}")
    if "max" in meta and length > meta["max"]:
        phrases.append(f"Member must have length less than or equal to {meta['max']}")
    return phrases


def _type_phrase(kind: str) -> str:
    return f"Member must be of type {_TYPE_NAMES.get(kind, kind)}"


def _violation(value: object, path: str, phrase: str) -> str:
    """One Coral-style message: Value 'v' at 'a.b' failed to satisfy constraint: <phrase>."""
    if value is None:
        shown = "null"
    else:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        shown = "'" + (text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "...") + "'"
    return f"Value {shown} at '{path}' failed to satisfy constraint: {phrase}"


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)
