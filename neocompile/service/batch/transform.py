"""One input object through the model: split, filter, batch, invoke, pair, join, filter, assemble.

Payloads: a SingleRecord payload is the record (no line end, no framing). A MultiRecord payload of Line records is
the records joined with ``\\n`` (valid CSV / JSON Lines, no final line end); of RecordIO / TFRecord records, their
frames as in the file, padding kept. Every payload, the joining ``\\n`` included, is at most MaxPayloadInMB.

Output: when nothing has to be paired with its input record (JoinSource None and OutputFilter ``$``) each response
is written as the model sent it; AssembleWith Line ends each response with a newline unless it already ends with one
(so a MultiRecord response of one line per record stays one line per record). Otherwise each response is split into
one result per record (``formats.split``), joined, filtered and written as one record; AssembleWith Line ends every
record with ``\\n``, None concatenates them.

Memory is bounded by ``concurrency`` mini-batches (each its payload, and with JoinSource Input and an InputFilter its
input records too) and one record being read, whatever the size of the object (except SplitType None, where the
object is the payload).
"""
from __future__ import annotations

import io
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from . import formats, splitting
from .errors import InvokeError, RecordError, Stopped
from .jsonpath import PathError, parse
from .spec import TransformSpec, check

Invoke = Callable[[bytes, "str | None", "str | None"], bytes]


@dataclass
class _Item:
    index: int
    piece: bytes          # this record's part of the payload
    record: bytes | None  # the input record, kept for JoinSource Input (as bytes: a parsed CSV row or JSON value
                          # takes several times the memory, and mini-batches are held in memory)


@dataclass
class _LineBatch:
    """A MultiRecord mini-batch of Line records whose responses need no pairing: its payload (the records joined
    with ``\\n``), how many records it holds and the line numbers of the first and the last."""
    first: int
    last: int
    count: int
    payload: bytes

    def __len__(self) -> int:
        return self.count


class _Plan:
    def __init__(self, spec: TransformSpec):
        self.spec = spec
        self.limit = spec.max_payload_bytes
        self.binary = spec.split_type in ("RecordIO", "TFRecord")
        self.multi = spec.strategy == "MultiRecord"
        dp = spec.data_processing
        self.in_fmt = spec.input_format if dp else None
        self.resp_fmt = spec.response_format if dp else None
        self.out_fmt = spec.output_format if dp else None
        self.input_path, self.output_path = parse(spec.input_filter), parse(spec.output_filter)
        self.filter_input = dp and not self.input_path.is_root
        self.join = spec.join_source == "Input"
        self.pairs = spec.pairs_records
        # JSON Lines not split: the object goes as one request, but DataProcessing still works record by record.
        self.lines_in_object = dp and spec.split_type == "None" and self.in_fmt == "jsonlines"
        self.batched = self.multi or self.lines_in_object
        self.line_end = b"\n" if spec.assemble_with == "Line" else b""
        # MultiRecord Line records sent as they are (no InputFilter, no pairing): batched a chunk at a time.
        self.whole_lines = (self.multi and spec.split_type == "Line" and self.limit is not None and not self.pairs
                            and not self.filter_input and not self.join and not self.lines_in_object)

    def items(self, source: splitting.Source) -> Iterator[_Item]:
        records: Iterable[splitting.Record] = splitting.records(self.spec.split_type, source, self.limit,
                                                                keep_frame=self.binary and self.multi)
        if self.lines_in_object:
            whole = next(iter(records)).data
            records = splitting.lines(splitting.Source(io.BytesIO(whole), False), None)
        for rec in records:
            yield self.item(rec)

    def item(self, rec: splitting.Record) -> _Item:
        if self.binary:
            return _Item(rec.index, rec.frame if self.multi else rec.data, None)
        if not (self.filter_input or self.join):
            return _Item(rec.index, rec.data, None)
        try:
            value = formats.read(self.in_fmt, rec.data)
        except ValueError as e:
            raise RecordError(rec.index, f"ContentType {self.spec.content_type}: the record is {e}") from None
        piece = rec.data
        if self.filter_input:
            try:
                selected = self.input_path.apply(value)
            except PathError as e:
                raise RecordError(rec.index, f"DataProcessing.InputFilter {self.spec.input_filter}: {e}") from None
            if selected == [] and self.in_fmt == "csv":  # an empty line: nothing to send, and no line to pair
                raise RecordError(rec.index, f"DataProcessing.InputFilter {self.spec.input_filter} selects no column "
                                             "of the record")
            piece = formats.write(self.in_fmt, selected)
        return _Item(rec.index, piece, rec.data if self.join else None)

    def batches(self, items: Iterator[_Item]) -> Iterator[list[_Item]]:
        limit = self.limit
        if not self.batched:
            for item in items:
                if limit is not None and len(item.piece) > limit:
                    raise splitting.too_large(item.index, len(item.piece), limit, "payload")
                yield [item]
            return
        sep = 0 if self.binary else 1
        batch: list[_Item] = []
        size = 0
        for item in items:
            n = len(item.piece)
            if limit is not None and n > limit:
                raise splitting.too_large(item.index, n, limit, "payload")
            if batch and not self.lines_in_object and limit is not None and size + sep + n > limit:
                yield batch
                batch, size = [], 0
            size += n + (sep if batch else 0)
            if self.lines_in_object and limit is not None and size > limit:
                raise splitting.too_large(batch[0].index if batch else item.index, size, limit,
                                           "payload (SplitType None: one request)")
            batch.append(item)
        if batch:
            yield batch

    def line_batches(self, source: splitting.Source) -> Iterator[_LineBatch]:
        """What ``batches(items(source))`` gives for :attr:`whole_lines`, without a Python step per record: each
        mini-batch holds as many records as fit in MaxPayloadInMB with the ``\\n`` between them (the same batches),
        cut from runs of lines at a line end."""
        limit = self.limit
        parts: list[bytes] = []
        size = count = first = last = 0
        for run in splitting.line_runs(source, limit):
            data, number, n = run.data, run.first, run.count
            while n:
                room = limit - (size + 1 if parts else 0)  # what more fits, the \n before it included
                if len(data) <= room:
                    take, k = len(data), n
                else:
                    take = data.rfind(b"\n", 0, room + 1)  # the longest run of whole records that fits
                    if take < 0:  # not even the next record
                        record = data.find(b"\n")
                        record = len(data) if record < 0 else record
                        if not parts or record > limit:
                            raise splitting.too_large(number, record, limit, "payload")
                        yield _LineBatch(first, last, count, b"\n".join(parts))
                        parts, size, count = [], 0, 0
                        continue
                    k = data.count(b"\n", 0, take) + 1
                if not parts:
                    first = number
                parts.append(data[:take] if take < len(data) else data)
                size, count, last = (size + 1 if len(parts) > 1 else 0) + take, count + k, number + k - 1
                if k == n:
                    break
                yield _LineBatch(first, last, count, b"\n".join(parts))  # the next record does not fit
                parts, size, count = [], 0, 0
                data, number, n = data[take + 1:], number + k, n - k
        if parts:
            yield _LineBatch(first, last, count, b"\n".join(parts))

    def payload(self, batch: list[_Item]) -> bytes:
        if len(batch) == 1:
            return batch[0].piece
        return (b"" if self.binary else b"\n").join(item.piece for item in batch)

    def call(self, invoke: Invoke, batch: list[_Item] | _LineBatch) -> bytes:
        lines = isinstance(batch, _LineBatch)
        try:
            return invoke(batch.payload if lines else self.payload(batch), self.spec.content_type, self.spec.accept)
        except InvokeError as e:
            first, last = (batch.first, batch.last) if lines else (batch[0].index, batch[-1].index)
            which = "" if len(batch) == 1 else f"the mini-batch of records {first}-{last}: "
            raise RecordError(first, f"{which}{e}") from None

    def output(self, batch: list[_Item] | _LineBatch, response: bytes) -> bytes:
        if not isinstance(response, bytes):
            response = bytes(response)
        if not self.pairs:
            if self.line_end and not response.endswith(b"\n"):
                return response + b"\n"
            return response
        first, last = batch[0].index, batch[-1].index
        which = f"record {first}" if len(batch) == 1 else f"the mini-batch of records {first}-{last}"
        try:
            results = formats.split(self.resp_fmt, response, len(batch), self.batched)
        except formats.CountMismatch as e:
            raise RecordError(first, f"the model returned {e.got} results for {len(batch)} records ({which}); "
                                     f"DataProcessing pairs one result with each record") from None
        except ValueError as e:
            accept = self.spec.accept or self.spec.content_type
            raise RecordError(first, f"the model's response to {which} (Accept {accept}) is {e}") from None
        out = []
        for item, inference in zip(batch, results):
            if self.join:  # the record was read once already (item()): it parses
                value = formats.join(self.in_fmt, formats.read(self.in_fmt, item.record), self.resp_fmt, inference)
            else:
                value = inference
            try:
                value = self.output_path.apply(value)
            except PathError as e:
                what = "joined record" if self.join else "inference"
                raise RecordError(item.index, f"DataProcessing.OutputFilter {self.spec.output_filter} does not fit the "
                                              f"{what}: {e}") from None
            out.append(formats.write(self.out_fmt, value) + self.line_end)
        return b"".join(out)


