"""DataInputConfig: one parser for every framework.

Accepts the dictionary form ``{"data": [1, 3, 224, 224]}`` and, for PyTorch, the list form
``[[1, 3, 224, 224], [1, 3]]`` (named ``input0``, ``input1``, ... as Neo does). Console and CLI escaping
both work: plain JSON, JSON with escaped quotes (``{\\"data\\": [...]}``) and the single-quoted Python-ish
form AWS's own examples use.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import re
from typing import Any, Iterable, Sequence

from .errors import InputConfigurationError

MAX_LENGTH = 16384  # InputConfig.DataInputConfig max length in the SageMaker API model


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, dtype and shape (``None`` or a string for an unknown dim)."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]

    def to_meta(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


def parse_structured(text: Any, field: str) -> Any:
    """Parse JSON as users type it on a console, a shell or in AWS's examples; ``None`` if it is not parsable."""
    if not isinstance(text, str):
        return text
    candidates = [text.strip()]
    stripped = candidates[0]
    if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "'\"":
        candidates.append(stripped[1:-1])  # the whole value quoted once more by a shell or console
    for cand in list(candidates):
        if '\\"' in cand:
            candidates.append(cand.replace('\\"', '"'))
    for cand in candidates:
        for loads in (json.loads, ast.literal_eval):  # literal_eval: single-quoted Python-ish dicts, True/False
            try:
                value = loads(cand)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                continue
            # A JSON string holding JSON (the value serialised twice) is unwrapped once.
            return parse_structured(value, field) if isinstance(value, str) and value.strip()[:1] in "{[" else value
    return None


def _natural_key(name: str) -> list[Any]:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


def _dims(name: str, dims: Any) -> tuple[int, ...]:
    if not isinstance(dims, (list, tuple)) or not dims:
        raise InputConfigurationError(
            f"DataInputConfig: input '{name}' has shape {json.dumps(dims)}; expected a non-empty list of positive integers"
        )
    out = []
    for i, d in enumerate(dims):
        if isinstance(d, bool) or not isinstance(d, int) or d <= 0:
            raise InputConfigurationError(
                f"DataInputConfig: input '{name}' has dimension {i} = {json.dumps(d)} in shape {json.dumps(dims)}; "
                "every dimension must be a positive integer"
            )
        out.append(d)
    return tuple(out)


def parse(config: Any, framework: str, allow_list: bool = False) -> dict[str, tuple[int, ...]] | None:
    """Parse a DataInputConfig into ``{name: shape}``; ``None`` when no config was given.

    The list form is only accepted when ``allow_list`` (PyTorch); its entries become ``input0``, ``input1``...
    Dictionary entries keep their order, except for list-capable frameworks, where inputs are ordered by
    name (numerically aware: input2 before input10) because that is how Neo feeds them to the model.
    """
    if config is None or (isinstance(config, str) and not config.strip()):
        return None
    if isinstance(config, str) and len(config) > MAX_LENGTH:
        raise InputConfigurationError(
            f"DataInputConfig is {len(config)} characters long; the maximum is {MAX_LENGTH}"
        )
    value = parse_structured(config, "DataInputConfig")
    if value is None:
        raise InputConfigurationError(
            f"Cannot load DataInputConfig. Incorrect json format. Got {_clip(config)}; "
            'expected a JSON dictionary such as {"data": [1, 3, 224, 224]}'
        )
    if isinstance(value, (list, tuple)):
        if not allow_list:
            raise InputConfigurationError(
                f"DataInputConfig is a list, which only PyTorch accepts; {framework} expects a dictionary of input name to shape, "
                'such as {"data": [1, 3, 224, 224]}'
            )
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            value = [value]  # a single shape given without the outer list
        value = {f"input{i}": dims for i, dims in enumerate(value)}
    if not isinstance(value, dict):
        raise InputConfigurationError(
            f"DataInputConfig is not dictionary or list. Got {_clip(config)}; expected e.g. {{\"data\": [1, 3, 224, 224]}}"
        )
    if not value:
        raise InputConfigurationError("DataInputConfig is an empty dictionary; expected at least one input name with its shape")
    shapes = {}
    for name, dims in value.items():
        if not isinstance(name, str) or not name:
            raise InputConfigurationError(f"DataInputConfig: input name {name!r} is not a non-empty string")
        shapes[name] = _dims(name, dims)
    if allow_list:
        shapes = dict(sorted(shapes.items(), key=lambda kv: _natural_key(kv[0])))
    return shapes


def _clip(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def check_against_model(
    shapes: dict[str, tuple[int, ...]] | None,
    model_inputs: Sequence[TensorSpec],
    framework: str,
    layout: str,
    example: str,
) -> dict[str, tuple[int, ...]]:
    """Check user shapes against the model's real inputs; fill in fully static inputs the user left out.

    Names must match exactly, ranks must agree, and every dimension the model fixes must be given with
    the same value, otherwise the error states the framework's layout rule with an example.
    """
    declared = {spec.name: spec for spec in model_inputs}
    shapes = dict(shapes or {})
    unknown = [n for n in shapes if n not in declared]
    if unknown:
        raise InputConfigurationError(
            f"DataInputConfig names input(s) {', '.join(repr(n) for n in unknown)} that the {framework} model does not have. "
            f"Model inputs: {_describe(model_inputs)}"
        )
    result = {}
    for spec in model_inputs:
        if spec.name not in shapes:
            if spec.shape and all(isinstance(d, int) and d > 0 for d in spec.shape):
                result[spec.name] = tuple(spec.shape)
                continue
            raise InputConfigurationError(
                f"DataInputConfig has no shape for model input '{spec.name}' (declared shape {_shape(spec.shape)}). "
                f"Model inputs: {_describe(model_inputs)}; expected e.g. {example}"
            )
        given = shapes[spec.name]
        if spec.shape is not None and len(spec.shape) and len(given) != len(spec.shape):
            raise InputConfigurationError(
                f"Input {spec.name} has wrong shape in Input Shape dictionary: got {list(given)} (rank {len(given)}), "
                f"the model declares {_shape(spec.shape)} (rank {len(spec.shape)}). "
                f"Input shapes should be provided in {layout} format. For example, {example}"
            )
        for i, (g, d) in enumerate(zip(given, spec.shape or ())):
            if isinstance(d, int) and d > 0 and g != d:
                raise InputConfigurationError(
                    f"Input {spec.name} has wrong shape in Input Shape dictionary: got {list(given)}, the model fixes "
                    f"dimension {i} to {d} ({_shape(spec.shape)}). Input shapes should be provided in {layout} format. "
                    f"For example, {example}"
                )
        result[spec.name] = given
    return result


def _shape(shape: Iterable[Any] | None) -> str:
    if shape is None:
        return "unknown"
    return "[" + ",".join(str(d) if d not in (None, -1) else "?" for d in shape) + "]"


def _describe(specs: Sequence[TensorSpec]) -> str:
    return ", ".join(f"{s.name}{_shape(s.shape)}" for s in specs) or "none"
