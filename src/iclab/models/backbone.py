"""A GPT-2-style decoder stack: pre-LayerNorm blocks around chosen sequence mixers.

Every block has the same shape whatever its mixer, x + mixer(LN(x)) then x + MLP(LN(x)), so
architectures differ only by the mixer. ``mlp_ratio=0`` and ``norm="none"`` give the
attention-only blocks of von Oswald et al. 2023.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from iclab.models.caches import CachePolicy, KVCache
from iclab.models.mixers import Mixer
from iclab.models.mixers.base import state_numel
from iclab.specs import Spec


class MLP(nn.Module):
    def __init__(self, d_model: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, hidden)
        self.proj = nn.Linear(hidden, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(nn.functional.gelu(self.fc(x))))


def norm_layer(norm: str, d_model: int) -> nn.Module:
    return nn.LayerNorm(d_model) if norm == "layernorm" else nn.Identity()


class Block(nn.Module):
    """x + mixer(LN(x)), then x + MLP(LN(x)) when the block has an MLP."""

    def __init__(
        self, mixer: Mixer, d_model: int, mlp_ratio: int, norm: str, dropout: float
    ) -> None:
        super().__init__()
        self.ln_mixer = norm_layer(norm, d_model)
        self.mixer = mixer
        self.dropout = nn.Dropout(dropout)
        if mlp_ratio:
            self.ln_mlp = norm_layer(norm, d_model)
            self.mlp = MLP(d_model, mlp_ratio * d_model, dropout)
        else:
            self.mlp = None

    def forward(self, x: Tensor, visible: Tensor | None = None) -> Tensor:  # x: (B, T, E)
        normed = self.ln_mixer(x)
        mixed = self.mixer(normed) if visible is None else self.mixer(normed, visible=visible)
        x = x + self.dropout(mixed)
        return x if self.mlp is None else x + self.mlp(self.ln_mlp(x))

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:  # x: (B, E)
        mixed, state = self.mixer.step(self.ln_mixer(x), state)
        x = x + mixed
        return (x if self.mlp is None else x + self.mlp(self.ln_mlp(x))), state


class Backbone(nn.Module):
    """Blocks over mixer specs (one per layer) + final norm. Knows nothing about tasks.

    A learned position table of ``n_positions`` entries is added at the input only when a mixer
    asks for one (softmax attention with ``positions=learned``, the default); other mixers know
    order from causality, rotary phases or recurrence, and take sequences of any length
    (``max_length`` is None). Lengths are checked by ``InContextModel``, which can say so in
    examples rather than tokens.
    """

    def __init__(
        self,
        layers: list[Spec],
        d_model: int,
        n_heads: int,
        n_positions: int,
        mlp_ratio: int = 4,
        norm: str = "layernorm",
        dropout: float = 0.0,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        mixers = [cls(d_model, n_heads, options) for cls, options in layers]
        self.d_model = d_model
        self.n_positions = n_positions
        if any(mixer.uses_learned_positions for mixer in mixers):
            self.position = nn.Embedding(n_positions, d_model)
        else:
            self.position = None
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(mixer, d_model, mlp_ratio, norm, dropout) for mixer in mixers
        )
        self.ln_final = norm_layer(norm, d_model)
        self._init_weights(len(layers), init_std)

    def _init_weights(self, n_layers: int, std: float) -> None:
        """GPT-2 initialisation of linear maps and embeddings: N(0, std²) (GPT-2: std = 0.02),
        zero biases, residual projections scaled by 1/sqrt(2·layers); then each mixer's own
        special parameters."""
        generic = {
            id(parameter)
            for module in self.modules()
            if isinstance(module, (nn.Linear, nn.Embedding))
            for parameter in module.parameters(recurse=False)
        }
        for name, parameter in self.named_parameters():
            if id(parameter) not in generic:
                continue
            if name.endswith(".proj.weight"):
                nn.init.normal_(parameter, std=std / math.sqrt(2 * n_layers))
            elif parameter.dim() >= 2:
                nn.init.normal_(parameter, std=std)
            else:
                nn.init.zeros_(parameter)
        for block in self.blocks:
            block.mixer.reset_special_parameters()

    @property
    def max_length(self) -> int | None:
        """The longest sequence the learned position table covers; None without one."""
        return None if self.position is None else self.n_positions

    def forward(self, x: Tensor, visible: Tensor | None = None) -> Tensor:  # x: (B, T, E)
        """``visible`` (T,) bool, for set-style prompts: tokens marked False are private, seen
        by no later token (mixers with ``supports_private_tokens`` only)."""
        return self.ln_final(self.hidden_states(x, visible)[-1])

    def hidden_states(self, x: Tensor, visible: Tensor | None = None) -> list[Tensor]:
        """The residual stream before the first block and after each block (before the final
        norm): n_layers + 1 tensors (B, T, E), what probes read."""
        length = x.shape[1]
        if self.position is not None:
            x = x + self.position(torch.arange(length, device=x.device))
        states = [self.dropout(x)]
        for block in self.blocks:
            states.append(block(states[-1], visible))
        return states

    def stream(
        self,
        x: Tensor,
        visible: Tensor | None = None,
        policy: CachePolicy | None = None,
        group: int = 1,
    ) -> Tensor:
        """The forward pass token by token through every mixer's ``step``: the same outputs,
        with memory that stays flat in the context length for recurrent mixers. A private
        token (``visible`` False) is answered from the state and leaves it as it was.

        With a cache ``policy``, softmax layers keep what it keeps (examples are ``group``
        tokens). A policy in ``once`` mode reads the context with whole caches and answers each
        token from a compressed copy of them, as if the context ended there."""
        return self.stream_states(x, visible, policy, group)[0]

    def stream_states(
        self,
        x: Tensor,
        visible: Tensor | None = None,
        policy: CachePolicy | None = None,
        group: int = 1,
    ) -> tuple[Tensor, list[Any], list[float]]:
        """``stream``'s outputs, the states the last token was answered from (a policy's caches
        say what they kept) and the most floats per sequence each block held for an answer."""
        states = self.initial_states(x.shape[0], x.device, x.dtype, policy, group)
        outputs, peaks = [], [0.0] * len(self.blocks)
        for t in range(x.shape[1]):
            keep = visible is None or bool(visible[t])
            if policy is not None and policy.mode == "once":
                answered = [compress_cache(state) for state in states]
                output, _ = self.step(x[:, t], answered, t, keep=False)
                _, states = self.step(x[:, t], states, t, keep)
            else:
                output, states = self.step(x[:, t], states, t, keep)
                answered = states
            outputs.append(output)
            held = [held_floats(state, x.shape[0]) for state in answered]
            peaks = [max(pair) for pair in zip(peaks, held, strict=True)]
        return torch.stack(outputs, dim=1), answered, peaks

    def initial_states(
        self,
        batch: int,
        device: torch.device,
        dtype: torch.dtype,
        policy: CachePolicy | None = None,
        group: int = 1,
    ) -> list[Any]:
        """Every block's mixer state before the first token (``step``'s ``states``): a
        ``policy``'s empty cache for softmax layers when one is given."""
        n_cached = sum(block.mixer.has_kv_cache for block in self.blocks)
        states, cached = [], 0  # cached: the softmax layers given a cache so far
        for block in self.blocks:
            mixer = block.mixer
            if policy is None or not mixer.has_kv_cache:
                states.append(mixer.init_state(batch, device, dtype))
                continue
            cache = policy.new_cache(
                batch, mixer.n_heads, mixer.head_dim, device, dtype, cached, n_cached, group
            )
            states.append(mixer.with_window(cache))
            cached += 1
        return states

    def step(
        self, token: Tensor, states: list[Any], position: int, keep: bool = True
    ) -> tuple[Tensor, list[Any]]:
        """The output (B, E) for the token (B, E) at ``position`` after the tokens that made
        ``states``, and the states with it (unchanged when ``keep`` is False: a private token).
        One token at a time, for inference that acts on its own outputs (online rollouts)."""
        hidden = token
        if self.position is not None:
            hidden = hidden + self.position.weight[position]
        new_states = list(states)
        for index, block in enumerate(self.blocks):
            hidden, state = block.step(hidden, states[index])
            if keep:
                new_states[index] = state
        return self.ln_final(hidden), new_states


def compress_cache(state: Any) -> Any:
    """A policy-managed cache compressed to its budget by its policy's rule, as it would be if
    the context ended here; any other state as it is."""
    return state.policy.compress(state) if isinstance(state, KVCache) else state


def held_floats(state: Any, batch: int) -> float:
    """Floats per sequence in one block's state of ``batch`` sequences: a policy-managed cache
    counts its stored bits (and scales); other states every float of their tensors."""
    if isinstance(state, KVCache):
        return state.policy.floats(state)
    return state_numel(state) / batch
