"""PyTorch models as people really save them, built in the tests (seeded weights, nothing downloaded): encoders
from Hugging Face ``transformers`` traced with ``torch.jit.trace``, ``torchvision`` classification backbones traced
and scripted, recurrent nets, ``nn.TransformerEncoder`` (whose TorchScript holds its fused fast path), and small
modules with mixed input dtypes and tuple or dict outputs. Each builder returns ``(module, example_inputs)``; the
``save_*`` helpers write the file a user would upload."""
from __future__ import annotations

from pathlib import Path
from typing import Any

SEQ = 16
#: The DataInputConfig and CompilerOptions of the encoders: two int64 inputs of [1, SEQ].
ENCODER_CONFIG = f'{{"input_ids": [1, {SEQ}], "attention_mask": [1, {SEQ}]}}'
ENCODER_OPTIONS = '{"dtype": "int64"}'
#: The torchvision backbones' input: a small image keeps the compile and the qemu run short.
IMAGE = (1, 3, 64, 64)


def _ids(vocab: int = 1000) -> tuple[Any, Any]:
    """Token ids and an attention mask with the last three positions padded (so the mask matters)."""
    import torch

    ids = torch.randint(0, vocab, (1, SEQ), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(1, SEQ, dtype=torch.int64)
    mask[:, -3:] = 0
    return ids, mask


def bert(hidden: int = 64, layers: int = 2) -> tuple[Any, tuple]:
    """A ``transformers`` BertModel from a small BertConfig (what sentence-embedding models such as MiniLM are);
    its forward returns a dict-like ``BaseModelOutputWithPooling``."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=1000, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=2 * hidden, max_position_embeddings=64)
    return BertModel(config).eval(), _ids()


def distilbert() -> tuple[Any, tuple]:
    """A ``transformers`` DistilBertModel (hidden 64, 2 layers): returns a dict-like output with one tensor."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=1000, dim=64, n_layers=2, n_heads=4, hidden_dim=128, max_position_embeddings=64)
    return DistilBertModel(config).eval(), _ids()


def torchvision_model(name: str, classes: int = 10) -> tuple[Any, tuple]:
    """A torchvision classification backbone (``resnet18``, ``mobilenet_v2``, ``mobilenet_v3_small``,
    ``efficientnet_b0``, ...) with seeded random weights and non-trivial BatchNorm statistics."""
    import torch
    import torchvision.models

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, num_classes=classes).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model, (torch.randn(*IMAGE, generator=torch.Generator().manual_seed(1)),)


def recurrent(kind: str, layers: int = 2, hidden: int = 32, features: int = 8, steps: int = 12) -> tuple[Any, tuple]:
    """``nn.LSTM`` or ``nn.GRU`` (2 layers, batch_first) followed by a linear head on every step; returns the
    sequence output and the final hidden state."""
    import torch

    torch.manual_seed(0)
    rnn_cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]

    class Recurrent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnn_cls(features, hidden, num_layers=layers, batch_first=True)
            self.head = torch.nn.Linear(hidden, 4)

        def forward(self, x):
            out, state = self.rnn(x)
            h = state[0] if isinstance(state, tuple) else state
            return self.head(out), h

    return Recurrent().eval(), (torch.randn(1, steps, features, generator=torch.Generator().manual_seed(1)),)


def transformer_encoder(layers: int = 2, d_model: int = 32, heads: int = 4) -> tuple[Any, tuple]:
    """``nn.TransformerEncoder`` of ``nn.TransformerEncoderLayer`` (batch_first): in eval mode under no_grad its
    TorchScript holds the fused fast path (``aten::_transformer_encoder_layer_fwd``)."""
    import torch

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=64, batch_first=True, dropout=0.1)
    model = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).eval()
    return model, (torch.randn(1, SEQ, d_model, generator=torch.Generator().manual_seed(1)),)


def mixed_dtypes() -> tuple[Any, tuple]:
    """Token ids (int64) and dense features (float32) in; a dict of two tensors out."""
    import torch

    torch.manual_seed(0)

    class Mixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(100, 8)
            self.dense = torch.nn.Linear(4, 8)
            self.head = torch.nn.Linear(8, 3)

        def forward(self, features, ids):
            h = self.embed(ids).mean(1) + self.dense(features)
            return {"logits": self.head(h), "embedding": h}

    ids = torch.randint(0, 100, (2, 6), generator=torch.Generator().manual_seed(0))
    return Mixed().eval(), (torch.randn(2, 4), ids)


def trace(model: Any, example: tuple, path: Path) -> Path:
    """``torch.jit.trace(model, example, strict=False).save(path)``, as users save models with dict outputs."""
    import torch

    with torch.no_grad():
        torch.jit.trace(model, example, strict=False).save(str(path))
    return path


def script(model: Any, path: Path) -> Path:
    import torch

    torch.jit.script(model).save(str(path))
    return path


def export(model: Any, example: tuple, path: Path) -> Path:
    import torch

    torch.export.save(torch.export.export(model, example), str(path))
    return path
