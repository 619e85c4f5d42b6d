"""The JSONPath subset of SageMaker's DataProcessing filters (InputFilter, OutputFilter): parse, then apply.

The subset, as AWS documents it (batch-transform-data-processing.md), and nothing more:

    $                       the root; every path starts with it
    .name  ['name']         a child of an object
    .*  [*]                 every child (of an object: its values; of an array: its elements)
    ['a','b']               several children of an object: an object with just those members
    [1]  [-1]               an array element; negative indexes count from the end (-1 = last)
    [1,3,5]  [2:5]  [0,5:]  several elements: indexes and at most one slice per bracket
                            (AWS: "only single range filters of format (eg: [1:5]) are supported")

A selection of several children (wildcard, several names, several indexes, a slice) ends the path: AWS refuses
nesting under a multi-child bracket (``$.field1.['child1','child2.grandchild']``), and applying the rule to every
multi-selection spares the subset JSONPath's projection semantics, which no documented filter uses.

Slices are END-EXCLUSIVE, as in Python and in Jayway JsonPath (the implementation AWS's page links, whose table
describes ``[start:end]`` as JavaScript's ``slice``): ``$[1:4]`` is elements 1, 2 and 3. The page's CSV prose reads
``$[1:4]`` as "second through fifth columns" (end-inclusive), which contradicts its own table; the filters used in
practice (``$[1:]``, ``$[0,-1]``, ``$[n:]``, ``$[0,5:]``) mean the same under both readings. Slice bounds clamp to
the array as in Python; a single index outside the array is an error, as AWS documents for OutputFilter.

Why not a library: jsonpath-ng (the maintained Python implementation) accepts far more than the subset (recursive
descent, filters, arithmetic, paths without ``$``), so a validator of our own would be needed anyway; it rejects the
documented ``$[0,5:]``; and it returns flat match lists, where a filter must build a value (``['id','SageMakerOutput']``
makes an object). The subset fits in a recursive-descent parser of a page.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["JsonPath", "JsonPathError", "PathError", "parse"]


class JsonPathError(ValueError):
    """The expression is outside the supported subset; the message is AWS's ``Invalid JsonPath: <expr>: <why>``."""


class PathError(LookupError):
    """A valid path does not fit a record (missing member, index out of range, wrong type)."""


class _Miss(Exception):
    """A step did not fit; the message has ``{where}`` for the path so far (built only on failure)."""


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"an array of {len(value)}"
    return "a single value" if value is not None else "null"


def _object(value: Any, seg: Name | Names) -> dict:
    if not isinstance(value, dict):
        raise _Miss(f"{{where}} is {_kind(value)}, not an object: no member {seg.show().lstrip('.')}")
    return value


def _array(value: Any, seg: Index | Selection) -> list:
    if not isinstance(value, list):
        raise _Miss(f"{{where}} is {_kind(value)}, not an array: no {seg.show()}")
    return value


def _element(value: list, index: int) -> Any:
    if not -len(value) <= index < len(value):
        raise _Miss(f"index {index} is outside {{where}} ({_kind(value)})")
    return value[index]


def _member(value: dict, name: str) -> Any:
    if name not in value:
        raise _Miss(f"{{where}} has no member '{name}'")
    return value[name]


@dataclass(frozen=True)
class Name:
    """``.name`` or ``['name']``: one member."""
    name: str

    def select(self, value: Any) -> Any:
        return _member(_object(value, self), self.name)

    def show(self) -> str:
        return f".{self.name}" if _NAME.fullmatch(self.name) else f"['{self.name}']"


@dataclass(frozen=True)
class Names:
    """``['a','b']``: an object of just those members."""
    names: tuple[str, ...]

    def select(self, value: Any) -> Any:
        value = _object(value, self)
        return {n: _member(value, n) for n in self.names}

    def show(self) -> str:
        return "[" + ",".join(f"'{n}'" for n in self.names) + "]"


@dataclass(frozen=True)
class Index:
    """``[i]``: one element."""
    index: int

    def select(self, value: Any) -> Any:
        return _element(_array(value, self), self.index)

    def show(self) -> str:
        return f"[{self.index}]"


@dataclass(frozen=True)
class Selection:
    """``[i,j]``, ``[a:b]``, ``[i,a:]``: several elements, ints and (start, end) slices in the order written."""
    items: tuple[int | tuple[int | None, int | None], ...]

    def select(self, value: Any) -> Any:
        value = _array(value, self)
        out: list = []
        for item in self.items:
            if isinstance(item, int):
                out.append(_element(value, item))
            else:
                out.extend(value[item[0]:item[1]])
        return out

    def show(self) -> str:
        return "[" + ",".join(str(i) if isinstance(i, int) else f"{_opt(i[0])}:{_opt(i[1])}" for i in self.items) + "]"


@dataclass(frozen=True)
class Wildcard:
    """``*``: an object's values, or an array's elements."""

    def select(self, value: Any) -> Any:
        if isinstance(value, dict):
            return list(value.values())
        if isinstance(value, list):
            return list(value)
        raise _Miss(f"{{where}} is {_kind(value)}: * needs an object or an array")

    def show(self) -> str:
        return "[*]"


def _opt(n: int | None) -> str:
    return "" if n is None else str(n)


Segment = Name | Names | Index | Selection | Wildcard
_MULTI = (Names, Selection, Wildcard)

_NAME = re.compile(r"[\w\-:]+")
_INT = re.compile(r"-?\d+")


