"""Error curves: every learner on the same prompts, error at each prefix length with a 95% CI."""

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
from iclab.seeding import generator_for
from iclab.tasks.base import Task

Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


@dataclass(frozen=True)
class CurvePoint:
    """One row of the tidy table: a learner's mean error after ``k`` in-context examples."""

    learner: str
    shift: str
    k: int
    mean: float
    ci_low: float
    ci_high: float
    n_prompts: int


def squared_error_per_prompt(prediction: Tensor, episode_targets: Tensor, n_dims: int) -> Tensor:
    """(B, n) squared error divided by d, Garg et al.'s normalisation (1 = the zero predictor)."""
    return (prediction.double() - episode_targets.double()).pow(2) / n_dims


def summarise(errors: Tensor, learner: str, shift: str = "none") -> list[CurvePoint]:
    """Mean over prompts with a normal-approximation 95% interval, per prefix length k.

    ``errors`` is (n_prompts, n). With ≥ 1000 prompts the sample mean is close to normal even for
    the heavy-tailed errors of least squares near k = d.
    """
    n_prompts = errors.shape[0]
    mean = errors.mean(0)
    half_width = Z_95 * errors.std(0, unbiased=True) / math.sqrt(n_prompts)
    return [
        CurvePoint(learner, shift, k, m, m - h, m + h, n_prompts)
        for k, (m, h) in enumerate(zip(mean.tolist(), half_width.tolist(), strict=True))
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
    """Run every learner on the same ``n_prompts`` fresh prompts and summarise their errors.

    Prompts come from the ``(seed, "eval", batch)`` stream, disjoint from training batches.
    """
    errors: dict[str, list[Tensor]] = {learner.name: [] for learner in learners}
    if len(errors) != len(learners):
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
                errors[learner.name].append(
                    squared_error_per_prompt(prediction, episode.targets, task.n_dims).cpu()
                )
            progress.advance(bar)
    return [
        point for name, chunks in errors.items() for point in summarise(torch.cat(chunks), name)
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
                shift=row["shift"],
                k=int(row["k"]),
                mean=float(row["mean"]),
                ci_low=float(row["ci_low"]),
                ci_high=float(row["ci_high"]),
                n_prompts=int(row["n_prompts"]),
            )
            for row in csv.DictReader(handle)
        ]
