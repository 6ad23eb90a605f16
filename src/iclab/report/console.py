"""What the command line prints: evaluation tables, listings of what is registered, run and
sweep tables. Renderers return rich renderables; the CLI only prints them.

The evaluation tables read the same learner × k pivot as the HTML report (``report.pivot``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from iclab.config import RunConfig
from iclab.evaluation.caches import CacheMemory, mean_floats_by_learner
from iclab.evaluation.curves import CurvePoint, Evaluation, PairedDifference, reported_ks
from iclab.kinds import kind_of
from iclab.report.listings import plain
from iclab.report.pivot import TRAINING_SHIFT, excludes_zero, last_k_up_to, pivot
from iclab.report.summary import result_sentence

STATUS_STYLES = {
    "completed": "green",
    "running": "yellow",
    "interrupted": "yellow",
    "stopped": "red",
    "failed": "red",
    "diverged": "red",
    "broken": "red",
    "new": "dim",
    "invalid": "yellow",
}


# --- evaluations ----------------------------------------------------------------------------


def evaluation_tables(evaluation: Evaluation, config: RunConfig) -> list[RenderableType]:
    """Every learner's metric at a few prefix lengths; under shifts, each shift at one k; the
    paired difference of the first learner to the reference."""
    kind = kind_of(config.task.build().kind)
    metric = kind.metric
    unshifted = [p for p in evaluation.curves if p.shift == TRAINING_SHIFT]
    ks = reported_ks(unshifted, config.task.n_dims)
    tables = [curve_table(unshifted, ks, metric.label)]
    shifts = list(dict.fromkeys(p.shift for p in evaluation.curves))
    if len(shifts) > 1:
        tables.append(shift_table(evaluation.curves, shifts, ks[-2] if len(ks) > 1 else ks[-1]))
    if evaluation.differences:
        tables.append(difference_table(evaluation.differences, shifts, ks))
    sentence = result_sentence(evaluation.curves, evaluation.differences, config.task.n_dims, kind)
    if sentence is not None:
        tables.append(plain(sentence))
    return tables


def evaluation_files(directory: Path, evaluation: Evaluation) -> Text:
    """Where an evaluation was written."""
    shifts = len({p.shift for p in evaluation.curves})
    caches = (directory / "caches.csv").exists()
    return plain(
        f"\nevaluation: {directory}\n"
        f"  settings.yaml, curves.csv, differences.csv, curves.png"
        + (f" and {shifts - 1} curves-SHIFT.png" if shifts > 1 else "")
        + ("\n  caches.csv (memory per layer), kept.csv, kept.png" if caches else "")
    )


def memory_table(rows: Sequence[CacheMemory], full_floats: float) -> Table:
    """Per cache policy, the most floats per sequence a layer held (mean over layers) and
    its share of the full cache's."""
    title = f"memory per layer (full cache: {full_floats:,.0f} floats)"
    table = Table(title=title)
    table.add_column("learner")
    table.add_column("floats per layer", justify="right")
    table.add_column("of full", justify="right")
    for learner, floats in mean_floats_by_learner(rows).items():
        table.add_row(escape(learner), f"{floats:,.0f}", f"{floats / full_floats:.0%}")
    return table


def checkpoint_table(
    steps: Sequence[int], evaluations: Sequence[Evaluation], config: RunConfig
) -> Table:
    """One row per checkpoint: the first learner's (the model's) metric at the reported ks on
    the training distribution, with the 95% interval."""
    label = kind_of(config.task.build().kind).metric.label
    first = [p for p in evaluations[0].curves if p.shift == TRAINING_SHIFT]
    ks, model = reported_ks(first, config.task.n_dims), first[0].learner
    table = Table(title=f"{escape(model)}: {escape(label)} along training, ± 95% CI")
    table.add_column("step", justify="right")
    for k in ks:
        table.add_column(f"k={k}", justify="right")
    for step, evaluation in zip(steps, evaluations, strict=True):
        by_k = pivot([p for p in evaluation.curves if p.shift == TRAINING_SHIFT])[model]
        table.add_row(f"{step:,}", *(with_interval(by_k[k]) if k in by_k else "-" for k in ks))
    return table


