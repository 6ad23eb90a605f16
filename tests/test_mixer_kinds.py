"""Every mixer with every episode kind: a model of each registered mixer, around the codec of
each kind, takes a training step through the trainer, predicts the kind's shape, and streams
the same predictions token by token. Task families are found from the registry (the first
family of each kind), so a new mixer or kind is covered without editing this file."""

from __future__ import annotations

import math

import pytest
import torch

from iclab.config import build_config
from iclab.kinds import KINDS
from iclab.models.mixers import MIXERS
from iclab.tasks import TASKS
from iclab.training.trainer import Trainer

FAMILY_OF_KIND = {
    kind: next(name for name, family in TASKS if family.kind == kind) for kind in KINDS
}


def test_every_kind_has_a_task_family():
    assert set(FAMILY_OF_KIND) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("mixer", MIXERS.names())
def test_every_mixer_trains_and_streams_on_every_kind(mixer, kind):
    family = TASKS.get(FAMILY_OF_KIND[kind])
    n_points = max(12, family.default_n_points // 8) if kind == "tokens" else 9
    config = build_config(
        {
            "task": {"name": family.name, "n_dims": 4, "n_points": n_points},
            "model": {"mixer": mixer, "n_layers": 2, "d_model": 16, "n_heads": 2},
            "train": {"steps": 1, "batch_size": 4, "device": "cpu"},
            "eval": {"algorithms": []},
        }
    )
    trainer = Trainer(config)
    before = [parameter.detach().clone() for parameter in trainer.model.parameters()]
    loss, _ = trainer.train_step(0)
    assert math.isfinite(loss.item())
    moved = [not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True)]
    assert any(moved), "a training step changed no parameter"
    episode = trainer.task.sample(3, n_points, torch.Generator().manual_seed(1))
    prediction = trainer.model.predict(episode)
    classes = () if kind == "regression" else (trainer.task.n_classes,)
    assert prediction.shape == (*episode.targets.shape, *classes)
    assert prediction.isfinite().all()
    streamed = trainer.model.predict(episode, streaming=True)
    torch.testing.assert_close(streamed, prediction, rtol=1e-4, atol=1e-4)
