"""What KV-cache policies held while a model answered: memory per layer and kept positions,
the tables beside an evaluation's curves (``caches.csv``, ``kept.csv``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from iclab.episode import Episode
from iclab.evaluation.curves import read_rows, write_rows
from iclab.learner import InContextLearner
from iclab.models import InContextModel
from iclab.models.cached import CachedModel
from iclab.models.caches import build_policy


@dataclass(frozen=True)
class CacheMemory:
    """The most floats per sequence one layer held for an answer under a policy (a recurrent
    or uncached layer: its whole state)."""

    learner: str
    policy: str
    layer: int
    floats: float


@dataclass(frozen=True)
class KeptShare:
    """The share of a layer's caches (over prompts and heads) that held the token at
    ``position`` when the prompts ended."""

    learner: str
    layer: int
    position: int
    share: float


def cached_learners(model: InContextModel, specs: Sequence[object]) -> list[CachedModel]:
    """The model under each cache policy spec, as learners named ``model[spec]``."""
    return [CachedModel(model, build_policy(spec)) for spec in specs]


def memory_rows(learners: Sequence[CachedModel]) -> list[CacheMemory]:
    return [
        CacheMemory(learner.name, learner.policy.spec, layer, floats)
        for learner in learners
        for layer, floats in enumerate(learner.peak_floats)
    ]


def kept_rows(learners: Sequence[CachedModel]) -> list[KeptShare]:
    return [
        KeptShare(learner.name, layer, position, share)
        for learner in learners
        for layer, shares in learner.kept_share().items()
        for position, share in enumerate(shares.tolist())
    ]


def write_cache_tables(learners: Sequence[CachedModel], directory: Path) -> None:
    write_rows(memory_rows(learners), CacheMemory, directory / "caches.csv")
    write_rows(kept_rows(learners), KeptShare, directory / "kept.csv")


def read_memory_csv(path: Path) -> list[CacheMemory]:
    return read_rows(path, CacheMemory)


def read_kept_csv(path: Path) -> list[KeptShare]:
    return read_rows(path, KeptShare)


def mean_floats_by_learner(rows: Sequence[CacheMemory]) -> dict[str, float]:
    """Learner → the mean over its layers of the most floats a layer held."""
    totals: dict[str, list[float]] = {}
    for row in rows:
        totals.setdefault(row.learner, []).append(row.floats)
    return {learner: sum(values) / len(values) for learner, values in totals.items()}


def evicted_rows(rows: Sequence[KeptShare]) -> list[KeptShare]:
    """The rows of the learners whose caches dropped something (the others kept all)."""
    evicting = {row.learner for row in rows if row.share < 1.0}
    return [row for row in rows if row.learner in evicting]


class LastExamples:
    """A learner that sees only the last ``examples`` examples before each query: what a
    sliding window of that many examples holds, so ``least_squares`` under it is the best a
    memory of that size allows (a yardstick for a cache budget). Named ``NAME[last m]``."""

    def __init__(self, learner: InContextLearner, examples: int) -> None:
        self.learner = learner
        self.examples = examples
        self.name = f"{learner.name}[last {examples}]"

    def predict(self, episode: Episode) -> Tensor:
        m, n = self.examples, episode.n_points
        whole = self.learner.predict(episode)
        if n <= m + 1:
            return whole
        batch = episode.batch_size
        # One prompt per query i ≥ m: examples i − m … i (the query last).
        windows = {
            name: value.unfold(1, m + 1, 1).movedim(-1, 2).flatten(0, 1)
            for name, value in episode.per_position().items()
        }
        meta = {
            key: value.repeat_interleave(n - m, dim=0) if value.shape[:1] == (batch,) else value
            for key, value in episode.meta.items()
        }
        windowed = replace(episode, meta=meta, **windows)
        last = self.learner.predict(windowed)[:, -1]
        return torch.cat((whole[:, :m], last.view(batch, n - m, *last.shape[1:])), dim=1)
