"""The one-line answer an evaluation gives: the model against its reference yardstick at a
telling prefix length, with the paired interval, in words."""

from __future__ import annotations

from collections.abc import Sequence

from iclab.evaluation.curves import CurvePoint, PairedDifference
from iclab.kinds import Kind, Metric
from iclab.metrics import condition_metric
from iclab.report.pivot import TRAINING_SHIFT, excludes_zero


def telling_k(scored: Sequence[int], n_dims: int | None, metric: Metric) -> int:
    """Where a result is quoted: k = 2d for regression (least squares is exact from d on, so 2d
    separates learners that converge from those that do not), else the last k scored."""
    if metric.name == "error" and n_dims is not None and 2 * n_dims in scored:
        return 2 * n_dims
    return max(scored)


def result_sentence(
    curves: Sequence[CurvePoint],
    differences: Sequence[PairedDifference],
    n_dims: int | None,
    kind: Kind,
) -> str | None:
    """``At k=10 (error): model 0.093, least_squares 0.000; model − least_squares = +0.093
    [+0.083, +0.103], least_squares is better.`` on the condition the kind quotes
    (``Kind.headline``: the training distribution; online, for decisions); None before there
    is a first learner and a paired difference to quote."""
    condition = kind.headline
    metric = condition_metric(kind, condition)
    unshifted = [p for p in curves if p.shift == condition]
    pairs = [d for d in differences if d.shift == condition]
    if not unshifted or not pairs:
        return None
    learner, reference = unshifted[0].learner, pairs[0].reference
    mine = {d.k: d for d in pairs if d.learner == learner}
    if not mine:
        return None
    k = telling_k(sorted(mine), n_dims, metric)
    means = {(p.learner, p.k): p.mean for p in unshifted}
    where = "At" if condition == TRAINING_SHIFT else f"{condition.capitalize()}, at"
    return (
        f"{where} k={k} ({metric.name}): {learner} {means[learner, k]:.3f}, {reference} "
        f"{means[reference, k]:.3f}; {learner} − {reference} = {judged(mine[k], metric)}."
    )


def judged(difference: PairedDifference, metric: Metric) -> str:
    """``+0.093 [+0.080, +0.106], least_squares better``: a paired difference and what it
    says (no difference when its 95% interval holds 0)."""
    interval = f"{difference.mean:+.3f} [{difference.ci_low:+.3f}, {difference.ci_high:+.3f}]"
    if not excludes_zero(difference):
        return f"{interval}, no difference the prompts can tell"
    learner_better = (difference.mean > 0) == metric.higher_is_better
    return f"{interval}, {difference.learner if learner_better else difference.reference} better"
