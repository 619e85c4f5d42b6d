"""The benchmark's model set, written here in plain torch (no torchvision, nothing downloaded).

Each model has deterministic seeded weights and runs in eval mode. ``build_archive`` exports it to ONNX (opset 17,
TorchScript exporter), packs the file as the ``model.tar.gz`` Neo expects and caches both under ``bench/work/``,
keyed by a digest of this file and the torch version, so editing a model rebuilds it.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import shutil
import tarfile
import warnings
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work"
OPSET = 17


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One benchmark model: how to build it and what its single input looks like."""

    name: str
    title: str
    build: Callable[[], "object"]  # -> torch.nn.Module in eval mode
    input_name: str
    input_shape: Callable[[int], list[int]]  # batch -> shape


def _torch():
    import torch

    return torch


# --- the models ----------------------------------------------------------------------------------------------------

def _randomize_bn(module) -> None:
    """Non-trivial BatchNorm statistics (eval-mode BN is then not the identity) with a bounded output scale."""
    torch = _torch()
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.0)
                m.bias.uniform_(-0.1, 0.1)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.8, 1.2)


def resnet50():
    """ResNet-50 v1.5 (stride in the 3x3 of each bottleneck, as torchvision), 1000 classes, 224x224 input."""
    torch = _torch()
    nn = torch.nn

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int):
            super().__init__()
            cout = width * 4
            self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
            self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
            blocks, cin = [], 64
            for stage, count in enumerate([3, 4, 6, 3]):
                width = 64 * 2**stage
                for i in range(count):
                    blocks.append(Bottleneck(cin, width, 2 if i == 0 and stage > 0 else 1))
                    cin = width * 4
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(cin, 1000)

        def forward(self, x):
            x = self.blocks(self.stem(x))
            return self.fc(torch.flatten(torch.mean(x, (2, 3), keepdim=True), 1))

    net = ResNet()
    _randomize_bn(net)
    for block in net.blocks:  # keep the residual sum from growing block after block
        with torch.no_grad():
            block.bn3.weight.uniform_(0.1, 0.3)
    return net


def mobilenet_v2():
    """MobileNetV2 (width 1.0, ReLU6, depthwise 3x3 convolutions), 1000 classes, 224x224 input."""
    torch = _torch()
    nn = torch.nn

    def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int):
            super().__init__()
            hidden = cin * expand
            layers = [conv_bn(cin, hidden, 1)] if expand != 1 else []
            layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, act=False)]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            layers, cin = [conv_bn(3, 32, 3, 2)], 32
            for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                               (6, 160, 3, 2), (6, 320, 1, 1)]:
                for i in range(n):
                    layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                    cin = c
            layers.append(conv_bn(cin, 1280, 1))
            self.features = nn.Sequential(*layers)
            self.fc = nn.Linear(1280, 1000)

        def forward(self, x):
            return self.fc(torch.flatten(torch.mean(self.features(x), (2, 3), keepdim=True), 1))

    net = MobileNetV2()
    _randomize_bn(net)
    return net


