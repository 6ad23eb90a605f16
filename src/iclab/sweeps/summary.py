"""The sweep's summary: each trial's outcome (``TrialRow``), the sweep's result (``SweepResult``)
and the files that compare the trials in the sweep directory: sweep.csv (a row per trial),
sweep.json (the spec, the best trial, the rows) and sweep.png (the metric against the swept
parameters)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import matplotlib.pyplot as plt
import numpy as np

from iclab.io import atomic_write_json, atomic_write_text
from iclab.report.plots import save_figure
from iclab.sweeps.spec import SweepSpec

TrialStatus = Literal["completed", "failed", "invalid"]


@dataclass(frozen=True)
class TrialRow:
    """A trial's outcome, one row of sweep.csv."""

    trial: str
    values: dict[str, Any]
    status: TrialStatus
    metric: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class SweepResult:
    """What ``run_sweep`` returns: every trial's row, the best one and the files written."""

    spec: SweepSpec
    directory: Path
    measure: str  # what ``metric`` measures: error, accuracy or loss
    label: str  # axis label of the metric
    mode: Literal["min", "max"]
    rows: list[TrialRow]  # in trial order
    best: TrialRow | None
    files: list[Path] = field(default_factory=list)

    def ranked(self) -> list[TrialRow]:
        """Completed trials best first (NaN metrics after them), then failed, then invalid."""
        sign = -1.0 if self.mode == "max" else 1.0

        def key(row: TrialRow) -> tuple[int, float]:
            if row.status != "completed":
                return (2 if row.status == "failed" else 3, 0.0)
            if row.metric is None or math.isnan(row.metric):
                return (1, 0.0)
            return (0, sign * row.metric)

        return sorted(self.rows, key=key)


def write_summary(
    spec: SweepSpec,
    directory: Path,
    measure: str,
    label: str,
    mode: Literal["min", "max"],
    rows: list[TrialRow],
) -> SweepResult:
    """sweep.csv (a row per trial), sweep.json (spec, best trial, rows) and sweep.png."""
    scored = [
        row
        for row in rows
        if row.status == "completed" and row.metric is not None and not math.isnan(row.metric)
    ]
    choose = max if mode == "max" else min
    best = choose(scored, key=lambda row: row.metric) if scored else None
    parameters = list(spec.parameters)
    directory.mkdir(parents=True, exist_ok=True)
    files = [directory / "sweep.csv", directory / "sweep.json", directory / "sweep.png"]
    atomic_write_text(files[0], sweep_csv(rows, parameters))
    atomic_write_json(
        files[1],
        {
            "file": str(spec.source),
            "spec": spec.model_dump(mode="json"),
            "metric": {"name": spec.metric, "measures": measure, "label": label, "mode": mode},
            "best": None if best is None else json_row(best),
            "rows": [json_row(row) for row in rows],
        },
    )
    if scored:
        save_figure(sweep_figure(spec, scored, label), files[2])
    else:
        files[2].unlink(missing_ok=True)
        files.pop()
    return SweepResult(spec, directory, measure, label, mode, rows, best, files)


def sweep_csv(rows: Sequence[TrialRow], parameters: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", *parameters, "status", "metric", "error"])
    for row in rows:
        cells = [cell_text(row.values.get(path)) for path in parameters]
        metric = "" if row.metric is None else repr(row.metric)
        writer.writerow([row.trial, *cells, row.status, metric, row.error or ""])
    return buffer.getvalue()


def cell_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def json_row(row: TrialRow) -> dict[str, Any]:
    data = asdict(row)
    if row.metric is not None and not math.isfinite(row.metric):
        data["metric"] = None  # JSON has no NaN; the status says the trial completed
    return data


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def sweep_figure(spec: SweepSpec, rows: Sequence[TrialRow], label: str) -> Any:
    """The metric against the first parameter, one line per value of the second (when it is a
    list of values, not a distribution); a grid draws the mean over trials that share both
    (repeats, further parameters) through every trial's point, a random search only the
    points. Log x when the values span more than 10×."""
    parameters = list(spec.parameters)
    x_path = parameters[0]
    group_path = None
    if len(parameters) > 1 and isinstance(spec.parameters[parameters[1]], list):
        group_path = parameters[1]
    xs = [row.values[x_path] for row in rows]
    numeric = all(is_number(x) for x in xs)
    categories = list(dict.fromkeys(cell_text(x) for x in xs))
    position = {category: float(index) for index, category in enumerate(categories)}

    def at(value: Any) -> float:
        return float(value) if numeric else position[cell_text(value)]

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    groups = list(dict.fromkeys(cell_text(row.values.get(group_path)) for row in rows))
    for group in groups:
        members = [row for row in rows if cell_text(row.values.get(group_path)) == group]
        points = sorted((at(row.values[x_path]), row.metric) for row in members)
        legend = f"{group_path}={group}" if group_path else None
        if spec.search == "grid":
            means = {
                x: float(np.mean([metric for other, metric in points if other == x]))
                for x in dict.fromkeys(x for x, _ in points)
            }
            (line,) = axes.plot(list(means), list(means.values()), marker="o", label=legend)
            axes.scatter(*zip(*points, strict=True), s=12, alpha=0.5, color=line.get_color())
        else:
            axes.scatter(*zip(*points, strict=True), s=18, label=legend)
    if numeric and min(xs) > 0 and max(xs) > 10 * min(xs):
        axes.set_xscale("log")
    if not numeric:
        axes.set_xticks(list(position.values()), categories, rotation=20)
    elif spec.search == "grid":  # ticks at the grid's values, not at round numbers
        ticks = sorted(set(xs))
        axes.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
        axes.minorticks_off()
    axes.set_xlabel(x_path)
    axes.set_ylabel(label)
    axes.set_title(f"sweep {spec.name}")
    axes.grid(alpha=0.3)
    if group_path:
        axes.legend(frameon=False)
    return figure
