"""A trainable in-context learner: codec + backbone, with the ``InContextLearner`` interface."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from iclab.config import ModelConfig, TaskConfig
from iclab.episode import Episode
from iclab.models.backbone import Backbone
from iclab.models.codec import Codec, codec_for


class InContextModel(nn.Module):
    """Maps an episode to a prediction at every position in one causal forward pass."""

    def __init__(self, codec: Codec, backbone: Backbone, name: str = "model") -> None:
        super().__init__()
        self.codec = codec
        self.backbone = backbone
        self.name = name

    def forward(self, episode: Episode) -> Tensor:
        tokens = self.codec.encode(episode.inputs, episode.targets)
        return self.codec.decode(self.backbone(tokens))

    @torch.no_grad()
    def predict(self, episode: Episode) -> Tensor:
        was_training = self.training
        self.eval()
        try:
            return self(episode)
        finally:
            self.train(was_training)

    def n_params(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())


def build_model(model: ModelConfig, task: TaskConfig, name: str = "model") -> InContextModel:
    """The model a config describes, sized for the task's inputs, outputs and prompt length."""
    codec = codec_for(task.build(), model.d_model)
    backbone = Backbone(
        mixer=model.mixer,
        n_layers=model.n_layers,
        d_model=model.d_model,
        n_heads=model.n_heads,
        n_positions=codec.tokens_per_example * task.n_points,
        mlp_ratio=model.mlp_ratio,
        dropout=model.dropout,
    )
    return InContextModel(codec, backbone, name=name)
