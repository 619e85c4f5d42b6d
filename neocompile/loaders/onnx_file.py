"""Reading an ``.onnx`` file without holding its weights twice.

``onnx.load`` parses the whole file into a ModelProto, so every weight sits in the proto while TVM's importer makes
its own tensor from it (through a bytes copy and a numpy array): a 575 MB VGG-19 took 2 GiB to import. Here the
protobuf wire format of the file is walked first (field headers only) to find where the main graph's large
initializers keep their ``raw_data``; the proto is parsed from a copy of the file with those payloads left out, and
:meth:`Weights.tensor` later reads each payload from the file straight into the memory of the TVM tensor that holds
it in the Relax module: one copy of each weight, made when it is needed.

Anything this reader does not expect (another serialization, a damaged file, an initializer whose bytes do not match
its shape and type) falls back to ``onnx.load`` itself, so errors and results stay exactly onnx's.
"""
from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Any, BinaryIO

#: Initializers with fewer raw bytes stay in the proto (biases, shapes: not worth a read of their own).
MIN_BYTES = 4096
# TensorProto data types whose raw_data is exactly the numpy array's bytes (little-endian, one element per item).
_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 10: "float16",
           11: "float64", 12: "uint32", 13: "uint64"}
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9  # field numbers in onnx.proto
_LEN = 2  # wire type of length-delimited fields


class _WireError(ValueError):
    pass


def _varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _fields(buf: Any, start: int, end: int):
    """(field number, wire type, start of the field's header, start of its payload, end of the field) in order."""
    pos = start
    while pos < end:
        head = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos, end)
            payload = pos
        elif wire == 1:
            payload, pos = pos, pos + 8
        elif wire == _LEN:
            length, payload = _varint(buf, pos, end)
            pos = payload + length
        elif wire == 5:
            payload, pos = pos, pos + 4
        else:  # groups (deprecated) or garbage: leave the file to onnx
            raise _WireError(f"wire type {wire}")
        if pos > end:
            raise _WireError("field runs past its message")
        yield number, wire, head, payload, pos


def _strip(buf: Any, size: int) -> tuple[bytes, list[tuple[int, int] | None]]:
    """The file's bytes with the large raw_data payloads of the main graph's initializers left out, and per
    initializer (in order) the (offset, length) of the payload left out, or None where it stayed."""
    out, spans = bytearray(), []
    for number, wire, head, payload, end in _fields(buf, 0, size):
        if number != _MODEL_GRAPH or wire != _LEN:
            out += buf[head:end]
            continue
        graph = bytearray()
        for g_number, g_wire, g_head, g_payload, g_end in _fields(buf, payload, end):
            if g_number != _GRAPH_INITIALIZER or g_wire != _LEN:
                graph += buf[g_head:g_end]
                continue
            raw = [(h, p, e) for n, w, h, p, e in _fields(buf, g_payload, g_end) if n == _TENSOR_RAW_DATA and w == _LEN]
            if len(raw) != 1 or raw[0][2] - raw[0][1] < MIN_BYTES:
                spans.append(None)
                graph += buf[g_head:g_end]
                continue
            r_head, r_payload, r_end = raw[0]
            tensor = buf[g_payload:r_head] + buf[r_end:g_end]
            graph += _encode_varint(_GRAPH_INITIALIZER << 3 | _LEN) + _encode_varint(len(tensor)) + tensor
            spans.append((r_payload, r_end - r_payload))
        out += _encode_varint(_MODEL_GRAPH << 3 | _LEN) + _encode_varint(len(graph)) + graph
    return bytes(out), spans


class Weights:
    """Where the stripped initializers of the main graph lie in the file; :meth:`tensor` reads one into a new TVM
    tensor. Keyed by the initializer's index in ``model.graph.initializer``."""

    def __init__(self, path: Path, spans: dict[int, tuple[int, int, str]]):
        self.path, self.spans = path, spans
        self._file: BinaryIO | None = None

    def __contains__(self, index: int) -> bool:
        return index in self.spans

    def tensor(self, index: int, proto: Any) -> Any:
        import numpy as np
        import tvm

        offset, length, dtype = self.spans[index]
        out = tvm.runtime.empty(tuple(int(d) for d in proto.dims), dtype)
        view = np.from_dlpack(out).reshape(-1).view(np.uint8)
        if self._file is None:
            self._file = open(self.path, "rb")
        self._file.seek(offset)
        if self._file.readinto(view) != length:
            raise ValueError(f"initializer '{proto.name}': the file ended inside its data")
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def load(path: Path) -> tuple[Any, Weights | None]:
    """The ModelProto of ``path`` with its large initializers' raw_data still in the file, and the Weights that read
    them (None: nothing was left out). Raises what ``onnx.load`` raises for a file it cannot read."""
    import numpy as np
    import onnx

    if Path(path).suffix.lower() != ".onnx":  # onnx picks the text formats from the suffix
        return onnx.load(str(path)), None
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        try:
            stripped, spans = _strip(buf, size)
        finally:
            if isinstance(buf, mmap.mmap):
                buf.close()
        model = onnx.load_model_from_string(stripped)
    except Exception:  # noqa: BLE001 - a file this reader does not follow: onnx.load reads it or says what is wrong
        return onnx.load(str(path)), None
    weights: dict[int, tuple[int, int, str]] = {}
    for index, (span, tensor) in enumerate(zip(spans, model.graph.initializer)):
        if span is None:
            continue
        dtype = _DTYPES.get(tensor.data_type)
        count = 1
        for d in tensor.dims:
            count *= int(d)
        if dtype is None or tensor.data_location == onnx.TensorProto.EXTERNAL or \
                count * np.dtype(dtype).itemsize != span[1]:
            return onnx.load(str(path)), None  # something onnx reads its own way: let it
        weights[index] = (span[0], span[1], dtype)
    if len(spans) != len(model.graph.initializer):
        return onnx.load(str(path)), None
    # External data of the remaining tensors, exactly as onnx.load reads it.
    onnx.external_data_helper.load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
    return model, (Weights(Path(path), weights) if weights else None)
