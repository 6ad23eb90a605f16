"""What KV-cache policies held while a model answered: memory per layer and kept positions,
the tables beside an evaluation's curves (``caches.csv``, ``kept.csv``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from iclab.evaluation.curves import read_rows, write_rows
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


def floats_per_layer(rows: Sequence[CacheMemory]) -> dict[str, float]:
    """Learner → the mean over its layers of the most floats a layer held."""
    totals: dict[str, list[float]] = {}
    for row in rows:
        totals.setdefault(row.learner, []).append(row.floats)
    return {learner: sum(values) / len(values) for learner, values in totals.items()}


def evicted_rows(rows: Sequence[KeptShare]) -> list[KeptShare]:
    """The rows of the learners whose caches dropped something (the others kept all)."""
    evicting = {row.learner for row in rows if row.share < 1.0}
    return [row for row in rows if row.learner in evicting]
