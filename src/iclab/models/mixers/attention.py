"""Causal softmax self-attention, as in GPT-2."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from iclab.models.mixers.base import register_mixer


@register_mixer("softmax")
class CausalSelfAttention(nn.Module):
    """Multi-head causal softmax attention through fused ``scaled_dot_product_attention``."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, T, E)
        batch, length, width = x.shape
        head_dim = width // self.n_heads
        qkv = self.qkv(x).view(batch, length, 3, self.n_heads, head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, T, E/H)
        mixed = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(mixed.transpose(1, 2).reshape(batch, length, width))