@dataclass(frozen=True)
class JsonPath:
    """A parsed filter. ``apply(value)`` returns the selected part of a JSON value (CSV rows are arrays)."""

    text: str
    segments: tuple[Segment, ...]

    @property
    def is_root(self) -> bool:
        """``$``: the filter selects the whole record."""
        return not self.segments

    @property
    def uses_names(self) -> bool:
        """Whether the path selects object members (which a CSV row, an array, does not have)."""
        return any(isinstance(s, (Name, Names)) for s in self.segments)

    def apply(self, value: Any) -> Any:
        """Select from ``value``; raises :class:`PathError` naming the step that does not fit."""
        for i, seg in enumerate(self.segments):
            try:
                value = seg.select(value)
            except _Miss as miss:
                where = "$" + "".join(s.show() for s in self.segments[:i])
                raise PathError(miss.args[0].replace("{where}", where)) from None
        return value


def parse(text: str) -> JsonPath:
    """Parse a filter, or raise :class:`JsonPathError` saying what is outside the subset."""
    return _Parser(text).path()


class _Parser:
    def __init__(self, text: str):
        self.text, self.pos = text, 0

    def fail(self, why: str) -> JsonPathError:
        return JsonPathError(f"Invalid JsonPath: {self.text}: {why}")

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos:self.pos + n]

    def spaces(self) -> None:
        while self.peek() in (" ", "\t"):
            self.pos += 1

    def path(self) -> JsonPath:
        if not self.text.startswith("$"):
            raise self.fail("a path must start with $ (the root)")
        self.pos = 1
        segments: list[Segment] = []
        while self.pos < len(self.text):
            if segments and isinstance(segments[-1], _MULTI):
                raise self.fail(f"nothing may follow a selection of several children ({segments[-1].show()}), "
                                f"found '{self.text[self.pos:]}'")
            segments.append(self.segment())
        return JsonPath(self.text, tuple(segments))

    def segment(self) -> Segment:
        c = self.peek()
        if c == "[":
            return self.bracket()
        if c != ".":
            raise self.fail(f"unexpected '{c}' at position {self.pos}: expected '.' or '['")
        self.pos += 1
        c = self.peek()
        if c == ".":
            raise self.fail("recursive descent (..) is not supported")
        if c == "[":  # AWS's own example: $.field1.['child1','child2']
            return self.bracket()
        if c == "*":
            self.pos += 1
            return Wildcard()
        m = _NAME.match(self.text, self.pos)
        if not m:
            raise self.fail(f"expected a member name after '.' at position {self.pos - 1}")
        self.pos = m.end()
        return Name(m.group())

    def bracket(self) -> Segment:
        start = self.pos
        end = self.text.find("]", start)
        self.pos += 1
        self.spaces()
        c = self.peek()
        if c == "*":
            self.pos += 1
            seg: Segment = Wildcard()
        elif c in ("'", '"'):
            seg = self.names()
        elif c == "?" or c == "(":
            raise self.fail("filter and script expressions ([?(...)], [(...)]) are not supported")
        else:
            seg = self.indexes(self.text[start:end + 1] if end > 0 else self.text[start:])
        self.spaces()
        if self.peek() != "]":
            raise self.fail(f"expected ']' at position {self.pos}" if self.pos < len(self.text) else "missing ']'")
        self.pos += 1
        return seg

    def names(self) -> Segment:
        names: list[str] = []
        while True:
            names.append(self.quoted())
            self.spaces()
            if self.peek() != ",":
                break
            self.pos += 1
            self.spaces()
            if self.peek() not in ("'", '"'):
                raise self.fail(f"expected a quoted name at position {self.pos}: names and indexes cannot mix")
        if len(names) == 1:
            return Name(names[0])
        for name in names:
            if "." in name:
                raise self.fail(f"'{name}': a bracket of several children cannot nest further")
        return Names(tuple(names))

    def quoted(self) -> str:
        quote = self.peek()
        self.pos += 1
        out = []
        while True:
            c = self.peek()
            if not c:
                raise self.fail(f"unterminated name: missing {quote}")
            self.pos += 1
            if c == quote:
                return "".join(out)
            if c == "\\" and self.peek() in (quote, "\\"):
                c = self.peek()
                self.pos += 1
            out.append(c)

    def indexes(self, shown: str) -> Segment:
        items: list[int | tuple[int | None, int | None]] = []
        while True:
            self.spaces()
            first = self.integer()
            self.spaces()
            if self.peek() == ":":
                self.pos += 1
                self.spaces()
                second = self.integer()
                self.spaces()
                if self.peek() == ":":
                    raise self.fail("slice steps ([start:end:step]) are not supported")
                items.append((first, second))
            elif first is None:
                c = self.peek()
                raise self.fail(f"unexpected '{c}' at position {self.pos}: expected an index, a slice, * or a quoted "
                                "name" if c else "missing ']'")
            else:
                items.append(first)
            self.spaces()
            if self.peek() != ",":
                break
            self.pos += 1
        if sum(isinstance(i, tuple) for i in items) > 1:
            raise JsonPathError(f"Invalid JsonPath: {self.text}: only single range filters of format (eg: [1:5]) are "
                                f"supported. Format {shown} is not supported")
        if len(items) == 1 and isinstance(items[0], int):
            return Index(items[0])
        return Selection(tuple(items))

    def integer(self) -> int | None:
        m = _INT.match(self.text, self.pos)
        if not m:
            return None
        self.pos = m.end()
        return int(m.group())
