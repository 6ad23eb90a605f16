"""Figures written into a run directory (matplotlib, no display needed)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from iclab.evaluation.curves import CurvePoint
from iclab.io import atomic_write_bytes
from iclab.kinds import Metric
from iclab.report.summary import telling_k


def png_bytes(figure: plt.Figure) -> bytes:
    """The figure as PNG bytes (and closed): for files and for images embedded in a report."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=130, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def save_figure(figure: plt.Figure, path: Path) -> None:
    atomic_write_bytes(path, png_bytes(figure))


FIXED_RANGES = {"error": 1.25, "accuracy": 1.02}  # upper y limits of the bounded metrics


def plot_curves(
    points: Sequence[CurvePoint],
    path: Path,
    title: str,
    ylabel: str,
    marker_k: int | None = None,
    trained_k: int | None = None,
    xlabel: str = "in-context examples k",
) -> None:
    save_figure(curves_figure(points, title, ylabel, marker_k, trained_k, xlabel), path)


def curves_figure(
    points: Sequence[CurvePoint],
    title: str,
    ylabel: str,
    marker_k: int | None = None,
    trained_k: int | None = None,
    xlabel: str = "in-context examples k",
) -> plt.Figure:
    """Metric vs number of in-context examples, one line per learner, shaded 95% CIs, the legend
    beside the axes (never over the curves), integer k ticks; a labelled dotted line at
    ``marker_k`` (k = d, where least squares becomes exact) and a dashed one at ``trained_k``,
    the longest context seen in training, when the curve goes past it."""
    figure, axes = plt.subplots(figsize=(9.0, 4.2))
    learners = list(dict.fromkeys(point.learner for point in points))
    for learner in learners:
        rows = sorted((p for p in points if p.learner == learner), key=lambda p: p.k)
        ks = [p.k for p in rows]
        style = {"linewidth": 2.4, "zorder": 3} if learner == learners[0] else {"linewidth": 1.4}
        axes.plot(ks, [p.mean for p in rows], label=learner, **style)
        axes.fill_between(ks, [p.ci_low for p in rows], [p.ci_high for p in rows], alpha=0.2)
    if marker_k is not None:
        labelled_line(axes, marker_k, f"k = d = {marker_k}")
    if trained_k is not None:
        axes.axvline(trained_k, color="black", linestyle="--", linewidth=1, label="trained length")
    metric = points[0].metric if points else "error"
    if metric in FIXED_RANGES:  # the metrics on a common scale keep it, so figures compare
        axes.set_ylim(0, FIXED_RANGES[metric])
    else:
        axes.set_ylim(bottom=0)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    return figure


def plot_checkpoints(
    steps: Sequence[int],
    curves: Sequence[Sequence[CurvePoint]],
    path: Path,
    title: str,
    metric: Metric,
    n_dims: int | None,
) -> None:
    save_figure(checkpoints_figure(steps, curves, title, metric, n_dims), path)


def checkpoints_figure(
    steps: Sequence[int],
    curves: Sequence[Sequence[CurvePoint]],
    title: str,
    metric: Metric,
    n_dims: int | None,
) -> plt.Figure:
    """Every learner's metric at a telling k (``telling_k``) on the training distribution, one
    evaluation per checkpoint, against the training step, with shaded 95% CIs: how in-context
    learning appears (or fades) along training. Algorithms do not train, so they are flat."""
    figure, axes = plt.subplots(figsize=(9.0, 4.2))
    first = [p for p in curves[0] if p.shift == "none"]
    k = telling_k(sorted({p.k for p in first}), n_dims, metric)
    learners = list(dict.fromkeys(p.learner for p in first))
    for learner in learners:
        rows = [
            next(p for p in points if p.learner == learner and p.shift == "none" and p.k == k)
            for points in curves
        ]
        style = {"linewidth": 2.4, "zorder": 3, "marker": "o"} if learner == learners[0] else {}
        axes.plot(steps, [p.mean for p in rows], label=learner, **style)
        axes.fill_between(steps, [p.ci_low for p in rows], [p.ci_high for p in rows], alpha=0.2)
    axes.set_xlabel("training step")
    axes.set_ylabel(f"{metric.label} at k = {k}")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    return figure


def labelled_line(axes: plt.Axes, x: float, label: str, along: bool = False) -> None:
    """A dotted vertical line at ``x`` with ``label`` at its top: across, or ``along`` the line
    where neighbouring lines would crowd labels written across."""
    axes.axvline(x, color="grey", linestyle=":", linewidth=1)
    axes.annotate(
        label,
        (x, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(2, -4) if along else (3, -12),
        textcoords="offset points",
        fontsize=8 if not along else 7,
        color="grey",
        rotation=90 if along else 0,
        va="top",
    )


def plot_training(metrics: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    save_figure(training_figure(metrics, title), path)


def training_figure(metrics: Sequence[dict[str, Any]], title: str) -> plt.Figure:
    """Training loss against step (log scale), the learning rate on a second axis, and a dotted
    line where each curriculum stage starts (its input dimension and prompt length written at
    the top): the loss rises at a stage because the prompts got harder."""
    figure, axes = plt.subplots(figsize=(6.4, 3.6))
    steps = [row["step"] for row in metrics]
    axes.plot(steps, [row["loss"] for row in metrics], linewidth=1.2, label="loss")
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("training loss")
    axes.set_title(title)
    axes.grid(alpha=0.3, which="both")
    for step, stage in curriculum_stages(metrics)[1:]:
        labelled_line(axes, step, stage, along=True)
    if any("lr" in row for row in metrics):
        rate = axes.twinx()
        rate.plot(steps, [row.get("lr") for row in metrics], color="tab:orange", linewidth=1)
        rate.set_ylabel("learning rate", color="tab:orange")
        rate.tick_params(axis="y", colors="tab:orange")
        rate.set_ylim(bottom=0)
    return figure


def curriculum_stages(metrics: Sequence[dict[str, Any]]) -> list[tuple[int, str]]:
    """(first logged step, ``d=3 n=11``) of every curriculum stage in the log."""
    stages: list[tuple[int, str]] = []
    for row in metrics:
        stage = f"d={row.get('n_dims')} n={row.get('n_points')}"
        if not stages or stages[-1][1] != stage:
            stages.append((row["step"], stage))
    return stages
