"""The short causal convolution that recurrent mixers use to see the last few tokens directly.

A depthwise convolution over the current and the previous ``kernel_size − 1`` inputs (H3's shift
SSM, Mamba's conv1d, flash-linear-attention's ShortConvolution). It gives mixers without
positions a way to pair neighbouring tokens, such as x_i with y_i in an interleaved prompt.
Streaming keeps the last ``kernel_size − 1`` inputs as state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ShortConv(nn.Conv1d):
    """Depthwise causal convolution on (B, T, C) sequences, with a streaming ``step``."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__(channels, channels, kernel_size, groups=channels)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C) → (B, T, C); zeros before the first token
        padded = F.pad(x.transpose(1, 2), (self.kernel_size[0] - 1, 0))
        return super().forward(padded).transpose(1, 2)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """The last kernel_size − 1 inputs, oldest first: (B, C, kernel_size − 1), zeros."""
        return torch.zeros(
            batch, self.in_channels, self.kernel_size[0] - 1, device=device, dtype=dtype
        )

    def state_size(self) -> int:
        """Floats of the window per sequence: C · (kernel_size − 1)."""
        return self.in_channels * (self.kernel_size[0] - 1)

    def step(self, x: Tensor, window: Tensor) -> tuple[Tensor, Tensor]:  # x: (B, C)
        inputs = torch.cat([window, x.unsqueeze(-1)], dim=-1)  # oldest → newest: (B, C, K)
        return (inputs * self.weight.squeeze(1)).sum(-1) + self.bias, inputs[..., 1:]