HEAVY_TAIL = 10.0  # |mean| past which a cell is marked: a few prompts dominate it
HEAVY_TAIL_NOTE = (
    "†: a heavy-tailed mean that a few prompts dominate (least squares near k = d inverts a "
    "nearly singular matrix); the interval is wide for that reason"
)


def with_interval(row: CurvePoint | PairedDifference, signed: bool = False) -> str:
    """``0.093±0.010``; a heavy-tailed mean compactly with a †: ``-1368±1750†``."""
    sign = "+" if signed else ""
    half = row.mean - row.ci_low
    if abs(row.mean) >= HEAVY_TAIL:
        return f"{row.mean:{sign}.4g}±{half:.4g}†"
    return f"{row.mean:{sign}.3f}±{half:.3f}"


def compact(value: float) -> str:
    """A mean in at most six characters: 0.093, 12.40, 122, 3.1e+04."""
    if abs(value) < 10:
        return f"{value:.3f}"
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.3g}"


def heavy_tailed(rows: Iterable[CurvePoint | PairedDifference]) -> bool:
    return any(abs(row.mean) >= HEAVY_TAIL for row in rows)


def curve_table(points: Sequence[CurvePoint], ks: Sequence[int], label: str) -> Table:
    """One row per learner: its metric at each of ``ks`` with the 95% interval."""
    shown = [p for p in points if p.k in ks]
    table = Table(
        title=f"{escape(label)} after k in-context examples, ± 95% CI",
        caption=HEAVY_TAIL_NOTE if heavy_tailed(shown) else None,
    )
    table.add_column("learner", no_wrap=True)
    for k in ks:
        table.add_column(f"k={k}", justify="right")
    for learner, by_k in pivot(points).items():
        table.add_row(escape(learner), *(with_interval(by_k[k]) if k in by_k else "-" for k in ks))
    return table


def broken(name: str, width: int = 9) -> str:
    """A long name on two lines, broken after the underscore nearest its middle, so that a
    header never splits inside a word: ``least_squares`` → ``least_`` / ``squares``."""
    cuts = [i + 1 for i, char in enumerate(name) if char == "_"]
    if len(name) <= width or not cuts:
        return name
    cut = min(cuts, key=lambda i: abs(i - len(name) / 2))
    return f"{name[:cut]}\n{name[cut:]}"


def shift_label(shift: str, scored_k: int | None = None) -> str:
    """A shift on up to three lines: its name, its options, the k it is read at when not the
    table's (``scale_inputs`` / ``(factor=0.5)``)."""
    name, parenthesis, options = shift.partition("(")
    lines = [name, parenthesis + options] if parenthesis else [name]
    if scored_k is not None:
        lines.append(f"k={scored_k}")
    return "\n".join(line for line in lines if line)


def shift_table(points: Sequence[CurvePoint], shifts: Sequence[str], k: int) -> Table:
    """One row per shift: every learner's mean at ``k`` (or the last k the shift scores); the
    intervals are in eval/NNN/curves.csv and the report."""
    learners = list(pivot(points))
    table = Table(title=f"mean under each shift at k={k}")
    table.add_column("shift", no_wrap=True)
    for learner in learners:
        table.add_column(escape(broken(learner)), justify="right", no_wrap=True)
    for shift in shifts:
        rows = [p for p in points if p.shift == shift]
        shown = last_k_up_to(rows, k)
        cells = {p.learner: compact(p.mean) for p in rows if p.k == shown}
        label = shift_label(shift, None if shown == k else shown)
        table.add_row(escape(label), *(cells.get(learner, "-") for learner in learners))
    return table


