"""Figures of memory-bounded inference: which positions cache policies kept, and the metric at
a long context against the memory each learner held."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt

from iclab.evaluation.caches import KeptShare
from iclab.evaluation.curves import CurvePoint


def kept_figure(rows: Sequence[KeptShare], title: str, tokens_per_example: int) -> plt.Figure:
    """One heat map per policy: softmax layers down, prompt positions (in examples) across,
    colour the share of caches (prompts × heads) that still held the position at the end."""
    learners = list(dict.fromkeys(row.learner for row in rows))
    figure, grid = plt.subplots(
        len(learners),
        1,
        figsize=(9.0, 1.0 + 1.0 * len(learners)),
        squeeze=False,
        sharex=True,
        gridspec_kw={"hspace": 0.45},
    )
    for axes, learner in zip(grid[:, 0], learners, strict=True):
        mine = [row for row in rows if row.learner == learner]
        layers = sorted({row.layer for row in mine})
        length = max(row.position for row in mine) + 1
        table = [[0.0] * length for _ in layers]
        for row in mine:
            table[layers.index(row.layer)][row.position] = row.share
        extent = (0, length / tokens_per_example, len(layers) - 0.5, -0.5)
        image = axes.imshow(
            table,
            aspect="auto",
            vmin=0,
            vmax=1,
            cmap="viridis",
            extent=extent,
            interpolation="nearest",
        )
        axes.set_yticks(range(len(layers)), [str(layer) for layer in layers], fontsize=7)
        axes.set_ylabel("layer", fontsize=8)
        axes.set_title(learner, fontsize=9, loc="left")
    grid[-1, 0].set_xlabel("position in the prompt (examples)")
    figure.colorbar(image, ax=grid[:, 0].tolist(), label="share of caches holding it", shrink=0.8)
    figure.suptitle(title)
    return figure


def memory_figure(
    points: Sequence[CurvePoint],
    memory: dict[str, float],
    families: dict[str, str],
    k: int,
    title: str,
    ylabel: str,
    flat: dict[str, float],
) -> plt.Figure:
    """The metric after ``k`` examples against floats held per layer (log axis): each policy
    family a line over its budgets, every other learner with memory a point, and learners
    without memory (``flat``: algorithms) a dashed level with a marker at their state size when
    it is known."""
    figure, axes = plt.subplots(figsize=(9.0, 4.6))
    at_k = {p.learner: p for p in points if p.k == k and p.shift == "none"}
    by_family: dict[str, list[tuple[float, CurvePoint]]] = {}
    for learner, floats in memory.items():
        if learner in at_k:
            by_family.setdefault(families.get(learner, learner), []).append((floats, at_k[learner]))
    for family, members in by_family.items():
        members.sort(key=lambda pair: pair[0])
        xs, ys = [m for m, _ in members], [p.mean for _, p in members]
        errors = [[p.mean - p.ci_low for _, p in members], [p.ci_high - p.mean for _, p in members]]
        style = {"marker": "o"} if len(members) > 1 else {"marker": "D", "markersize": 8}
        axes.errorbar(xs, ys, yerr=errors, label=family, capsize=2, **style)
    shades = plt.get_cmap("Dark2").colors
    for index, (learner, floats) in enumerate(flat.items()):
        if learner not in at_k:
            continue
        colour, level = shades[index % len(shades)], at_k[learner].mean
        label = learner if math.isnan(floats) else f"{learner} ({floats:,.0f} floats)"
        axes.axhline(level, linestyle=(0, (4, 2 + index)), linewidth=1, color=colour, label=label)
        if not math.isnan(floats):
            axes.plot([floats], [level], marker="*", markersize=12, color=colour)
    axes.set_xscale("log", base=2)
    axes.set_xlabel("memory per layer (floats per sequence)")
    axes.set_ylabel(f"{ylabel} at k = {k}")
    axes.set_ylim(bottom=0)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return figure
