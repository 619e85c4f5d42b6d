"""The record formats DataProcessing reads and writes (text/csv, application/json, application/jsonlines).

A CSV row is a JSON array of its fields as written (RFC 4180, read with the csv module). Fields stay strings: a
value goes back to CSV exactly as it came (``007``, ``1.50``, ``1e3`` are not rewritten), which matters for ID
columns. Only where a CSV field must become JSON (a CSV inference joined into a JSON record) does a field that is a
JSON number become a number; any other field stays a string. JSON values are re-written compactly, members in their
order; numbers go through Python's int/float (``1.50`` is written ``1.5``).

A model's response to a mini-batch of several records is split back into one result per record:

- text/csv: one line per record, each line a CSV row (several columns allowed);
- application/jsonlines: one JSON value per record, separated by newlines (any whitespace);
- application/json: a JSON array with one element per record, or one JSON value per record separated by newlines
  (so a record whose result is itself an array must be wrapped: ``[[0.1, 0.9], [0.8, 0.2]]``); a lone non-array
  value answers a mini-batch of one record.

The response to a single record (SingleRecord, or SplitType None) is that record's result: for JSON the whole body
is one value, for CSV one line.
"""
from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

#: The media types DataProcessing accepts, and the format each one names.
MEDIA_TYPES = ("text/csv", "application/json", "application/jsonlines")
_FORMATS = {"text/csv": "csv", "application/json": "json", "application/jsonlines": "jsonlines"}
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_WS = re.compile(r"\s*")


class CountMismatch(ValueError):
    """A response held ``got`` results where one per record was expected."""

    def __init__(self, got: int):
        super().__init__(got)
        self.got = got


def of(media_type: str | None) -> str | None:
    """``csv``, ``json`` or ``jsonlines`` for a DataProcessing media type (parameters ignored), else None."""
    if not media_type:
        return None
    return _FORMATS.get(media_type.split(";", 1)[0].strip().lower())


def _text(data: bytes) -> str:
    try:
        return data.decode().removeprefix("\ufeff")  # a BOM opens many exported CSV files
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None


def _quoted(text: str) -> bool:
    """Whether csv.writer would quote a field of ``text`` (commas aside)."""
    return '"' in text or "\r" in text or "\n" in text


def _csv_row(text: str) -> list[str]:
    if "\x00" in text:
        raise ValueError("not CSV: it holds a NUL byte (binary data?)")
    if '"' not in text and "\r" not in text:  # no quotes: RFC 4180 fields are what lies between commas
        return text.split(",") if text else []
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as e:
        raise ValueError(f"not CSV (RFC 4180): {e}") from None
    return rows[0]


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON: {e}") from None


def read(fmt: str, data: bytes) -> Any:
    """One input record as a JSON value (a CSV row: a list of strings); ValueError says why it is not one."""
    text = _text(data)
    return _csv_row(text) if fmt == "csv" else _json(text)


def write(fmt: str, value: Any) -> bytes:
    """A value as one record of ``fmt``, without a line end: a CSV row (a non-list is a one-field row), or JSON."""
    if fmt != "csv":
        return _dumps(value).encode()
    if isinstance(value, list) and value != [""]:
        try:
            text = ",".join(value)
        except TypeError:  # not all strings
            text = None
        if text is not None and text.count(",") == len(value) - 1 and not _quoted(text):
            return text.encode()  # nothing to quote: what csv.writer would write
    out = io.StringIO()
    csv.writer(out).writerow([_field(v) for v in (value if isinstance(value, list) else [value])])
    return out.getvalue()[:-2].encode()  # writerow ends the row with \r\n; \r and \n inside fields get quoted


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _field(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return _dumps(value)


def _from_csv(field: str) -> Any:
    return json.loads(field) if _NUMBER.fullmatch(field) else field


def to_json(fmt: str, inference: Any) -> Any:
    """An inference as a JSON value: a CSV row of one field is that field, numbers become numbers."""
    if fmt != "csv":
        return inference
    if len(inference) == 1:
        return _from_csv(inference[0])
    return [_from_csv(f) for f in inference]


def join(input_fmt: str, record: Any, response_fmt: str, inference: Any) -> Any:
    """JoinSource Input: a CSV row gets the inference's fields appended; a JSON object gets ``SageMakerOutput``
    (an input member of that name is replaced); any other JSON value is wrapped as
    ``{"SageMakerInput": record, "SageMakerOutput": inference}``."""
    if input_fmt == "csv":
        return [*record, *inference] if isinstance(inference, list) else [*record, inference]
    inference = to_json(response_fmt, inference)
    if isinstance(record, dict):
        return {**record, "SageMakerOutput": inference}
    return {"SageMakerInput": record, "SageMakerOutput": inference}


def _lines(text: str) -> list[str]:
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _values(text: str) -> list[Any]:
    decoder, values, pos = json.JSONDecoder(), [], _WS.match(text, 0).end()
    while pos < len(text):
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON: {e}") from None
        values.append(value)
        pos = _WS.match(text, pos).end()
    return values


def split(fmt: str, data: bytes, count: int, batch: bool) -> list[Any]:
    """A response as one result per record: ``count`` records, ``batch`` when they went as one MultiRecord
    mini-batch. Raises :class:`CountMismatch` for another number of results, ValueError for unreadable data."""
    text = _text(data)
    if fmt == "csv":
        results: list[Any] = [_csv_row(line) for line in _lines(text)]
    elif fmt == "json" and not batch:
        results = [_json(text)]
    elif fmt == "json":
        try:
            value = json.loads(text)
            results = value if isinstance(value, list) else [value]
        except json.JSONDecodeError:
            results = _values(text)
    else:
        results = _values(text)
    if len(results) != count:
        raise CountMismatch(len(results))
    return results