def difference_table(
    differences: Sequence[PairedDifference], shifts: Sequence[str], ks: Sequence[int]
) -> Table:
    """The first learner minus the reference, prompt by prompt, per shift at the reported k;
    each cell the mean (starred when its 95% interval excludes 0) over its half-width, so four
    k fit 80 columns."""
    learner, reference = differences[0].learner, differences[0].reference
    title = f"{learner} − {reference} on the same prompts, ± 95% CI (*: excludes 0)"
    mine = [d for d in differences if d.learner == learner]
    table = Table(title=escape(title), caption=HEAVY_TAIL_NOTE if heavy_tailed(mine) else None)
    table.add_column("shift", no_wrap=True)
    for k in ks:
        table.add_column(f"k={k}", justify="right", no_wrap=True)
    for shift in shifts:
        pair = [d for d in mine if d.shift == shift]
        if not pair:
            continue
        by_k = next(iter(pivot(pair).values()))
        table.add_row(escape(shift_label(shift)), *(difference_cell(by_k.get(k)) for k in ks))
    return table


def difference_cell(row: PairedDifference | None) -> str:
    """``+0.093*`` over ``±0.010``; ``-`` where the shift does not score that k."""
    if row is None:
        return "-"
    mean, _, half = with_interval(row, signed=True).partition("±")
    marks = "*" * excludes_zero(row) + ("†" if half.endswith("†") else "")
    return f"{mean}{marks}\n±{half.removesuffix('†')}"


def probe_table(spec: str, run: Path, summary: dict[str, Any]) -> Table:
    """A probe's headline numbers."""
    table = Table(title=f"{escape(spec)} on {escape(str(run))}", show_header=False)
    table.add_column("quantity", no_wrap=True)
    table.add_column("value", justify="right", overflow="fold")
    for key, value in summary.items():
        table.add_row(escape(key), f"{value:.4g}" if isinstance(value, float) else str(value))
    return table


def probe_steps_table(spec: str, summaries: dict[int, dict[str, Any]]) -> Table:
    """A probe's headline numbers at each checkpoint: a row per quantity, a column per step."""
    table = Table(title=f"{escape(spec)} along training")
    table.add_column("quantity", no_wrap=True)
    for step in summaries:
        table.add_column(f"step {step:,}", justify="right", overflow="fold")
    for key in dict.fromkeys(key for summary in summaries.values() for key in summary):
        values = [summary.get(key, "–") for summary in summaries.values()]
        table.add_row(
            escape(key), *(f"{v:.4g}" if isinstance(v, float) else str(v) for v in values)
        )
    return table


def verdict_table(verdicts: Sequence[Any], scale: str) -> Table:
    """One row per reproduction: its verdict, the minutes it took and its numbers."""
    table = Table(title=f"verdicts ({scale} scale)")
    for column in ("reproduction", "verdict", "min", "numbers"):
        table.add_column(column, overflow="fold", justify="right" if column == "min" else "left")
    for verdict in verdicts:
        took = "-" if verdict.minutes is None else f"{verdict.minutes:.1f}"
        numbers = ", ".join(f"{key}={value:g}" for key, value in verdict.numbers.items())
        style = {"reproduced": "green", "not reproduced": "red"}.get(verdict.verdict, "yellow")
        outcome = f"[{style}]{verdict.verdict}[/]"
        table.add_row(verdict.reproduction, outcome, took, escape(numbers))
    return table


# --- runs and sweeps --------------------------------------------------------------------------


def styled_status(status: str) -> str:
    style = STATUS_STYLES.get(status, "")
    return f"[{style}]{escape(status)}[/]" if style else escape(status)


