"""Curves: every learner on the same prompts, its metric at each prefix length with a 95% CI.

The metric fits the task's kind (``iclab.metrics``): normalised squared error for regression,
accuracy for classification and tokens.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from rich.progress import Progress
from torch import Tensor

from iclab.io import atomic_write_text
from iclab.learner import InContextLearner
from iclab.metrics import METRICS, score
from iclab.seeding import generator_for
from iclab.tasks.base import Task

Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


@dataclass(frozen=True)
class CurvePoint:
    """One row of the tidy table: a learner's mean metric after ``k`` in-context examples
    (at token ``k`` for token tasks), over the ``n_prompts`` prompts that score that position."""

    learner: str
    metric: str
    shift: str
    k: int
    mean: float
    ci_low: float
    ci_high: float
    n_prompts: int


def summarise(
    scores: Tensor, learner: str, metric: str = "error", shift: str = "none"
) -> list[CurvePoint]:
    """Mean over prompts with a normal-approximation 95% interval, per prefix length k.

    ``scores`` is (n_prompts, n), NaN where a position is not scored; positions no prompt scores
    are left out. With ≥ 1000 prompts the sample mean is close to normal even for the
    heavy-tailed errors of least squares near k = d.
    """
    scored = ~scores.isnan()
    count = scored.sum(0)
    values = scores.nan_to_num(0.0)
    mean = values.sum(0) / count.clamp(min=1)
    variance = ((values - mean).pow(2) * scored).sum(0) / (count - 1).clamp(min=1)
    half_width = Z_95 * variance.sqrt() / count.clamp(min=1).sqrt()
    return [
        CurvePoint(learner, metric, shift, k, m, m - h, m + h, c)
        for k, (m, h, c) in enumerate(
            zip(mean.tolist(), half_width.tolist(), count.tolist(), strict=True)
        )
        if c > 0
    ]


def evaluate(
    learners: Sequence[InContextLearner],
    task: Task,
    n_points: int,
    n_prompts: int,
    batch_size: int,
    seed: int,
    device: torch.device | str = "cpu",
    show_progress: bool = False,
) -> list[CurvePoint]:
    """Run every learner on the same ``n_prompts`` fresh prompts and summarise their scores.

    Prompts come from the ``(seed, "eval", batch)`` stream, disjoint from training batches.
    """
    scores: dict[str, list[Tensor]] = {learner.name: [] for learner in learners}
    if len(scores) != len(learners):
        raise ValueError(f"learner names must be unique, got {[lr.name for lr in learners]}")
    n_batches = math.ceil(n_prompts / batch_size)
    with Progress(transient=True, disable=not show_progress) as progress:
        bar = progress.add_task("evaluating", total=n_batches)
        for batch in range(n_batches):
            size = min(batch_size, n_prompts - batch * batch_size)
            generator = generator_for(seed, "eval", batch, device=device)
            episode = task.sample(size, n_points, generator)
            for learner in learners:
                prediction = learner.predict(episode)
                scores[learner.name].append(score(prediction, episode, task).cpu())
            progress.advance(bar)
    metric = METRICS[task.kind].name
    return [
        point
        for name, chunks in scores.items()
        for point in summarise(torch.cat(chunks), name, metric)
    ]


def write_curves_csv(points: Sequence[CurvePoint], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[field.name for field in fields(CurvePoint)])
    writer.writeheader()
    writer.writerows(asdict(point) for point in points)
    atomic_write_text(path, buffer.getvalue())


def read_curves_csv(path: Path) -> list[CurvePoint]:
    with Path(path).open(newline="") as handle:
        return [
            CurvePoint(
                learner=row["learner"],
                metric=row["metric"],
                shift=row["shift"],
                k=int(row["k"]),
                mean=float(row["mean"]),
                ci_low=float(row["ci_low"]),
                ci_high=float(row["ci_high"]),
                n_prompts=int(row["n_prompts"]),
            )
            for row in csv.DictReader(handle)
        ]
