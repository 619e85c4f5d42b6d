"""A numpy reader of MXNet's ``.params`` files (``mx.nd.save`` / ``Module.save_checkpoint`` / ``HybridBlock.export``).

No mxnet and no pickle: the format is a small binary layout (dmlc streams, little-endian)::

    <u64 0x112> <u64 0> <u64 count> count x NDArray <u64 count> count x (<u64 length> name bytes)

and each dense NDArray, after its magic (V2 ``0xF993FAC9`` and V3 ``0xF993FACA`` add the storage type; V1
``0xF993FAC8`` has none; files older than V1 start with ``<u32 ndim>`` and ``ndim`` u32 dims)::

    [<i32 stype>] <i32 ndim> ndim x <i64 dim> <i32 dev_type> <i32 dev_id> <i32 dtype flag> raw data

Sparse arrays (row_sparse, csr) are refused: vision checkpoints do not hold them.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

LIST_MAGIC = 0x112
V1_MAGIC, V2_MAGIC, V3_MAGIC = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
#: mshadow type flags -> numpy dtypes (bfloat16, flag 12, has no numpy dtype and is refused).
DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32, 5: np.int8, 6: np.int64, 7: np.bool_}
_MAX_DIMS = 32


class ParamsFormatError(ValueError):
    """The file is not an MXNet NDArray list (or holds something this reader does not read)."""


class _Reader:
    def __init__(self, data: memoryview, name: str):
        self.data, self.pos, self.name = data, 0, name

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ParamsFormatError(f"{self.name} is truncated: needed {n} bytes at offset {self.pos}, "
                                    f"the file has {len(self.data)}")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        return struct.unpack("<" + fmt, self.take(size))


def _array(r: _Reader, index: int) -> np.ndarray | None:
    (magic,) = r.unpack("I")
    if magic in (V2_MAGIC, V3_MAGIC):
        (stype,) = r.unpack("i")
        if stype != 0:
            raise ParamsFormatError(f"{r.name}: array {index} is sparse (storage type {stype}); only dense arrays "
                                    "are supported")
    if magic in (V1_MAGIC, V2_MAGIC, V3_MAGIC):
        (ndim,) = r.unpack("i")
        if ndim < 0 or (ndim == 0 and magic != V3_MAGIC):
            return None  # an empty (shape-unknown) array
        if ndim > _MAX_DIMS:
            raise ParamsFormatError(f"{r.name}: array {index} claims {ndim} dimensions")
        shape = r.unpack(f"{ndim}q")
    else:  # the oldest layout: the first word is ndim, dims are u32
        ndim = magic
        if ndim > _MAX_DIMS:
            raise ParamsFormatError(f"{r.name} is not an MXNet .params file (array {index} starts with {magic:#x})")
        shape = r.unpack(f"{ndim}I")
        if ndim == 0:
            return None
    if any(d < 0 for d in shape):
        raise ParamsFormatError(f"{r.name}: array {index} has shape {list(shape)}")
    dev_type, _dev_id, flag = r.unpack("iii")
    if dev_type not in (1, 2, 3, 5):  # cpu, gpu, cpu_pinned, cpu_shared
        raise ParamsFormatError(f"{r.name}: array {index} has device type {dev_type}; expected an MXNet context")
    if flag not in DTYPES:
        raise ParamsFormatError(f"{r.name}: array {index} has MXNet dtype flag {flag}, which is not supported "
                                f"(supported: {', '.join(np.dtype(t).name for t in DTYPES.values())})")
    dtype = np.dtype(DTYPES[flag]).newbyteorder("<")
    count = int(np.prod(shape, dtype=np.int64))
    raw = r.take(count * dtype.itemsize)
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def read(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an MXNet ``.params`` file by name (``arg:conv0_weight`` ...), as ``mx.nd.load`` gives them.

    Unnamed lists (``mx.nd.save(path, [a, b])``) come back as ``{"0": a, "1": b}``; empty arrays are left out."""
    path = Path(path)
    data = memoryview(path.read_bytes())
    r = _Reader(data, path.name)
    try:
        header, _reserved = r.unpack("QQ")
    except ParamsFormatError:
        raise ParamsFormatError(f"{path.name} is not an MXNet .params file (shorter than its header)") from None
    if header != LIST_MAGIC:
        raise ParamsFormatError(f"{path.name} is not an MXNet .params file (header {header:#x}, expected 0x112)")
    (count,) = r.unpack("Q")
    if count > len(data):
        raise ParamsFormatError(f"{path.name}: claims {count} arrays")
    arrays = [_array(r, i) for i in range(count)]
    (names_count,) = r.unpack("Q")
    if names_count not in (0, count):
        raise ParamsFormatError(f"{path.name}: {count} arrays but {names_count} names")
    names = []
    for _ in range(names_count):
        (length,) = r.unpack("Q")
        names.append(bytes(r.take(length)).decode("utf-8", "replace"))
    if not names:
        names = [str(i) for i in range(count)]
    return {name: a for name, a in zip(names, arrays) if a is not None}
