"""Batch transform's data plane: SageMaker's TransformInput / TransformOutput / DataProcessing semantics applied to
one input object at a time, with no HTTP and no store (the job service and the worker call it).

- ``spec``: :class:`TransformSpec` (a CreateTransformJob's data members) and :func:`check`, the rules that hold
  before any data is read.
- ``splitting``: SplitType None / Line / RecordIO / TFRecord, read as a stream (Gzip decompressed on the way).
- ``jsonpath``: the JSONPath subset of InputFilter / OutputFilter.
- ``formats``: CSV / JSON / JSON Lines records, joins (JoinSource Input), splitting a response back into records.
- ``transform``: :func:`transform_stream`, one object through the model, in bounded memory.

Where SageMaker's documentation leaves a choice, the module that makes it says which and why (slices are
end-exclusive: ``jsonpath``; MaxPayloadInMB 0: ``spec.check``; CSV fields kept as written: ``formats``; payload and
output framing: ``transform``).
"""
from __future__ import annotations

from .errors import InvokeError, RecordError, Stopped
from .spec import TransformSpec, check
from .transform import transform_stream

__all__ = ["InvokeError", "RecordError", "Stopped", "TransformSpec", "check", "transform_stream"]
