"""SplitType: an input object (decompressed as it is read) as a stream of records, in bounded memory.

- None: the whole object is one record; it must fit in MaxPayloadInMB (0: no limit).
- Line: one record per line, split on ``\\n`` with a ``\\r`` before it dropped; records carry no line end (the
  batcher joins a MultiRecord mini-batch with ``\\n``). Empty lines are skipped: they are not records, and sending
  them would break the one-line-per-record pairing of responses. A record's number is its line number.
- RecordIO: MXNet's (dmlc-core) framing: uint32 magic 0xCED7230A, uint32 whose upper 3 bits are the continuation
  flag (0 whole, 1 first, 2 middle, 3 last part) and lower 29 bits the length, data, zero padding to 4 bytes. A
  record split in parts (the writer splits where the data holds the magic) is joined back with the magic between.
- TFRecord: uint64 length, uint32 masked CRC-32C of the length, data, uint32 masked CRC-32C of the data; both CRCs
  are verified.

For binary formats a record has its ``data`` (framing and padding removed: what SingleRecord sends) and, when asked
for, its ``frame`` (the bytes as they were in the file: what MultiRecord sends, "padding is not removed").
"""
from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .errors import RecordError

CHUNK = 1 << 16
RECORDIO_MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", RECORDIO_MAGIC)
_LENGTH_MASK = (1 << 29) - 1


@dataclass
class Record:
    index: int              # 1-based position in the file (for Line: the line number)
    data: bytes             # the record without framing, line end or padding
    frame: bytes | None = None  # RecordIO / TFRecord: the record's bytes as framed in the file


class Source:
    """The object's bytes, gunzipped when CompressionType is Gzip; decompression errors become RecordErrors."""

    def __init__(self, raw: BinaryIO, gzipped: bool):
        self._f = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
        self._gzipped = gzipped
        self.record = 1  # the record being read, for error messages

    def read(self, n: int) -> bytes:
        try:
            return self._f.read(n) or b""
        except (OSError, EOFError, zlib.error) as e:
            if not self._gzipped:
                raise
            raise RecordError(self.record, f"TransformInput.CompressionType is Gzip but the object is not valid "
                                           f"gzip data ({e})") from None

    def read_exact(self, n: int) -> bytes:
        """``n`` bytes, fewer only at the end of the object."""
        parts, left = [], n
        while left:
            part = self.read(min(left, 1 << 20))
            if not part:
                break
            parts.append(part)
            left -= len(part)
        return b"".join(parts)


def too_large(index: int, size: int, limit: int, what: str = "record", partial: bool = False) -> RecordError:
    """The error for a record or payload over MaxPayloadInMB; ``partial``: ``size`` is what was read so far."""
    return RecordError(index, f"the {what} ({size} bytes{' or more' if partial else ''}) is larger than MaxPayloadInMB "
                              f"{limit // (1 << 20)} ({limit} bytes): raise MaxPayloadInMB (at most 100) or split "
                              "the data into smaller records")


def whole(source: Source, limit: int | None) -> bytes:
    """SplitType None: the whole object, refused once it passes ``limit`` bytes (None: no limit)."""
    parts, size = [], 0
    while part := source.read(CHUNK):
        size += len(part)
        if limit is not None and size > limit:
            raise too_large(1, size, limit, "object (SplitType None: one request)", partial=True)
        parts.append(part)
    return b"".join(parts)


def lines(source: Source, limit: int | None) -> Iterator[Record]:
    """SplitType Line: non-empty lines without their line end; a line longer than ``limit`` is refused as soon as
    that many bytes of it were read."""
    for run in line_runs(source, limit):
        for number, part in enumerate(run.data.split(b"\n"), run.first):
            yield Record(number, part)


@dataclass
class Lines:
    """Records ``first`` to ``first + count - 1`` of :func:`lines`, consecutive lines, joined with ``\\n``."""
    data: bytes
    first: int
    count: int


def line_runs(source: Source, limit: int | None) -> Iterator[Lines]:
    """:func:`lines` a chunk at a time, as runs of consecutive lines (the same records, numbers and errors, raised
    after the records before them were given). A chunk whose lines are neither empty nor too long (the usual case)
    costs a few C calls whatever its number of lines."""
    pending: list[bytes] = []
    pending_size = 0
    lineno = 1
    while chunk := source.read(CHUNK):
        end = chunk.rfind(b"\n")
        if end >= 0:
            first = lineno
            block = b"".join(pending + [chunk[:end + 1]]) if pending else chunk[:end + 1]  # whole lines
            if b"\r" in block:
                block = block.replace(b"\r\n", b"\n")  # one \r before each \n dropped
            pending, pending_size = [], 0
            if block[0] != 10 and b"\n\n" not in block and (limit is None or len(block) <= limit + 1):
                count = block.count(b"\n")  # no line empty, none too long
                lineno += count
                source.record = lineno
                yield Lines(block[:-1], first, count)
            else:
                parts = block.split(b"\n")
                parts.pop()
                lineno += len(parts)
                source.record = lineno
                if limit is not None and max(map(len, parts)) > limit:
                    at = next(i for i, part in enumerate(parts) if len(part) > limit)
                    yield from _runs(parts[:at], first)
                    raise too_large(first + at, len(parts[at]), limit)
                yield from _runs(parts, first)  # empty lines are no records
            tail = chunk[end + 1:]
        else:
            tail = chunk
        if tail:
            pending.append(tail)
            pending_size += len(tail)
            if limit is not None and pending_size > limit + 1:  # +1: a \r that may precede the \n
                raise too_large(lineno, pending_size, limit, partial=True)
    if pending:
        part = b"".join(pending)
        if part.endswith(b"\r"):
            part = part[:-1]
        if limit is not None and len(part) > limit:
            raise too_large(lineno, len(part), limit)
        if part:
            yield Lines(part, lineno, 1)