def runs_table(entries: Iterable[Any], root: Path) -> Table:
    """One row per indexed run; the task's size on a second line, so 80 columns hold it."""
    table = Table(
        title=f"runs in {escape(str(root))}",
        caption="steps: trained (of the run's total when unfinished; target: stopped at its "
        "train.stop_at target); headline: the model's error "
        "(err) or accuracy (acc) at the largest k of its newest evaluation",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    entries = list(entries)
    longest_word = max((len(w) for e in entries for w in (e.model or "-").split()), default=1)
    longest_name = max((len(entry.name) for entry in entries), default=4)
    table.add_column("name", overflow="fold", min_width=min(longest_name, 10))
    table.add_column("task", no_wrap=True)
    table.add_column("model", min_width=longest_word)
    for column in ("params", "steps"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("headline", justify="right", no_wrap=True)
    for entry in entries:
        sizes = entry.task_label.removeprefix(entry.task or "").strip()
        task = broken(entry.task or "-", width=18)
        table.add_row(
            escape(entry.name),
            escape(f"{task}\n{sizes}" if sizes else task),
            escape(entry.model or "-"),
            "-" if entry.n_params is None else f"{entry.n_params:,}",
            steps_of(entry),
            styled_status(entry.status),
            "-" if entry.headline is None else f"{entry.headline:.3f} {entry.headline_metric[:3]}",
        )
    return table


def steps_of(entry: Any) -> str:
    """``2500`` for a run trained to its end, ``1250 target`` for one stopped at its target
    (``train.stop_at``), ``1200/2500`` for one on its way."""
    if entry.total_steps is None or entry.steps == entry.total_steps:
        return str(entry.steps)
    if entry.stopped is not None:
        return f"{entry.steps} target"
    return f"{entry.steps}/{entry.total_steps}"


def run_details(entry: Any) -> Table:
    """Everything the index knows about one run, a field per line, numbers readable."""
    from dataclasses import asdict
    from datetime import datetime

    table = Table(show_header=False, box=None)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for field, value in asdict(entry).items():
        if isinstance(value, datetime):
            value = value.strftime("%Y-%m-%d %H:%M:%S %Z")
        elif isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        table.add_row(field, "-" if value is None else escape(str(value)))
    return table


def sweep_table(result: Any, keys: dict[str, str]) -> Table:
    """The trials of a sweep, best first."""
    table = Table(title=f"sweep {escape(result.spec.name)}: {escape(result.label)}, best first")
    table.add_column("trial", no_wrap=True)
    for key in keys.values():
        table.add_column(escape(key), justify="right")
    table.add_column(result.measure, justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for row in result.ranked():
        cells = [escape(str(row.values.get(parameter))) for parameter in keys]
        metric = "-" if row.metric is None else f"{row.metric:.4g}"
        table.add_row(escape(row.trial), *cells, metric, styled_status(row.status))
    return table


def runs_compared_table(comparison: Any) -> Table:
    """The compared runs: parameters, training steps, state size at the evaluated length."""
    table = Table(title="runs compared (state: floats per sequence, all layers)")
    table.add_column("run", no_wrap=True)
    for column in ("params", "steps", "state"):
        table.add_column(column, justify="right", no_wrap=True)
    for run in comparison.runs:
        table.add_row(
            escape(run.label),
            "-" if run.n_params is None else f"{run.n_params:,}",
            "-" if run.steps is None else f"{run.steps:,}",
            f"{run.state_size:,}",
        )
    return table


def longctx_table(points: Sequence[CurvePoint], memory: Sequence[Any], k: int) -> Table:
    """One row per learner of a long-context sweep: floats per layer and the metric after
    ``k`` examples with its 95% interval, the model's rows by family and budget."""
    at_k = {p.learner: p for p in points if p.k == k and p.shift == TRAINING_SHIFT}
    metric = points[0].metric if points else "error"
    table = Table(title=f"{metric} after k={k} examples, and memory per layer")
    table.add_column("learner")
    table.add_column("floats per layer", justify="right")
    table.add_column(f"{metric} at k={k}", justify="right")
    for row in memory:
        point = at_k.get(row.learner)
        floats = "–" if math.isnan(row.floats) else f"{row.floats:,.0f}"  # NaN: not counted
        table.add_row(escape(row.learner), floats, with_interval(point) if point else "-")
    return table
