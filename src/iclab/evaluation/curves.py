"""Curves: every learner on the same prompts, its metric at each prefix length with a 95% CI.

The metric fits the task's kind (``iclab.metrics``): normalised squared error for regression,
accuracy for classification and tokens.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import Tensor

from iclab.episode import Episode
from iclab.errors import ConfigError
from iclab.evaluation.rollouts import online_regrets
from iclab.evaluation.shifts import Shift
from iclab.io import atomic_write_text
from iclab.kinds.decisions import ONLINE_METRICS
from iclab.learner import InContextLearner
from iclab.metrics import METRICS, score
from iclab.progress import progress
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


@dataclass(frozen=True)
class PairedDifference:
    """``learner`` − ``reference`` after ``k`` examples, averaged over the prompts both scored:
    its interval comes from the per-prompt differences, so it is far narrower than two
    overlapping bands when the learners err on the same prompts."""

    learner: str
    reference: str
    metric: str
    shift: str
    k: int
    mean: float
    ci_low: float
    ci_high: float
    n_prompts: int


@dataclass(frozen=True)
class Evaluation:
    """Every learner's curve per shift, and the paired differences to the reference learner;
    ``scores``: (shift, learner) → the (prompts, n) scores behind them, for statistics over
    several positions of a prompt (``late_paired_difference``); not written to disk."""

    curves: list[CurvePoint]
    differences: list[PairedDifference]
    scores: dict[tuple[str, str], Tensor] = field(default_factory=dict, kw_only=True)


def late_paired_difference(
    evaluation: Evaluation, learner: str, reference: str, first_k: int, shift: str = "none"
) -> tuple[float, float, float]:
    """``learner`` − ``reference`` over the positions k ≥ ``first_k``: each prompt's mean
    difference is one sample (its positions are correlated), so the 95% interval is across
    prompts — far narrower than the per-k intervals averaged, and still honest. Returns
    (mean, ci_low, ci_high)."""
    late = (evaluation.scores[shift, learner] - evaluation.scores[shift, reference])[:, first_k:]
    per_prompt = late.nanmean(1)
    per_prompt = per_prompt[~per_prompt.isnan()]
    if per_prompt.numel() < 2:
        raise ValueError(f"fewer than two prompts score {learner} and {reference} at k ≥ {first_k}")
    mean = float(per_prompt.mean())
    half = Z_95 * float(per_prompt.std()) / math.sqrt(per_prompt.numel())
    return mean, mean - half, mean + half


def evaluate(
    learners: Sequence[InContextLearner],
    task: Task,
    n_points: int,
    n_prompts: int,
    batch_size: int,
    seed: int,
    device: torch.device | str = "cpu",
    show_progress: bool = False,
    shifts: Sequence[Shift] = (),
    reference: str | None = None,
) -> Evaluation:
    """Run every learner on the same ``n_prompts`` fresh prompts, unshifted and under each
    shift, and summarise their scores (and their differences to ``reference``).

    Prompts come from the ``(seed, "eval", batch)`` stream, disjoint from training batches; a
    shift draws its own randomness from ``(seed, "shift", spec, batch)``, so every learner sees
    the same shifted prompts. Regression errors under a shift are divided by E[y²] under that
    shift (``shifted_target_scale``): the zero predictor scores 1 whatever the shift.

    Decision tasks are also evaluated online (``iclab.evaluation.rollouts``): every learner
    acts in the same environments of the ``(seed, "online", batch)`` stream, giving two more
    conditions, ``online`` (cumulative regret) and ``online-pulls`` (share of suboptimal pulls).
    """
    names = [learner.name for learner in learners]
    if len(set(names)) != len(names):
        raise ConfigError(f"learner names must be unique, got {names}")
    if reference is not None and reference not in names:
        raise ConfigError(f"reference learner {reference!r} is not evaluated; learners: {names}")
    conditions: list[tuple[str, Shift | None, float]] = [("none", None, task.target_scale)]
    for shift in shifts:
        scale = shifted_target_scale(shift, task, n_points, seed, device)
        conditions.append((shift.spec, shift, scale))
    metrics = {spec: METRICS[task.kind].name for spec, _, _ in conditions}
    online = task.kind == "decisions"
    if online:
        metrics |= {spec: metric.name for spec, metric in ONLINE_METRICS.items()}
    scores = {(spec, name): [] for spec in metrics for name in names}
    n_batches = math.ceil(n_prompts / batch_size)
    total = n_batches * (len(conditions) * len(learners) + online)  # a unit per learner
    with progress("evaluating", total, enabled=show_progress, transient=True) as tracker:
        batches = eval_batches(task, n_points, n_prompts, batch_size, seed, device)
        for batch, episode in batches:
            for spec, shift, scale in conditions:
                views = [episode]
                if shift is not None:
                    generator = generator_for(seed, "shift", spec, batch, device=device)
                    views = shift.views(episode, task, generator)
                for learner in learners:
                    under = f" under {spec}" if shift else ""
                    tracker.update(description=f"evaluating {learner.name}{under}")
                    scores[spec, learner.name].append(score_views(learner, views, task, scale))
                    tracker.advance()
            if online:
                tracker.update(description="evaluating online rollouts")
                size = episode.batch_size
                rollouts = online_regrets(learners, task, n_points, size, seed, batch, device)
                for name, per_condition in rollouts.items():
                    for spec, values in zip(ONLINE_METRICS, per_condition, strict=True):
                        scores[spec, name].append(values)
                tracker.advance()
    curves, differences, kept = [], [], {}
    for spec, metric in metrics.items():
        by_learner = {name: torch.cat(scores[spec, name]) for name in names}
        kept |= {(spec, name): values for name, values in by_learner.items()}
        for name, values in by_learner.items():
            curves += summarise(values, name, metric, spec)
        if reference is None:
            continue
        for name, values in by_learner.items():
            if name != reference:
                paired = summarise(values - by_learner[reference], name, metric, spec)
                differences += [PairedDifference(reference=reference, **asdict(p)) for p in paired]
    return Evaluation(curves, differences, scores=kept)


def mean_score_at(
    learner: InContextLearner,
    task: Task,
    n_points: int,
    n_prompts: int,
    batch_size: int,
    seed: int,
    k: int,
    device: torch.device | str = "cpu",
) -> float:
    """The learner's mean score after ``k`` examples on ``n_prompts`` prompts of the
    ``(seed, "eval", batch)`` stream: one point of ``evaluate``'s unshifted curve, for a quick
    check during training (``train.stop_at``); NaN when no prompt scores position ``k``."""
    values = [
        score_views(learner, [episode], task, task.target_scale)[:, k]
        for _, episode in eval_batches(task, n_points, n_prompts, batch_size, seed, device)
    ]
    return float(torch.cat(values).nanmean())


def eval_batches(
    task: Task,
    n_points: int,
    n_prompts: int,
    batch_size: int,
    seed: int,
    device: torch.device | str = "cpu",
) -> Iterator[tuple[int, Episode]]:
    """The evaluation's prompts, batch by batch: ``(batch, episode)`` from the
    ``(seed, "eval", batch)`` stream, ``n_prompts`` in all."""
    for batch in range(math.ceil(n_prompts / batch_size)):
        size = min(batch_size, n_prompts - batch * batch_size)
        yield batch, task.sample(size, n_points, generator_for(seed, "eval", batch, device=device))


def score_views(
    learner: InContextLearner, views: Sequence[Episode], task: Task, target_scale: float
) -> Tensor:
    """(B, n) scores of one learner on the views of a batch (NaN where no view scores)."""
    n_points = max(view.n_points for view in views)
    total = torch.full((views[0].batch_size, n_points), torch.nan, dtype=torch.float64)
    for view in views:
        values = score(learner.predict(view), view, target_scale).cpu()
        scored = ~values.isnan()
        total[:, : view.n_points][scored] = values[scored]
    return total


def shifted_target_scale(
    shift: Shift, task: Task, n_points: int, seed: int, device: torch.device | str = "cpu"
) -> float:
    """E[y²] over the scored targets of shifted prompts, estimated on 2048 prompts of their own
    stream (a constant of the shift, not of the evaluated prompts); 1.0 for non-regression."""
    if task.kind != "regression":
        return 1.0
    generator = generator_for(seed, "shift-scale", shift.spec, device=device)
    episode = task.sample(2048, n_points, generator)
    squares = []
    for view in shift.views(episode, task, generator):
        mask = torch.ones_like(view.targets, dtype=torch.bool)
        if view.loss_mask is not None:
            mask = view.loss_mask
        squares.append(view.targets[mask].double().pow(2))
    return torch.cat(squares).mean().item()


def write_differences_csv(differences: Sequence[PairedDifference], path: Path) -> None:
    write_rows(differences, PairedDifference, path)


def read_differences_csv(path: Path) -> list[PairedDifference]:
    return read_rows(path, PairedDifference)


def reported_ks(points: Sequence[CurvePoint], n_dims: int | None) -> list[int]:
    """The prefix lengths a summary table shows: 1, d, 2d and the last for regression (where
    d examples make least squares exact), otherwise the first, ¼, ½ and last scored ones."""
    scored = sorted({p.k for p in points})
    if not scored:
        return []
    if points[0].metric == "error" and n_dims is not None:
        wanted = [1, n_dims, 2 * n_dims, scored[-1]]
    else:
        wanted = [scored[round(q * (len(scored) - 1))] for q in (0, 0.25, 0.5, 1)]
    return [k for k in dict.fromkeys(wanted) if k in scored]


def write_curves_csv(points: Sequence[CurvePoint], path: Path) -> None:
    write_rows(points, CurvePoint, path)


def read_curves_csv(path: Path) -> list[CurvePoint]:
    return read_rows(path, CurvePoint)


def write_rows(rows: Sequence, row_type: type, path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[field.name for field in fields(row_type)])
    writer.writeheader()
    writer.writerows(asdict(row) for row in rows)
    atomic_write_text(path, buffer.getvalue())


def read_rows(path: Path, row_type: type) -> list:
    """Rows of a table written by ``write_rows``, each column converted to its field type."""
    types = {"int": int, "float": float, "str": str}
    converters = {field.name: types[field.type] for field in fields(row_type)}
    with Path(path).open(newline="") as handle:
        return [
            row_type(**{key: converters[key](value) for key, value in row.items()})
            for row in csv.DictReader(handle)
        ]
