"""Decompositions of the PyTorch operators TVM's ``from_exported_program`` cannot import, into ones it can.

``nn.TransformerEncoderLayer`` and ``nn.MultiheadAttention`` in eval mode without grad take torch's fused fast
paths (``aten::_transformer_encoder_layer_fwd``, ``aten::_native_multi_head_attention``), which is what a traced
TorchScript file records. Both are written out here as the ops they fuse, with torch's semantics: the mask is
boolean where True (or, for a float mask, non-zero) hides a position, ``mask_type`` 0 is an ``[L, L]`` attention
mask, 1 a ``[B, L]`` key-padding mask and 2 a merged ``[B, H, L, L]`` mask; a row with every position hidden gives
zeros. Recurrent layers (``aten::lstm``, ``aten::gru``) are unrolled over their static sequence length by torch's
own decompositions, which are part of the default table.
"""
from __future__ import annotations

import math
from typing import Any


def _masked_softmax(scores: Any, mask: Any, mask_type: int | None) -> Any:
    import torch

    if mask is None:
        return torch.softmax(scores, dim=-1)
    hidden = mask if mask.dtype == torch.bool else mask != 0
    if mask_type == 1:  # key padding: [B, L] over the keys
        hidden = hidden.view(hidden.shape[0], 1, 1, hidden.shape[-1])
    probs = torch.softmax(scores.masked_fill(hidden, float("-inf")), dim=-1)
    return probs.masked_fill(hidden, 0.0)  # a fully hidden row is NaN after the softmax; torch gives zeros


def native_multi_head_attention(query: Any, key: Any, value: Any, embed_dim: int, num_head: int, qkv_weight: Any,
                                qkv_bias: Any, proj_weight: Any, proj_bias: Any, mask: Any = None,
                                need_weights: bool = True, average_attn_weights: bool = True,
                                mask_type: int | None = None) -> tuple[Any, Any]:
    """``aten::_native_multi_head_attention`` on ``[B, L, E]`` inputs (batch first)."""
    import torch
    import torch.nn.functional as F

    head = embed_dim // num_head
    wq, wk, wv = qkv_weight.chunk(3)
    bq, bk, bv = qkv_bias.chunk(3)

    def heads(x: Any, w: Any, b: Any) -> Any:  # [B, L, E] -> [B, H, L, head]
        projected = F.linear(x, w, b)
        return projected.view(x.shape[0], x.shape[1], num_head, head).transpose(1, 2)

    q = heads(query, wq, bq) / math.sqrt(head)
    k, v = heads(key, wk, bk), heads(value, wv, bv)
    weights = _masked_softmax(torch.matmul(q, k.transpose(-2, -1)), mask, mask_type)
    context = torch.matmul(weights, v).transpose(1, 2).reshape(query.shape[0], query.shape[1], embed_dim)
    out = F.linear(context, proj_weight, proj_bias)
    if need_weights and average_attn_weights:
        weights = weights.mean(dim=1)
    return out, weights


def transformer_encoder_layer_fwd(src: Any, embed_dim: int, num_heads: int, qkv_weight: Any, qkv_bias: Any,
                                  proj_weight: Any, proj_bias: Any, use_gelu: bool, norm_first: bool, eps: float,
                                  norm_weight_1: Any, norm_bias_1: Any, norm_weight_2: Any, norm_bias_2: Any,
                                  ffn_weight_1: Any, ffn_bias_1: Any, ffn_weight_2: Any, ffn_bias_2: Any,
                                  mask: Any = None, mask_type: int | None = None) -> Any:
    """``aten::_transformer_encoder_layer_fwd``: self-attention and feed-forward blocks with residuals, layer norm
    before (``norm_first``) or after each."""
    import torch.nn.functional as F

    def norm(x: Any, weight: Any, bias: Any) -> Any:
        return F.layer_norm(x, (embed_dim,), weight, bias, eps)

    x = norm(src, norm_weight_1, norm_bias_1) if norm_first else src
    x = native_multi_head_attention(x, x, x, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias,
                                    mask, False, True, mask_type)[0] + src
    if not norm_first:
        x = norm(x, norm_weight_1, norm_bias_1)
    residual = x
    if norm_first:
        x = norm(x, norm_weight_2, norm_bias_2)
    hidden = F.linear(x, ffn_weight_1, ffn_bias_1)
    hidden = F.gelu(hidden) if use_gelu else F.relu(hidden)
    x = F.linear(hidden, ffn_weight_2, ffn_bias_2) + residual
    return norm(x, norm_weight_2, norm_bias_2) if not norm_first else x


def decomposition_table() -> dict[Any, Any]:
    """torch.export's default (core ATen) table plus the fused layers above."""
    import torch

    aten = torch.ops.aten
    table = dict(torch.export.default_decompositions())
    table[aten._transformer_encoder_layer_fwd.default] = transformer_encoder_layer_fwd
    table[aten._native_multi_head_attention.default] = native_multi_head_attention
    return table


def decompose(program: Any) -> Any:
    """``program`` in core ATen operators, fused layers written out (what ``from_exported_program`` imports)."""
    return program.run_decompositions(decomposition_table())
