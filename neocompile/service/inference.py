"""The ``/invocations`` contract: a compiled package answering SageMaker inference requests.

:class:`Predictor` decodes a request body by its Content-Type into records, runs the package on them and encodes one
result per record by the Accept type. A record is one row of the model's input: the input's shape without its first
(batch) dimension. Batch transform splits a MultiRecord response back into its records, so a response always holds
exactly one line (CSV, JSON Lines) or entry (JSON, npy row) per input record, in order.

Content types (parameters such as ``; charset=utf-8`` or ``;label_size=0`` are ignored):

- ``text/csv``: one record per line, its values comma-separated in C order (an image record as one flat row); no
  header line. An empty field is a missing value (NaN) for float inputs, as SageMaker's XGBoost reads CSV.
- ``application/json``: a JSON array of records, or ``{"instances": [...]}`` (SageMaker / TF Serving), or
  ``{"inputs": {name: batch, ...}}`` (a whole batch per input); a record is a nested array, a flat array of the
  record's values, or (several inputs) an object keyed by input name. ``null`` is a missing value (NaN).
- ``application/jsonlines``: one record per line, as in JSON.
- ``application/x-npy``: one array, the whole batch (``[k, *record]``; a single record's shape is one record);
  ``application/x-npz``: one such array per input, named as the inputs (what several inputs need besides JSON).

Accept (a missing Accept or ``*/*`` answers in the request's own family):

- ``text/csv``: one line per record: its output values flattened, several outputs one after the other in the
  package's output order; floats written in the shortest form that reads back to the same float32 (or float64).
- ``application/json``: a JSON array with one entry per record: the record's output (a number or a nested array),
  or with several outputs an object keyed by output name. Non-finite floats are written as Python's json writes them
  (``NaN``, ``Infinity``).
- ``application/jsonlines``: the same entries, one per line.
- ``application/x-npy``: the single output as one array ``[k, ...]``; ``application/x-npz``: every output by name.

A package whose batch dimension is symbolic (XGBoost: ``["N", F]``) runs all records at once; a fixed one (an image
model compiled for batch 1) runs them in chunks of that size, the last one padded and the padding dropped.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PackageError, ValidationError
from ..runtime import Model

CSV, JSON, JSONLINES = "text/csv", "application/json", "application/jsonlines"
NPY, NPZ = "application/x-npy", "application/x-npz"
CONTENT_TYPES = (CSV, JSON, JSONLINES, NPY, NPZ)
ALIASES = {"application/x-jsonlines": JSONLINES, "application/jsonl": JSONLINES}

DEFAULT_PAYLOAD_MB = 6
#: The bytes of a CSV body read with numpy (Predictor._csv_plain): digits, '.', signs, exponents, ',' and \n.
_PLAIN_CSV = b"0123456789.+-eE,\n"
_POW10 = np.array([float(10 ** k) for k in range(16)])  # exact doubles
_DECIMAL_BLOCK = 1 << 20  # bytes of lines per step of _plain_decimals
# Runs of one package take turns on every core (runtime.Model), so more requests at once would only queue; this is
# also what SageMaker's local mode always asks for.
DEFAULT_CONCURRENCY = 1


class InferenceError(Exception):
    """A client problem with a request; ``status`` is its HTTP status: 400 bad data, 406 unsupported Accept, 413 too
    large, 415 unsupported Content-Type."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def media_type(header: str | None) -> str:
    """The bare, lower-case media type of a Content-Type or single Accept value ('' when absent)."""
    kind = (header or "").split(";", 1)[0].strip().lower()
    return ALIASES.get(kind, kind)