def bert_encoder(layers: int = 12, hidden: int = 768, heads: int = 12, ffn: int = 3072):
    """A BERT-base-sized encoder: post-LayerNorm transformer layers (hidden 768, 12 heads, FFN 3072, GELU), 12 of
    them, on float embeddings ``[batch, 128, 768]`` (no token-embedding gather), returning the last hidden states."""
    torch = _torch()
    nn = torch.nn

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(hidden, 3 * hidden)
            self.out = nn.Linear(hidden, hidden)
            self.ln1, self.ln2 = nn.LayerNorm(hidden, eps=1e-12), nn.LayerNorm(hidden, eps=1e-12)
            self.up, self.down = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)

        def forward(self, x):
            b, s, _ = x.shape
            q, k, v = self.qkv(x).reshape(b, s, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
            att = torch.softmax(q @ k.transpose(-1, -2) * (hidden // heads) ** -0.5, dim=-1)
            ctx = (att @ v).transpose(1, 2).reshape(b, s, hidden)
            x = self.ln1(x + self.out(ctx))
            return self.ln2(x + self.down(nn.functional.gelu(self.up(x))))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(*[Layer() for _ in range(layers)])

        def forward(self, x):
            return self.layers(x)

    net = Encoder()
    for name, p in net.named_parameters():  # BERT's initializer range
        if name.endswith("weight") and p.dim() == 2:
            nn.init.normal_(p, std=0.02)
    return net


def mlp():
    """An MLP: 1024 -> 2048 -> 2048 -> 2048 -> 1000 with ReLU."""
    nn = _torch().nn
    return nn.Sequential(nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(),
                         nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 1000))


def vgg19():
    """VGG-19 (no BN), 1000 classes, 224x224 input: 143.7 M parameters, a 575 MB ONNX file."""
    torch = _torch()
    nn = torch.nn
    layers, cin = [], 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
            cin = v
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Linear(4096, 4096),
                         nn.ReLU(), nn.Linear(4096, 1000))


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in [
        ModelSpec("resnet50", "ResNet-50", resnet50, "data", lambda b: [b, 3, 224, 224]),
        ModelSpec("mobilenet_v2", "MobileNetV2", mobilenet_v2, "data", lambda b: [b, 3, 224, 224]),
        ModelSpec("bert_base", "BERT-base encoder (seq 128)", bert_encoder, "embeddings", lambda b: [b, 128, 768]),
        ModelSpec("mlp", "MLP (1024-2048x3-1000)", mlp, "data", lambda b: [b, 1024]),
        ModelSpec("vgg19", "VGG-19", vgg19, "data", lambda b: [b, 3, 224, 224]),
    ]
}
#: The latency set; VGG-19 is only built for the compile-memory test.
LATENCY_MODELS = ["resnet50", "mobilenet_v2", "bert_base", "mlp"]


def torch_model(name: str):
    """The model ``name`` with its seeded weights, in eval mode (the same weights every time)."""
    torch = _torch()
    torch.manual_seed(0)
    net = MODELS[name].build()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def cache_key() -> str:
    """Built files are valid for this file's content and this torch version."""
    from importlib.metadata import version

    return hashlib.sha256(Path(__file__).read_bytes() + version("torch").encode()).hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class Built:
    onnx: Path
    archive: Path
    input_name: str
    input_shape: list[int]


def build_archive(name: str, batch: int) -> Built:
    """Export ``name`` at static ``batch`` to ONNX and pack it as ``model.tar.gz``; cached under bench/work/."""
    built = paths(name, batch)
    if not (built.onnx.is_file() and built.archive.is_file()):
        if not built.onnx.parent.is_dir():  # models.py or torch changed: earlier exports are stale
            for stale in WORK.glob("models-*"):
                shutil.rmtree(stale, ignore_errors=True)
        built.onnx.parent.mkdir(parents=True, exist_ok=True)
        _export(name, built.input_shape, built.onnx)
        _pack(built.onnx, built.archive)
    return built


def paths(name: str, batch: int) -> Built:
    """Where ``build_archive`` puts (or has put) the model's files; nothing is built."""
    spec = MODELS[name]
    folder = WORK / f"models-{cache_key()}"
    return Built(folder / f"{name}-b{batch}.onnx", folder / f"{name}-b{batch}.tar.gz", spec.input_name,
                 spec.input_shape(batch))


def _export(name: str, shape: list[int], path: Path) -> None:
    torch = _torch()
    net = torch_model(name)
    tmp = path.with_suffix(".onnx.tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice: it is chosen on purpose
        torch.onnx.export(net, (torch.zeros(shape),), str(tmp), input_names=[MODELS[name].input_name],
                          output_names=["output"], opset_version=OPSET, dynamo=False, do_constant_folding=True)
    tmp.replace(path)


def _pack(onnx_path: Path, archive: Path) -> None:
    """``model.tar.gz`` holding ``model.onnx`` (gzip level 1: weights barely compress, and level 9 is slow)."""
    tmp = archive.with_suffix(".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        tar.add(onnx_path, arcname="model.onnx")
    tmp.replace(archive)


def sample_input(shape: list[int]):
    """The seeded input every runtime gets."""
    import numpy as np

    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


if __name__ == "__main__":  # python -m bench.models NAME BATCH: build one archive
    import sys

    print(build_archive(sys.argv[1], int(sys.argv[2])))
