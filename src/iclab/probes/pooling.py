"""Akyürek et al.'s attention-pooled probe: a learned query attends over every hidden state a
prompt has up to a position, and a linear map reads the pooled state.

A probe of one token's hidden state asks whether that token holds a quantity; Akyürek et al.
2022 (Section 5, Figure 4) ask whether a layer holds it anywhere in the prompt so far: their
probe attends over the layer's states of every earlier token (weighting mostly the y tokens),
then reads the pooled vector linearly. One probe is fitted per layer, target and position (the
positions' probes side by side in one module), on half the prompts; R² is scored on the other
half.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from iclab.optim import Adam

BATCH = 256  # prompts per Adam step
LEARNING_RATE = 3e-3


class AttentionPooling(nn.Module):
    """One probe per position p: softmax(h_t · q_p) over the tokens t < ends[p], then a linear
    read-out of Σ_t a_t h_t (all positions' probes fitted at once, each on its own loss)."""

    def __init__(self, ends: Tensor, width: int, n_targets: int) -> None:
        super().__init__()
        self.register_buffer("ends", ends)
        n_positions = ends.shape[0]
        # Zeros: every fit starts from uniform pooling and a zero read-out, with no random draw
        self.query = nn.Parameter(torch.zeros(n_positions, width))
        self.weight = nn.Parameter(torch.zeros(n_positions, width, n_targets))
        self.bias = nn.Parameter(torch.zeros(n_positions, n_targets))

    def forward(self, states: Tensor) -> Tensor:
        """``states`` (B, T, E) → predictions (B, P, targets)."""
        visible = torch.arange(states.shape[1], device=states.device) < self.ends[:, None]
        scores = torch.einsum("bte,pe->bpt", states, self.query)
        weights = scores.masked_fill(~visible, -torch.inf).softmax(-1)  # (B, P, T)
        pooled = weights @ states  # (B, P, E)
        return torch.einsum("bpe,pet->bpt", pooled, self.weight) + self.bias


def pooled_predictions(
    states: Tensor, targets: Tensor, ends: Tensor, steps: int, generator: torch.Generator
) -> Tensor:
    """Held-out predictions (P, M, t) of attention-pooled probes from ``states`` (N, T, E) to
    ``targets`` (N, P, t), position p's probe pooling the tokens before ``ends[p]``: fitted with
    Adam for ``steps`` batches of prompts from the first half (M = N − N // 2 held out),
    states and targets standardised with the fit half's statistics."""
    n_fit = states.shape[0] // 2
    states = states.float()
    state_mean, state_scale = states[:n_fit].mean((0, 1)), states[:n_fit].std((0, 1))
    states = (states - state_mean) / state_scale.clamp(min=1e-6)
    target_mean = targets[:n_fit].mean(0)  # (P, t)
    target_scale = targets[:n_fit].std(0).clamp(min=1e-12)
    scaled = ((targets - target_mean) / target_scale).float()
    probe = AttentionPooling(ends.to(states.device), states.shape[-1], targets.shape[-1])
    optimizer = Adam(probe.parameters(), lr=LEARNING_RATE)
    for _ in range(steps):
        prompts = torch.randint(n_fit, (BATCH,), generator=generator)
        loss = (probe(states[prompts]) - scaled[prompts]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predictions = probe(states[n_fit:])
    return (predictions.to(targets.dtype) * target_scale + target_mean).transpose(0, 1)
