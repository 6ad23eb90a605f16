"""Recurrent mixers: one LSTM or GRU layer per block, followed by an output projection.

They are recurrent only, so streaming is their natural form; the training forward pass runs
PyTorch's fused ``nn.LSTM`` / ``nn.GRU`` over the whole sequence.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from iclab.models.mixers.base import Mixer, MixerOptions, MixerState, register_mixer


class RecurrentMixer(Mixer):
    """An ``nn.RNNBase`` of hidden width E, then ``proj``; the state is its hidden tensors."""

    forms = ("recurrent",)
    network: ClassVar[type[nn.RNNBase]]
    n_state_tensors: ClassVar[int]

    def __init__(self, d_model: int, n_heads: int, options: MixerOptions | None = None) -> None:
        super().__init__(d_model, n_heads, options)
        self.rnn = self.network(d_model, d_model, batch_first=True)
        self.proj = nn.Linear(d_model, d_model)

    @classmethod
    def width_multiple(cls, n_heads: int, options: MixerOptions) -> int:
        return 1

    def forward(self, x: Tensor) -> Tensor:  # x: (B, T, E)
        return self.proj(self.rnn(x)[0])

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> MixerState:
        zeros = torch.zeros(1, batch, self.d_model, device=device, dtype=dtype)
        return (zeros,) * self.n_state_tensors

    def step(self, x: Tensor, state: MixerState) -> tuple[Tensor, MixerState]:  # x: (B, E)
        hidden = state if self.n_state_tensors > 1 else state[0]
        output, hidden = self.rnn(x[:, None], hidden)
        return self.proj(output[:, 0]), tuple(hidden) if self.n_state_tensors > 1 else (hidden,)

    def state_size(self, length: int) -> int:
        return self.n_state_tensors * self.d_model


@register_mixer("lstm")
class LSTMMixer(RecurrentMixer):
    """Long short-term memory: gated cell state and hidden state, 2·E floats."""

    network = nn.LSTM
    n_state_tensors = 2
    state_formula = "2·E"
    paper = "Hochreiter & Schmidhuber 1997"
    learning_rate = 5e-3


@register_mixer("gru")
class GRUMixer(RecurrentMixer):
    """Gated recurrent unit: one hidden state of E floats."""

    network = nn.GRU
    n_state_tensors = 1
    state_formula = "E"
    paper = "Cho et al. 2014 (1406.1078)"
    learning_rate = 2e-3
