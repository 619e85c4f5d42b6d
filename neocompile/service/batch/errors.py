"""What a transform raises while reading data: a bad record, or a stop request."""
from __future__ import annotations


class RecordError(Exception):
    """A record could not be transformed. ``record`` is its 1-based position in its file (for SplitType Line, its
    line number; for SplitType None, 1); ``message`` says what is wrong with it. ``str()`` names both."""

    def __init__(self, record: int, message: str):
        super().__init__(record, message)
        self.record, self.message = record, message

    def __str__(self) -> str:
        return f"record {self.record}: {self.message}"


class Stopped(Exception):
    """``should_stop()`` became true between two mini-batches; ``records`` were done (their output is partial)."""

    def __init__(self, records: int):
        super().__init__(records)
        self.records = records

    def __str__(self) -> str:
        return f"stopped after {self.records} records"


class InvokeError(Exception):
    """``invoke`` could not get an answer for a payload (the model refused it, or failed after its retries).
    ``transform_stream`` turns it into a :class:`RecordError` naming the records of that payload."""