def transform_stream(spec: TransformSpec, source: BinaryIO, sink: BinaryIO, invoke: Invoke,
                     should_stop: Callable[[], bool] = lambda: False, concurrency: int = 1) -> int:
    """Transform one input object from ``source`` into ``sink``; returns the number of records.

    ``invoke(payload, content_type, accept)`` is one call to the model (``/invocations``); up to ``concurrency``
    calls are in flight, their outputs written in input order. Raises :class:`RecordError` for data that cannot be
    transformed (the file failed: discard ``sink``), :class:`Stopped` when ``should_stop()`` is true between
    mini-batches (calls already in flight are not waited for), ValueError when ``check(spec)`` finds problems, and
    whatever ``invoke`` raises, except :class:`InvokeError`, which becomes the RecordError of its payload's records.
    """
    problems = check(spec)
    if problems:
        raise ValueError("; ".join(problems))
    plan = _Plan(spec)
    stream = splitting.Source(source, spec.compression == "Gzip")
    batches = plan.line_batches(stream) if plan.whole_lines else plan.batches(plan.items(stream))
    done = 0
    if concurrency <= 1:
        for batch in batches:
            if should_stop():
                raise Stopped(done)
            sink.write(plan.output(batch, plan.call(invoke, batch)))
            done += len(batch)
        return done
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="transform")
    window: deque[tuple[list[_Item], Future]] = deque()
    try:
        for batch in batches:
            if should_stop():
                raise Stopped(done)
            window.append((batch, pool.submit(plan.call, invoke, batch)))
            if len(window) >= concurrency:
                oldest, future = window.popleft()
                sink.write(plan.output(oldest, future.result()))
                done += len(oldest)
        while window:
            if should_stop():
                raise Stopped(done)
            oldest, future = window.popleft()
            sink.write(plan.output(oldest, future.result()))
            done += len(oldest)
    finally:
        # On success nothing is left; on an error or a stop, queued calls are dropped and running ones not awaited.
        pool.shutdown(wait=False, cancel_futures=True)
    return done