def _runs(parts: list[bytes], first: int) -> Iterator[Lines]:
    """The non-empty ``parts`` (lines ``first``, ``first + 1``, ...) as runs of consecutive lines."""
    start = None
    for i, part in enumerate(parts + [b""]):
        if part and start is None:
            start = i
        elif not part and start is not None:
            yield Lines(b"\n".join(parts[start:i]), first + start, i - start)
            start = None


def recordio(source: Source, limit: int | None, keep_frame: bool) -> Iterator[Record]:
    """SplitType RecordIO (MXNet framing). ``limit`` bounds the data, or the frame when ``keep_frame``."""
    index = 1
    while True:
        source.record = index
        data: list[bytes] = []
        frame: list[bytes] = []
        size = 0
        expect_first = True
        while True:
            head = source.read_exact(8)
            if not head and expect_first:
                return
            if len(head) < 8:
                raise RecordError(index, "RecordIO: the file ends inside a record header (truncated?)")
            magic, lrec = struct.unpack("<II", head)
            if magic != RECORDIO_MAGIC:
                raise RecordError(index, f"RecordIO: bad magic number 0x{magic:08X} (expected 0x{RECORDIO_MAGIC:08X}): "
                                         "not RecordIO data, or corrupt")
            cflag, length = lrec >> 29, lrec & _LENGTH_MASK
            if cflag > 3 or (cflag in (0, 1)) != expect_first:
                raise RecordError(index, f"RecordIO: continuation flag {cflag} out of sequence (corrupt file)")
            padded = (length + 3) & ~3
            size += (len(head) + padded) if keep_frame else length + (0 if cflag in (0, 3) else 4)
            if limit is not None and size > limit:
                raise too_large(index, size, limit)
            body = source.read_exact(padded)
            if len(body) < padded:
                raise RecordError(index, f"RecordIO: the file ends inside a record ({len(body)} of {padded} bytes; "
                                         "truncated?)")
            data.append(body[:length])
            if keep_frame:
                frame += (head, body)
            if cflag in (0, 3):
                break
            data.append(_MAGIC_BYTES)  # dmlc-core splits a record where it holds the magic, and drops the magic
            expect_first = False
        yield Record(index, b"".join(data), b"".join(frame) if keep_frame else None)
        index += 1


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        for _ in range(8):
            n = (n >> 1) ^ 0x82F63B78 if n & 1 else n >> 1
        table.append(n)
    return table


_CRC32C = _crc32c_table()


def crc32c_python(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord uses it, in pure Python: about 3 MB/s."""
    crc, table = 0xFFFFFFFF, _CRC32C
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # Google's C implementation (the google-crc32c package), over 1 GB/s, when it is installed
    from google_crc32c import value as crc32c
except ImportError:
    crc32c = crc32c_python


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 and add a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(source: Source, limit: int | None, keep_frame: bool) -> Iterator[Record]:
    """SplitType TFRecord, both CRCs checked. ``limit`` bounds the data, or the frame when ``keep_frame``."""
    index = 1
    while True:
        source.record = index
        head = source.read_exact(12)
        if not head:
            return
        if len(head) < 12:
            raise RecordError(index, "TFRecord: the file ends inside a record header (truncated?)")
        (length,), (crc,) = struct.unpack("<Q", head[:8]), struct.unpack("<I", head[8:])
        if masked_crc32c(head[:8]) != crc:
            raise RecordError(index, "TFRecord: the length's CRC does not match: not TFRecord data, or corrupt")
        size = length + 16 if keep_frame else length
        if limit is not None and size > limit:
            raise too_large(index, size, limit)
        data = source.read_exact(length)
        footer = source.read_exact(4)
        if len(data) < length or len(footer) < 4:
            raise RecordError(index, "TFRecord: the file ends inside a record (truncated?)")
        if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
            raise RecordError(index, "TFRecord: the data's CRC does not match: the record is corrupt")
        yield Record(index, data, head + data + footer if keep_frame else None)
        index += 1


def records(split_type: str, source: Source, limit: int | None, keep_frame: bool) -> Iterator[Record]:
    """The records of one object for ``split_type`` (None: the whole object as record 1)."""
    if split_type == "Line":
        return lines(source, limit)
    if split_type == "RecordIO":
        return recordio(source, limit, keep_frame)
    if split_type == "TFRecord":
        return tfrecord(source, limit, keep_frame)
    return iter([Record(1, whole(source, limit))])