def execution_parameters(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """``GET /execution-parameters``: the defaults, overridden by the SAGEMAKER_* variables SageMaker sets from the
    transform job's own values."""
    params = {"MaxConcurrentTransforms": DEFAULT_CONCURRENCY, "BatchStrategy": "MULTI_RECORD",
              "MaxPayloadInMB": DEFAULT_PAYLOAD_MB}
    for key, name, low, high in (("MaxConcurrentTransforms", "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", 1, None),
                                 ("MaxPayloadInMB", "SAGEMAKER_MAX_PAYLOAD_IN_MB", 0, 100)):
        text = environ.get(name)
        if text:
            if not re.fullmatch(r"[0-9]+", text.strip()) or int(text) < low or (high is not None and int(text) > high):
                raise ValidationError(f"{name}: {text!r} is not valid; expected an integer from {low}"
                                      + (f" to {high}" if high is not None else " up"))
            params[key] = int(text)
    text = environ.get("SAGEMAKER_BATCH_STRATEGY")
    if text:
        # SageMaker writes SINGLE_RECORD/MULTI_RECORD; the API's own spelling (SingleRecord) is taken as well.
        strategy = {"SINGLERECORD": "SINGLE_RECORD", "MULTIRECORD": "MULTI_RECORD"}.get(text.replace("_", "").upper())
        if strategy is None:
            raise ValidationError(f"SAGEMAKER_BATCH_STRATEGY: {text!r} is not valid; "
                                  "expected SINGLE_RECORD or MULTI_RECORD")
        params["BatchStrategy"] = strategy
    return params


class Predictor:
    """A compiled package ready to answer invocations (loaded once; thread-safe calls)."""

    def __init__(self, package: str | Path, num_threads: int | None = None):
        self.execution_parameters = execution_parameters()  # first: a wrong variable fails before a slow load
        self.model = Model(package, num_threads=num_threads)
        self._inputs = self.model.meta["Model"]["Inputs"]
        self._outputs = self.model.meta["Model"]["Outputs"]
        heads = [i["shape"][0] if i["shape"] else None for i in self._inputs]
        if None in heads:
            raise PackageError(f"{self.model.source}: input '{self._inputs[heads.index(None)]['name']}' is a scalar; "
                               "invocations need a batch dimension (the first) on every input")
        # Records stack along the inputs' first dimension: any size when it is symbolic, else chunks of its size.
        fixed = [h for h in heads if not isinstance(h, str)]
        if len(set(fixed)) > 1 or (fixed and len(fixed) != len(heads)):
            raise PackageError(f"{self.model.source}: the inputs' batch dimensions {heads} differ; invocations need "
                               "one batch dimension shared by every input")
        self.batch: int | None = fixed[0] if fixed else None
        # An output without the batch dimension can only be one record's result, so only a batch-1 package has them.
        self._batched = [bool(o["shape"]) and (isinstance(o["shape"][0], str) if self.batch is None
                                               else o["shape"][0] == self.batch) for o in self._outputs]
        if not all(self._batched) and self.batch != 1:
            name = self._outputs[self._batched.index(False)]["name"]
            raise PackageError(f"{self.model.source}: output '{name}' lacks the batch dimension of the inputs "
                               f"{heads}; its results cannot be told apart per record")

    @property
    def input_names(self) -> list[str]:
        return [i["name"] for i in self._inputs]

    @property
    def output_names(self) -> list[str]:
        return [o["name"] for o in self._outputs]

    def invoke(self, body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
        """Decode ``body`` per ``content_type``, run the model, encode per ``accept`` (default: the request's own
        family: CSV -> text/csv, JSON -> application/json, JSON Lines -> application/jsonlines, npy -> x-npy).
        Returns (response body, its content type); raises :class:`InferenceError` for a client problem."""
        kind = media_type(content_type)
        if kind not in CONTENT_TYPES:
            got = (f"Content-Type {content_type!r} is not supported" if content_type
                   else "the request has no Content-Type")
            raise InferenceError(415, f"{got}; expected one of {', '.join(CONTENT_TYPES)}")
        answer = self._accept(accept, kind)
        records = self._decode(body, kind)
        outputs = self.predict(records)
        return self._encode(outputs, answer), answer

    def predict(self, records: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run ``records`` (input name -> ``[k, *record]`` array) and return each output as ``[k, ...]``."""
        count = len(next(iter(records.values())))
        if count == 0:
            raise InferenceError(400, "the request holds no records")
        size = self.batch or count
        parts: list[list[np.ndarray]] = [[] for _ in self._outputs]
        for start in range(0, count, size):
            chunk = {}
            for name, array in records.items():
                part = array[start:start + size]
                if len(part) < size:  # the last chunk of a fixed batch: padded, and the padding's results dropped
                    part = np.concatenate([part, np.zeros((size - len(part), *part.shape[1:]), part.dtype)])
                chunk[name] = part
            results = self.model.run(chunk)
            for i, (result, batched) in enumerate(zip(results, self._batched)):
                parts[i].append(result if batched else result[None])
        return [np.concatenate(p)[:count] for p in parts]

    # Content types ---------------------------------------------------------------------------------------------
    def _accept(self, accept: str | None, kind: str) -> str:
        several = len(self._outputs) > 1
        wanted = [media_type(a) for a in (accept or "").split(",") if a.strip()] or ["*/*"]
        for want in wanted:
            if want == "*/*":  # the request's own family; several outputs need npz where it sent npy
                return NPZ if kind == NPY and several else kind
            if want in CONTENT_TYPES and not (want == NPY and several):
                return want
        why = (f"; the model has {len(self._outputs)} outputs ({', '.join(self.output_names)}), which {NPY} "
               f"cannot hold: ask for {NPZ}" if several and NPY in wanted else "")
        raise InferenceError(406, f"Accept {accept!r} is not supported; "
                                  f"expected one of {', '.join(CONTENT_TYPES)}{why}")

    def _decode(self, body: bytes, kind: str) -> dict[str, np.ndarray]:
        """The request's records: input name -> ``[k, *record]`` in the input's dtype."""
        several = len(self._inputs) > 1
        if kind in (CSV, NPY) and several:
            raise InferenceError(415, f"the model has {len(self._inputs)} inputs ({', '.join(self.input_names)}), "
                                 f"which {kind} cannot hold; send {JSON} with {{\"inputs\": {{name: array}}}} or {NPZ}")
        if kind in (NPY, NPZ):
            # np.load takes either format (and, refused here, pickles): check the one the request named.
            suffix, magic = (".npy", b"\x93NUMPY") if kind == NPY else (".npz", b"PK")
            if not body.startswith(magic):
                raise InferenceError(400, f"the body is not a {suffix} file ({kind}): it does not start with {magic!r}")
            try:
                loaded = np.load(io.BytesIO(body), allow_pickle=False)
                if kind == NPZ:
                    with loaded:
                        arrays = {name: loaded[name] for name in loaded.files}
            except Exception as exc:  # numpy raises ValueError, OSError, EOFError, zipfile errors... for a damaged file
                raise InferenceError(400, f"the body is not a readable {suffix} file ({kind}): {exc}") from None
            if kind == NPY:
                return {self._inputs[0]["name"]: self._records(loaded, self._inputs[0], "the .npy array")}
            return self._by_name(arrays, "the .npz archive")
        if kind == CSV:
            fast = self._csv_plain(body)
            if fast is not None:
                return {self._inputs[0]["name"]: fast}
        text = _text(body)
        if kind == CSV:
            return {self._inputs[0]["name"]: self._csv(text)}
        if kind == JSONLINES:
            lines = _lines(text, "JSON Lines")
            return self._rows([_json(line, f"JSON Lines line {n}") for n, line in lines],
                              [f"JSON Lines line {n}" for n, _ in lines])
        value = _json(text, "the JSON body")
        if isinstance(value, dict) and isinstance(value.get("inputs"), dict):
            return self._by_name(value["inputs"], 'the JSON body\'s "inputs"')
        if isinstance(value, dict) and ("instances" in value or "inputs" in value):
            value = value.get("instances", value.get("inputs"))
        if not isinstance(value, list):
            what = {dict: "an object", str: "a string", type(None): "null"}.get(type(value), "a number")
            raise InferenceError(400, f"the JSON body is {what}; expected an array of records, "
                                 '{"instances": [records]} or {"inputs": {input name: array}}')
        return self._rows(value, [f"JSON record {n}" for n in range(1, len(value) + 1)])

    def _rows(self, rows: list[Any], where: list[str]) -> dict[str, np.ndarray]:
        """Records given one by one (JSON, JSON Lines): arrays, or objects keyed by input name."""
        if not rows:
            raise InferenceError(400, "the request holds no records")
        columns: dict[str, list[np.ndarray]] = {i["name"]: [] for i in self._inputs}
        for row, place in zip(rows, where):
            if isinstance(row, dict):
                missing = [n for n in columns if n not in row]
                extra = [n for n in row if n not in columns]
                if missing or extra:
                    raise InferenceError(400, f"{place}: an object with keys {sorted(row)}; the model's inputs are "
                                         f"{self.input_names} (missing {missing}, unexpected {extra})")
            elif len(self._inputs) > 1:
                raise InferenceError(400, f"{place}: the model has {len(self._inputs)} inputs; each record must be "
                                     f"an object keyed by input name ({', '.join(self.input_names)})")
            else:
                row = {self._inputs[0]["name"]: row}
            for spec in self._inputs:
                columns[spec["name"]].append(self._record(row[spec["name"]], spec, place))
        try:
            return {name: np.stack(values) for name, values in columns.items()}
        except ValueError:  # only symbolic record dimensions can differ
            raise InferenceError(400, "the records have different shapes; one request's records must stack") from None

    def _by_name(self, arrays: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
        """Whole batches keyed by input name (npz, JSON "inputs"); every input must hold the same number of records."""
        missing = [n for n in self.input_names if n not in arrays]
        extra = [n for n in arrays if n not in self.input_names]
        if missing or extra:
            raise InferenceError(400, f"{where} names {sorted(arrays)}; the model's inputs are {self.input_names} "
                                 f"(missing {missing}, unexpected {extra})")
        out = {s["name"]: self._records(_array(arrays[s["name"]], f"{where} '{s['name']}'"), s,
                                        f"{where} '{s['name']}'") for s in self._inputs}
        counts = {n: len(a) for n, a in out.items()}
        if len(set(counts.values())) > 1:
            raise InferenceError(400, f"{where} holds different numbers of records per input: {counts}")
        return out

    def _records(self, array: np.ndarray, spec: dict, where: str) -> np.ndarray:
        """A whole batch ``[k, *record]`` for input ``spec`` (a single record's shape counts as one record)."""
        rest, size = spec["shape"][1:], self._record_size(spec)
        if array.ndim >= 1 and _fits(array.shape[1:], rest):
            out = array
        elif array.ndim == 2 and size is not None and array.shape[1] == size:
            out = array.reshape(len(array), *rest)
        elif _fits(array.shape, rest):
            out = array[None]
        else:
            raise InferenceError(400, f"{where} has shape {list(array.shape)}; the model's input '{spec['name']}' "
                                 f"(shape {spec['shape']}) takes [records, {', '.join(map(str, rest))}]"
                                 + (f" or [records, {size}] flat rows" if size is not None and len(rest) > 1 else ""))
        return _cast(out, spec, where)

    def _record(self, value: Any, spec: dict, where: str) -> np.ndarray:
        """One record (JSON, JSON Lines) for input ``spec``: its shape, or a flat array of its values."""
        rest, size = spec["shape"][1:], self._record_size(spec)
        array = _array(value, where)
        if not _fits(array.shape, rest):
            if array.ndim == 1 and size is not None and array.size == size:
                array = array.reshape(rest)
            else:
                raise InferenceError(400, f"{where} has shape {list(array.shape)}; the model's input "
                                     f"'{spec['name']}' (shape {spec['shape']}) takes records of shape {rest}"
                                     + (f" or {size} flat values" if size is not None and len(rest) > 1 else "")
                                     + ("; the body is an array of records, e.g. [[1, 2], [3, 4]]"
                                        if array.ndim < len(rest) else ""))
        return _cast(array, spec, where)

    def _csv(self, text: str) -> np.ndarray:
        spec = self._inputs[0]
        size = self._record_size(spec)
        if size is None:
            raise InferenceError(415, f"the model's input '{spec['name']}' has symbolic record dimensions "
                                 f"{spec['shape'][1:]}, which CSV rows cannot give; send {JSON} or {NPY}")
        lines = _lines(text, "CSV")
        if not lines:
            raise InferenceError(400, "the request holds no records")
        values: list[float] = []
        for n, line in lines:
            fields = line.split(",")
            if len(fields) != size:
                raise InferenceError(400, f"CSV line {n} has {len(fields)} values; the model's input '{spec['name']}' "
                                     f"(shape {spec['shape']}) takes {size} per line (one record)")
            try:
                row = [float(f) for f in fields]
            except ValueError:  # an empty field (missing value), quotes, or no number at all: find which
                row = _csv_fields(fields, n, spec)
            values.extend(row)
        array = np.array(values, dtype=np.float64).reshape(len(lines), *spec["shape"][1:])
        return _cast(array, spec, "the CSV body")

    def _csv_plain(self, body: bytes) -> np.ndarray | None:
        """What :meth:`_csv` gives for a body of plain numbers (ASCII digits, signs, ``.``, ``e``; ``\\n`` line ends),
        read in a few numpy calls (plain decimals: :func:`_plain_decimals`; others: numpy's C reader, which converts
        as ``float`` does); None for anything else, which :meth:`_csv` reads (or refuses) line by line."""
        spec = self._inputs[0]
        size = self._record_size(spec)
        data = body.rstrip(b"\n")  # blank lines at the end are no records
        if not size or not data or data.translate(None, _PLAIN_CSV):
            return None
        rows = data.count(b"\n") + 1
        array = _plain_decimals(data, rows, size)
        if array is None:
            try:
                array = np.loadtxt(io.BytesIO(data), dtype=np.float64, delimiter=",", comments=None, quotechar=None,
                                   ndmin=2)
            except Exception:  # an empty field (missing value), a bad number, lines of different lengths: _csv says
                return None
            if array.shape != (rows, size):  # loadtxt skips empty lines, which are refused
                return None
        return _cast(array.reshape(rows, *spec["shape"][1:]), spec, "the CSV body")

    @staticmethod
    def _record_size(spec: dict) -> int | None:
        rest = spec["shape"][1:]
        return None if any(isinstance(d, str) for d in rest) else math.prod(rest)

    # Encoding ---------------------------------------------------------------------------------------------------
    def _encode(self, outputs: list[np.ndarray], kind: str) -> bytes:
        count = len(outputs[0])
        if kind in (NPY, NPZ):
            buffer = io.BytesIO()
            if kind == NPY:
                np.save(buffer, outputs[0], allow_pickle=False)
            else:
                np.savez(buffer, **dict(zip(self.output_names, outputs)))
            return buffer.getvalue()
        if kind == CSV:
            table = np.concatenate([_strings(o).reshape(count, -1) for o in outputs], axis=1)
            if table.shape[1] == 1:  # one value per record (a score, a class): no row to join
                return ("\n".join(table[:, 0].tolist()) + "\n").encode()
            return "".join(",".join(row) + "\n" for row in table.tolist()).encode()
        values = [_plain(o) for o in outputs]
        entries = values[0] if len(values) == 1 else [dict(zip(self.output_names, r)) for r in zip(*values)]
        if kind == JSON:
            return json.dumps(entries, separators=(",", ":")).encode()
        return "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries).encode()


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InferenceError(400, f"the body is not UTF-8 text (byte {exc.start}); text types must be UTF-8") from None


def _lines(text: str, kind: str) -> list[tuple[int, str]]:
    """(line number, line) of a text body; blank lines at the end are no records, a blank line inside is refused."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            raise InferenceError(400, f"{kind} line {n} is empty; every line must be one record")
    return list(enumerate(lines, 1))


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InferenceError(400, f"{where} is not valid JSON: {exc}") from None


def _array(value: Any, where: str) -> np.ndarray:
    """A JSON value (or npz member) as a float64 array: null is a missing value (NaN)."""
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise InferenceError(400, f"{where} is not a rectangular array of numbers") from None


def _fits(shape: tuple, dims: list) -> bool:
    """Whether ``shape`` matches ``dims``, where a symbolic (string) dimension takes any size."""
    return len(shape) == len(dims) and all(isinstance(d, str) or s == d for s, d in zip(shape, dims))


def _cast(array: np.ndarray, spec: dict, where: str) -> np.ndarray:
    """``array`` in the input's dtype; a float that an integer or bool input cannot hold exactly is refused."""
    dtype = np.dtype(spec["dtype"])
    if dtype.kind in "iub" and array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            index = [int(i) for i in np.argwhere(bad)[0]]
            raise InferenceError(400, f"{where}: value {array[tuple(index)]!r} at {index} is not an integer; the "
                                 f"model's input '{spec['name']}' is {dtype}")
    elif dtype.kind not in "iubf" or array.dtype.kind not in "iubf":
        raise InferenceError(400, f"{where} holds {array.dtype} values; the model's input '{spec['name']}' is {dtype}")
    return np.ascontiguousarray(array, dtype=dtype)


def _plain_decimals(data: bytes, rows: int, size: int) -> np.ndarray | None:
    """``data`` (``rows`` lines of ``size`` comma-separated fields, no line end after the last) as float64, when every
    field is a plain decimal: an optional '-', then 1 to 15 digits with at most one '.' among them; else None (any
    other byte, an empty field, a line with another number of fields). Vectorised, about 1 MB of lines at a time, and
    exact: the digits as an integer under 10**15 and 10**(digits after the '.') are exact doubles, so their quotient
    is rounded once, to the double nearest the decimal, which is what ``float`` gives (Clinger's fast path)."""
    if not data:
        return None
    raw = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(raw == 10)
    out = np.empty((rows, size))
    step = max(1, rows * _DECIMAL_BLOCK // len(data))
    for first in range(0, rows, step):
        last = min(rows, first + step)
        block = raw[0 if first == 0 else ends[first - 1] + 1:len(raw) if last == rows else ends[last - 1]]
        values = _decimal_block(block, (last - first) * size, size)
        if values is None:
            return None
        out[first:last] = values.reshape(last - first, size)
    return out


def _decimal_block(a: np.ndarray, fields: int, size: int) -> np.ndarray | None:
    """The ``fields`` values of the whole lines ``a`` (see :func:`_plain_decimals`), or None."""
    sep = np.flatnonzero((a == 44) | (a == 10))  # ',' and '\n'
    if len(sep) != fields - 1 or not (a[sep[size - 1::size]] == 10).all():
        return None  # a line without exactly ``size`` fields
    start = np.empty(fields, np.intp)
    start[0], start[1:] = 0, sep + 1
    width = np.empty(fields, np.intp)
    width[:-1], width[-1] = sep, len(a)
    width -= start
    if width.min() < 1:
        return None  # an empty field
    negative = a[start] == 45  # '-'
    start += negative
    width -= negative
    if width.min() < 1 or width.max() > 16:
        return None
    padded = np.concatenate([a, np.zeros(16, np.uint8)])
    mantissa = np.zeros(fields)
    digits = np.zeros(fields, np.int8)
    scale = np.full(fields, -1, np.int8)  # digits after the '.' (-1: no '.' yet)
    for k in range(int(width.max())):  # the k-th character of every field at once
        c = padded[start + k]
        inside = width > k
        d = c - np.uint8(48)
        digit = (d < 10) & inside
        dot = (c == 46) & inside
        if not np.array_equal(digit | dot, inside) or (dot & (scale >= 0)).any():
            return None  # a '-' after the start, or a second '.'
        mantissa = np.where(digit, mantissa * 10 + d, mantissa)
        digits += digit
        scale += digit & (scale >= 0)
        scale[dot] = 0
    if digits.min() < 1 or digits.max() > 15:
        return None
    values = mantissa / _POW10[np.maximum(scale, 0)]
    np.negative(values, out=values, where=negative)
    return values


def _csv_fields(fields: list[str], line: int, spec: dict) -> list[float]:
    out = []
    for column, field in enumerate(fields, 1):
        text = field.strip().strip('"').strip()
        if not text and np.dtype(spec["dtype"]).kind == "f":
            out.append(math.nan)
            continue
        try:
            out.append(float(text))
        except ValueError:
            header = "; CSV bodies carry no header line" if line == 1 else ""
            raise InferenceError(400, f"CSV line {line}, column {column}: {field.strip()!r} is not a number; the "
                                 f"model's input '{spec['name']}' takes {spec['dtype']} values{header}") from None
    return out


def _strings(array: np.ndarray) -> np.ndarray:
    """Each value as text: floats in the shortest form that reads back to the same value of their own dtype."""
    return (array.astype(np.int8) if array.dtype == bool else array).astype(str)


def _plain(array: np.ndarray) -> list:
    """Per record, Python numbers that json writes in that shortest form (float32 via its text, not its float64)."""
    if array.dtype.kind == "f" and array.dtype != np.float64:
        array = _strings(array).astype(np.float64)
    elif array.dtype == bool:
        array = array.astype(np.int8)
    return array.tolist()
