"""Model archives built in the tests themselves (seeded random weights, nothing downloaded)."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

from neocompile import modelzoo

SMALL_SHAPE = [1, 3, 32, 32]
SMALL_CONFIG = '{"data": [1, 3, 32, 32]}'


def small_onnx_archive(tmp_path: Path, name: str = "model.tar.gz") -> Path:
    return modelzoo.onnx_archive(tmp_path / name, modelzoo.small_cnn(size=32))


def tar_with(path: Path, members: list[tarfile.TarInfo], payloads: dict[str, bytes] | None = None, mode: str = "w:gz") -> Path:
    """Write an archive member by member (for hostile archives: links, devices, traversal)."""
    payloads = payloads or {}
    with tarfile.open(path, mode) as tar:
        for info in members:
            data = payloads.get(info.name)
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def torch_two_input_module():
    """A small two-input PyTorch module (conv + BN + dense) returning two outputs."""
    import torch

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)
            self.fc = torch.nn.Linear(8, 10)

        def forward(self, x, y):
            h = torch.relu(self.bn(self.conv(x))).mean((2, 3))
            return self.fc(h) + y, h

    net = Net().eval()
    with torch.no_grad():  # non-trivial running stats so BN in eval mode matters
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 1.5)
    return net


def torchscript_archive(tmp_path: Path, name: str = "model.pth", archive: str = "model.tar.gz") -> Path:
    import torch

    net = torch_two_input_module()
    traced = torch.jit.trace(net, (torch.randn(1, 3, 16, 16), torch.randn(1, 10)))
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    return modelzoo.write_archive(tmp_path / archive, {name: buf.getvalue()})


def exported_archive(tmp_path: Path, archive: str = "model.tar.gz") -> Path:
    import torch

    net = torch_two_input_module()
    program = torch.export.export(net, (torch.randn(1, 3, 16, 16), torch.randn(1, 10)))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return modelzoo.write_archive(tmp_path / archive, {"model.pt2": buf.getvalue()})
