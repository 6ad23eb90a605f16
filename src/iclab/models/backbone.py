"""A GPT-2-style decoder stack: pre-LayerNorm blocks around a chosen sequence mixer."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from iclab.models.mixers import MIXERS


class MLP(nn.Module):
    def __init__(self, d_model: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, hidden)
        self.proj = nn.Linear(hidden, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(nn.functional.gelu(self.fc(x))))


class Block(nn.Module):
    """x + mixer(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, mixer: nn.Module, d_model: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.ln_mixer = nn.LayerNorm(d_model)
        self.mixer = mixer
        self.ln_mlp = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, mlp_ratio * d_model, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.dropout(self.mixer(self.ln_mixer(x)))
        return x + self.mlp(self.ln_mlp(x))


class Backbone(nn.Module):
    """Learned positions + ``n_layers`` blocks + final LayerNorm. Knows nothing about tasks."""

    def __init__(
        self,
        mixer: str,
        n_layers: int,
        d_model: int,
        n_heads: int,
        n_positions: int,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        mixer_cls = MIXERS.get(mixer)
        self.n_positions = n_positions
        self.position = nn.Embedding(n_positions, d_model)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(mixer_cls(d_model, n_heads, dropout), d_model, mlp_ratio, dropout)
            for _ in range(n_layers)
        )
        self.ln_final = nn.LayerNorm(d_model)
        self._init_weights(n_layers)

    def _init_weights(self, n_layers: int) -> None:
        """GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2·layers)."""
        for name, parameter in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(parameter, std=0.02 / math.sqrt(2 * n_layers))
            elif parameter.dim() >= 2:
                nn.init.normal_(parameter, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(parameter)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, T, E)
        length = x.shape[1]
        if length > self.n_positions:
            raise ValueError(
                f"sequence of {length} tokens is longer than the {self.n_positions} learned "
                "positions this model was built with"
            )
        positions = torch.arange(length, device=x.device)
        x = self.dropout(x + self.position(positions))
        for block in self.blocks:
            x = block(x)
        return self.ln_final(x)
