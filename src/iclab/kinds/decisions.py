"""Decisions: an action per step of an interaction history, trained by cross-entropy on the
action to take, scored by the regret of the action chosen.

A decision episode (in-context reinforcement learning) is a history of steps: an observation,
the action taken, the reward it earned. At step i a learner has seen the observations up to i
and the actions and rewards before i, and answers with a score per action; its choice is the
top-scoring action. ``targets`` holds the action it is trained to take (the optimal one for
Lee et al. 2023's Decision-Pretrained Transformer, a demonstrator's next action for Laskin et
al. 2022's algorithm distillation) and ``meta["action_values"]`` (B, K) the expected reward of
every action, so a choice is scored by its regret: best expected reward minus the chosen one's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from iclab.episode import Episode
from iclab.kinds.base import Kind, Metric, TaskIO, check_scores_shape
from iclab.kinds.classification import cross_entropy


class DecisionCodec(nn.Module):
    """Interleaved codec for interaction histories: an observation token per step (a linear
    read-in), then a feedback token (the action's embedding plus the reward times a learned
    vector); action logits are read at the observation tokens, which have seen everything
    before the step's own action. The layout of Lee et al. 2023's DPT with one token per
    observation and one per (action, reward)."""

    tokens_per_example = 2

    def __init__(self, n_dims: int, n_actions: int, d_model: int) -> None:
        super().__init__()
        self.read_in = nn.Linear(n_dims, d_model)
        self.action_embedding = nn.Embedding(n_actions, d_model)
        self.reward_in = nn.Linear(1, d_model, bias=False)
        self.read_out = nn.Linear(d_model, n_actions)

    def observation_tokens(self, observations: Tensor) -> Tensor:
        """(B, n, d) → (B, n, E)."""
        return self.read_in(observations)

    def feedback_tokens(self, actions: Tensor, rewards: Tensor) -> Tensor:
        """(B, n) long, (B, n) float → (B, n, E)."""
        return self.action_embedding(actions) + self.reward_in(rewards[..., None])

    def encode(self, observations: Tensor, actions: Tensor, rewards: Tensor) -> Tensor:
        """(B, n, d), (B, n), (B, n) → (B, 2n, E): o1, (a1, r1), o2, (a2, r2), …"""
        tokens = (self.observation_tokens(observations), self.feedback_tokens(actions, rewards))
        return torch.stack(tokens, dim=2).flatten(1, 2)

    def decode(self, hidden: Tensor) -> Tensor:
        """(B, 2n, E) → (B, n, K) action logits, read at the observation tokens."""
        return self.read_out(hidden[:, 0::2])


# The conditions (``shift`` column) of online evaluation, where the learners act, and what each
# one measures.
ONLINE_METRICS = {
    "online": Metric("cumulative_regret", "cumulative regret", higher_is_better=False),
    "online-pulls": Metric("suboptimal_pulls", "share of suboptimal pulls", higher_is_better=False),
}


def regret(choices: Tensor, action_values: Tensor) -> Tensor:
    """(B, n) expected regret of the chosen actions (B, n) given each prompt's (B, K) values."""
    best = action_values.max(-1).values[:, None]
    return best - action_values.gather(1, choices)


class Decisions(Kind):
    name = "decisions"
    metric = Metric("regret", "regret of the chosen action", higher_is_better=False)
    position_label = "steps of history k"
    headline = "online"  # what a decision learner is for: acting

    def build_codec(self, io: TaskIO, d_model: int, tokens: str) -> nn.Module:
        self.check_tokens(tokens)
        return DecisionCodec(io.n_dims, io.n_classes, d_model)

    def encode(self, codec: nn.Module, episode: Episode) -> Tensor:
        if episode.actions is None or episode.rewards is None:
            raise ValueError("a decisions episode needs its actions and rewards")
        return codec.encode(episode.inputs, episode.actions, episode.rewards)

    def check_prediction(self, prediction: Tensor, episode: Episode) -> None:
        check_scores_shape(prediction, episode)

    def losses(self, prediction: Tensor, episode: Episode) -> Tensor:
        return cross_entropy(prediction, episode)

    def scores(self, prediction: Tensor, episode: Episode, target_scale: float) -> Tensor:
        values = episode.meta["action_values"].to(prediction.device)
        return regret(prediction.argmax(-1), values).double()

    def describe_sizes(self, n_dims: int | None, n_points: int) -> str:
        return f"{n_points} steps"
