"""The whole run on one self-contained HTML page (``iclab report RUN`` writes it as
``RUN/report.html``, through the run layer).

Figures are embedded as PNG ``data:`` URIs and the style is inline, so the file can be mailed,
archived or opened offline and still show everything. A Content-Security-Policy forbids every
other source, so a reference to anything external fails loudly in the browser instead of
quietly leaking a request. Every string from the run is escaped.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from iclab import __version__
from iclab.config import RunConfig
from iclab.devices import describe_peak_memory
from iclab.evaluation.curves import CurvePoint, PairedDifference, reported_ks
from iclab.kinds import Kind, Metric, kind_of
from iclab.kinds.decisions import ONLINE_METRICS
from iclab.metrics import condition_metric, condition_title, target_reached
from iclab.report.pivot import TRAINING_SHIFT, by_shift, excludes_zero, pivot
from iclab.report.plots import checkpoints_figure, curves_figure, png_bytes, training_figure
from iclab.report.summary import result_sentence

CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
:root { color-scheme: light; --ink: #1f2328; --muted: #656d76; --line: #d8dee4;
  --panel: #f6f8fa; --accent: #0b5cad; --better: #1a7f37; --worse: #cf222e; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 32px 28px 56px; }
header { border-bottom: 1px solid var(--line); padding-bottom: 16px; margin-bottom: 8px; }
h1 { font-size: 28px; margin: 0 0 4px; letter-spacing: -0.01em; }
h1 .status { font-size: 13px; font-weight: 600; vertical-align: middle; margin-left: 10px;
  padding: 2px 10px; border-radius: 999px; background: var(--panel);
  border: 1px solid var(--line); color: var(--muted); }
h1 .status.completed { color: var(--better); border-color: #aceebb; background: #dafbe1; }
h2 { font-size: 20px; margin: 36px 0 12px; padding-bottom: 6px;
  border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 24px 0 8px; }
.subtitle { color: var(--muted); margin: 0 0 14px; }
dl.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr));
  gap: 10px 24px; margin: 0; }
dl.facts div { min-width: 0; }
dt { font-size: 12px; text-transform: uppercase; letter-spacing: 0.04em; color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
code, pre { font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: var(--panel); border: 1px solid var(--line); border-radius: 6px;
  padding: 12px 16px; overflow-x: auto; margin: 8px 0 0; }
details summary { cursor: pointer; color: var(--accent); }
pre.config { column-width: 15em; column-gap: 24px; column-rule: 1px solid var(--line); }
.figures { display: grid; grid-template-columns: 1fr; gap: 16px; }
.figures figure { max-width: 1100px; }
p.result { font-size: 17px; margin: 0 0 14px; padding: 10px 14px; border-left: 4px solid
  var(--accent); background: var(--panel); }
details { margin: 12px 0; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 8px;
  background: #fff; }
figure img { display: block; width: 100%; height: auto; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 4px 0 8px; font-size: 14px;
  font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: right;
  white-space: nowrap; }
th { background: var(--panel); font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
.better { color: var(--better); font-weight: 600; }
.worse { color: var(--worse); font-weight: 600; }
td .ci { display: block; font-size: 12px; color: var(--muted); }
td.better .ci, td.worse .ci { color: inherit; font-weight: 400; }
.note { color: var(--muted); font-size: 13px; margin: 4px 0 0; }
footer { margin-top: 40px; padding-top: 12px; border-top: 1px solid var(--line); }
.empty { color: var(--muted); background: var(--panel); border: 1px dashed var(--line);
  border-radius: 6px; padding: 12px 16px; }
"""


@dataclass(frozen=True)
class ProbeRecord:
    """What ``iclab probe`` wrote for one probe: its spec, headline numbers and figures."""

    spec: str
    summary: dict[str, Any]
    figures: list[tuple[str, bytes]]  # (name, PNG bytes)


@dataclass(frozen=True)
class CheckpointRecord:
    name: str
    step: int
    size_bytes: int
    has_model: bool
    has_meta: bool


@dataclass(frozen=True)
class EvaluationRecord:
    """One kept evaluation: its name (``003``), what it used (``settings.yaml``; None for one
    written before evaluations were kept apart) and its tables."""

    name: str
    settings: dict[str, Any] | None
    curves: list[CurvePoint]
    differences: list[PairedDifference]
    memory: dict[str, float] = field(default_factory=dict)  # cache policy → floats per layer
    figures: list[tuple[str, bytes]] = field(default_factory=list)  # more figures (kept.png)


@dataclass(frozen=True)
class LongContextRecord:
    """One ``iclab longctx`` sweep: its settings, each learner's floats per layer and metric
    after ``k`` examples, and its figures."""

    name: str
    settings: dict[str, Any]
    k: int
    rows: list[tuple[str, float, CurvePoint | None]]  # learner, floats per layer (NaN), at k
    figures: list[tuple[str, bytes]]


@dataclass(frozen=True)
class RunReport:
    """Everything a run's report shows, read from its directory by the run layer
    (``iclab.run.report``); the renderer reads no files."""

    path: Path
    config: RunConfig
    config_text: str
    info: dict[str, Any]
    metrics: list[dict[str, Any]]
    evaluations: list[EvaluationRecord]  # oldest first
    probes: list[ProbeRecord]
    checkpoints: list[CheckpointRecord]
    long_contexts: list[LongContextRecord]  # oldest first
    created: float  # seconds since the epoch
    updated: float


def render_report(report: RunReport) -> str:
    """The page as text; a run not yet trained or evaluated gets sections that say so."""
    config = report.config
    kind = kind_of(config.task.build().kind)
    body = "\n".join(
        [
            header_section(report, kind),
            config_section(report),
            environment_section(report.info),
            training_section(report),
            evaluations_section(report.evaluations, config, kind),
            probes_section(report.probes),
            long_context_section(report.long_contexts),
            checkpoints_section(report.checkpoints),
            f'<footer class="note">Written by iclab {escape(__version__)} on '
            f"{timestamp(datetime.now().timestamp())}.</footer>",
        ]
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(config.name)}: iclab report</title>\n"
        f"<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


# --- sections -------------------------------------------------------------------------------------


def header_section(report: RunReport, kind: Kind) -> str:
    config, info = report.config, report.info
    task, status = config.task, info.get("status", "not trained")
    stopped = info.get("stopped")  # train.stop_at's target, reached before train.steps
    n_params = info.get("n_params")
    d_model = info.get("d_model", config.model.d_model)
    facts = {
        "task": f"{task.name} ({kind.describe_sizes(task.n_dims, task.n_points)})",
        "model": f"{config.model.describe()}, d_model={d_model}",
        "parameters": "–" if n_params is None else f"{n_params:,}",
        "steps": f"{info.get('steps', 0):,} of {config.train.steps:,}"
        + (f", stopped at its target: {target_reached(stopped)}" if stopped else ""),
        "metric": kind.metric.label,
        "created": timestamp(report.created),
        "updated": timestamp(report.updated),
    }
    latest = report.evaluations[-1] if report.evaluations else None
    sentence = None
    if latest is not None:
        sentence = result_sentence(latest.curves, latest.differences, task.n_dims, kind)
    result = f'<p class="result">{escape(sentence)}</p>\n' if sentence else ""
    return (
        f'<header>\n<h1>{escape(config.name)}<span class="status {escape(status)}">'
        f"{escape(status)}</span></h1>\n"
        f'<p class="subtitle">iclab run report for <code>{escape(str(report.path))}</code></p>\n'
        f"{result}{fact_list(facts)}\n</header>"
    )


def config_section(report: RunReport) -> str:
    text = report.config_text
    digest = report.info.get("config_hash", "not recorded")
    return (
        "<section>\n<h2>Config</h2>\n"
        f'<p class="note">The resolved config: the only input needed to rerun '
        f"(<code>iclab train config.yaml</code>). Hash <code>{escape(digest)}</code>.</p>\n"
        f"<details open><summary>config.yaml ({len(text.splitlines())} lines)</summary>\n"
        f'<pre class="config">{escape(text)}</pre>\n</details>\n</section>'
    )


def environment_section(info: dict[str, Any]) -> str:
    if not info:
        return section("Environment", empty("Not trained yet: no run.json."))
    rate = info.get("steps_per_second")
    facts = {
        **{name: str(version) for name, version in info.get("environment", {}).items()},
        "device": str(info.get("device", "–")),
        "config hash": str(info.get("config_hash", "–")),
        "steps / second": "–" if rate is None else f"{rate:g}",
        "memory": describe_peak_memory(info) or "not recorded",
    }
    return section("Environment", fact_list(facts))


def training_section(report: RunReport) -> str:
    metrics, config = report.metrics, report.config
    if not metrics:
        return section("Training", empty("Not trained yet: metrics.jsonl is missing or empty."))
    last = metrics[-1]
    note = (
        f'<p class="note">{len(metrics):,} logged steps; loss {last["loss"]:.4g} at step '
        f"{last['step']:,}.</p>"
    )
    figure = training_figure(metrics, f"{config.name}: training loss")
    return section("Training", f'<div class="figures">{image(figure, "training loss")}</div>{note}')


def evaluations_section(
    evaluations: Sequence[EvaluationRecord], config: RunConfig, kind: Kind
) -> str:
    """The newest evaluation in full, the earlier ones folded, each with its settings."""
    if not evaluations:
        return section(
            "Evaluation",
            empty(
                "Not evaluated yet. Run <code>iclab eval RUN</code> to measure the model and its "
                "yardstick algorithms."
            ),
        )
    *earlier, latest = evaluations
    parts = [evaluation_block(latest, config, kind), along_training(evaluations, config, kind)]
    for record in reversed(earlier):
        parts.append(
            f"<details><summary>{escape(evaluation_title(record))}</summary>\n"
            f"{evaluation_block(record, config, kind)}\n</details>"
        )
    note = (
        f'<p class="note">{len(evaluations)} evaluation(s), newest first; each is kept in '
        "<code>eval/NNN/</code> with its settings.</p>"
    )
    return section("Evaluation", "\n".join([note, *parts]))


def along_training(evaluations: Sequence[EvaluationRecord], config: RunConfig, kind: Kind) -> str:
    """The metric along training, when the run holds evaluations of two or more checkpoints
    with the newest one's eval settings (``iclab eval --checkpoints``); empty otherwise."""
    used = (evaluations[-1].settings or {}).get("eval")
    by_step: dict[int, EvaluationRecord] = {}
    for record in evaluations:  # oldest first: a step's newest evaluation wins
        settings = record.settings or {}
        if settings.get("eval") == used and "checkpoint_step" in settings:
            by_step[int(settings["checkpoint_step"])] = record
    if len(by_step) < 2:
        return ""
    steps = sorted(by_step)
    figure = checkpoints_figure(
        steps,
        [by_step[step].curves for step in steps],
        f"{config.name}: along training",
        kind.metric,
        config.task.n_dims,
    )
    return f"<h3>Along training</h3>\n{image(figure, 'metric along training')}"


def evaluation_title(record: EvaluationRecord) -> str:
    """``Evaluation 002: 2026-12-03, step 2500, --shift all``."""
    settings = record.settings or {}
    details = [str(settings.get("date", "")).split("T")[0]]
    if "checkpoint_step" in settings:
        details.append(f"step {settings['checkpoint_step']:,}")
    details.append(", ".join(settings.get("overrides") or []) or "the run's eval settings")
    return f"Evaluation {record.name}: " + ", ".join(part for part in details if part)


def evaluation_block(record: EvaluationRecord, config: RunConfig, kind: Kind) -> str:
    """One evaluation: its settings, a full-width figure and a table per shift, the paired
    differences."""
    points, metric = record.curves, kind.metric
    used = (record.settings or {}).get("eval", {})
    n_points = used.get("n_points") or config.task.n_points
    groups = by_shift(points)
    ks = {shift: reported_ks(rows, config.task.n_dims) for shift, rows in groups.items()}
    marker = kind.reference_k(config.task.n_dims)
    trained = config.task.n_points - 1 if n_points > config.task.n_points else None
    figures = "\n".join(
        image(
            curves_figure(
                rows,
                shift_title(shift),
                condition_metric(kind, shift).label,
                marker,
                trained,
                kind.position_label,
            ),
            shift_title(shift),
        )
        for shift, rows in groups.items()
    )
    tables = tables_by_shift(
        {shift: curve_table(rows, ks[shift]) for shift, rows in groups.items()}
    )
    n_prompts = max(point.n_prompts for point in points)
    facts = {
        "evaluation": record.name,
        "prompts": f"{n_prompts:,}",
        "examples per prompt": str(n_points),
        "seed": str(used.get("seed", "–")),
        "checkpoint step": str((record.settings or {}).get("checkpoint_step", "–")),
        "overrides": ", ".join((record.settings or {}).get("overrides") or []) or "none",
    }
    measured = dict.fromkeys(condition_metric(kind, shift) for shift in groups)
    what = "; ".join(
        f"{m.label} ({'higher' if m.higher_is_better else 'lower'} is better)" for m in measured
    )
    where = kind.position_label.removesuffix(" k")
    note = (
        f'<p class="note">{escape(what)}, after k {escape(where)}: mean ± half-width of the '
        f"95% CI over up to {n_prompts:,} prompts.</p>"
    )
    return "\n".join(
        [
            fact_list(facts),
            f'<div class="figures">\n{figures}\n</div>',
            note,
            tables,
            differences_block(record.differences, ks, metric),
            memory_block(record.memory),
            '<div class="figures">'
            + "\n".join(png_image(png, name) for name, png in record.figures)
            + "</div>",
        ]
    )


def memory_block(memory: dict[str, float]) -> str:
    """The floats per layer each cache policy held, for an evaluation with policies."""
    if not memory:
        return ""
    rows = "\n".join(
        f"<tr><td>{escape(learner)}</td><td>{floats:,.0f}</td></tr>"
        for learner, floats in memory.items()
    )
    return (
        "<h3>Memory under cache policies</h3>\n"
        '<p class="note">The most floats per sequence a layer held for an answer (mean over '
        "layers; quantized entries at their bits, scales included). Figure: the share of caches "
        "(prompts × heads) holding each position when the prompts ended.</p>\n"
        f"<table>\n<tr><th>learner</th><th>floats per layer</th></tr>\n{rows}\n</table>"
    )


def long_context_section(records: Sequence[LongContextRecord]) -> str:
    """What ``iclab longctx`` wrote, newest first: the table and figures; no section for a
    run never swept."""
    if not records:
        return ""
    parts = []
    for record in reversed(records):
        rows = "\n".join(
            f"<tr><td>{escape(learner)}</td>"
            f"<td>{'–' if math.isnan(floats) else f'{floats:,.0f}'}</td>"
            f"<td>{'–' if point is None else with_half_width(point)}</td></tr>"
            for learner, floats, point in record.rows
        )
        facts = {
            "sweep": record.name,
            "examples per prompt": str(record.settings.get("n_points", "–")),
            "prompts": str(record.settings.get("n_prompts", "–")),
            "budgets": ", ".join(str(b) for b in record.settings.get("budgets", [])),
            "with": ", ".join(record.settings.get("with") or []) or "none",
        }
        images = "\n".join(png_image(png, f"{record.name}: {name}") for name, png in record.figures)
        parts.append(
            f"<h3>longctx/{escape(record.name)}</h3>\n{fact_list(facts)}\n"
            f'<div class="figures">{images}</div>\n'
            f"<table>\n<tr><th>learner</th><th>floats per layer</th>"
            f"<th>metric at k={record.k}</th></tr>\n{rows}\n</table>"
        )
    note = (
        '<p class="note">Budgets count KV entries per head and layer; memory is the most floats '
        "per sequence a layer held for an answer. Tables: <code>longctx/NNN/*.csv</code>.</p>"
    )
    return section("Long context", "\n".join(parts) + note)


def differences_block(
    differences: Sequence[PairedDifference], ks: dict[str, list[int]], metric: Metric
) -> str:
    if not differences:
        return empty("No paired differences (no reference learner).")
    tables = tables_by_shift(
        {
            shift: difference_table(rows, ks.get(shift) or sorted({row.k for row in rows}), metric)
            for shift, rows in by_shift(differences).items()
        }
    )
    note = (
        '<h3>Paired differences</h3>\n<p class="note">learner − reference on the same prompts: '
        "mean [95% CI]. Coloured cells (marked *) have a CI that excludes 0: "
        '<span class="better">green</span> where the learner is better, '
        '<span class="worse">red</span> where it is worse.</p>'
    )
    return f"{note}\n{tables}"


def probes_section(probes: Sequence[ProbeRecord]) -> str:
    """What ``iclab probe`` wrote: each probe's headline numbers and figures; no section for a
    run never probed."""
    if not probes:
        return ""
    parts = []
    for probe in probes:
        facts = {
            key: f"{value:.4g}" if isinstance(value, float) else str(value)
            for key, value in probe.summary.items()
        }
        images = "\n".join(png_image(png, f"{probe.spec}: {name}") for name, png in probe.figures)
        figures = f'<div class="figures">{images}</div>'
        parts.append(f"<h3>{escape(probe.spec)}</h3>\n{fact_list(facts)}\n{figures}")
    note = '<p class="note">Tables: <code>probes/&lt;probe&gt;/*.csv</code> in the run.</p>'
    return section("Probes", "\n".join(parts) + note)


def checkpoints_section(checkpoints: Sequence[CheckpointRecord]) -> str:
    if not checkpoints:
        return section("Checkpoints", empty("No checkpoints in checkpoints/."))
    rows = "\n".join(
        "<tr>"
        f"<td>{escape(checkpoint.name)}</td><td>{checkpoint.step:,}</td>"
        f"<td>{checkpoint.size_bytes / 1e6:.2f}</td>"
        f"<td>{'yes' if checkpoint.has_model else 'missing'}</td>"
        f"<td>{'yes' if checkpoint.has_meta else 'missing'}</td>"
        "</tr>"
        for checkpoint in checkpoints
    )
    head = (
        "<tr><th>directory</th><th>step</th><th>size (MB)</th><th>model.safetensors</th>"
        "<th>meta.json</th></tr>"
    )
    return section("Checkpoints", f"<table>\n{head}\n{rows}\n</table>")


# --- pieces ---------------------------------------------------------------------------------------


def curve_table(points: Sequence[CurvePoint], ks: Sequence[int]) -> str:
    """Learners × k, cells ``mean ± half-width``."""
    head = "<tr><th>learner</th>" + "".join(f"<th>k={k}</th>" for k in ks) + "</tr>"
    rows = []
    for learner, by_k in pivot(points).items():
        cells = "".join(
            f"<td>{with_half_width(by_k[k])}</td>" if k in by_k else "<td>–</td>" for k in ks
        )
        rows.append(f"<tr><td>{escape(learner)}</td>{cells}</tr>")
    return "<table>\n" + head + "\n" + "\n".join(rows) + "\n</table>"


def with_half_width(point: CurvePoint) -> str:
    return f"{point.mean:.3f} ± {(point.ci_high - point.ci_low) / 2:.3f}"


def difference_table(
    differences: Sequence[PairedDifference], ks: Sequence[int], metric: Metric
) -> str:
    """Pairs × k, cells ``mean [ci_low, ci_high]``; CIs that exclude 0 are coloured and starred."""
    head = "<tr><th>learner − reference</th>" + "".join(f"<th>k={k}</th>" for k in ks) + "</tr>"
    rows = []
    for pair, by_k in pivot(differences).items():
        cells = "".join(difference_cell(by_k.get(k), metric) for k in ks)
        rows.append(f"<tr><td>{escape(pair)}</td>{cells}</tr>")
    return "<table>\n" + head + "\n" + "\n".join(rows) + "\n</table>"


def difference_cell(difference: PairedDifference | None, metric: Metric) -> str:
    """``mean [ci_low, ci_high]``, the interval on a second line; starred and coloured by which
    learner is better when the interval excludes 0."""
    if difference is None:
        return "<td>–</td>"
    interval = f'<span class="ci">[{difference.ci_low:+.3f}, {difference.ci_high:+.3f}]</span>'
    if not excludes_zero(difference):
        return f"<td>{difference.mean:+.3f} {interval}</td>"
    verdict = "better" if (difference.mean > 0) == metric.higher_is_better else "worse"
    return (
        f'<td class="{verdict}" title="95% CI excludes 0: the learner is {verdict}">'
        f"{difference.mean:+.3f} * {interval}</td>"
    )


def tables_by_shift(tables: dict[str, str]) -> str:
    """Each shift's table under its title, scrolling sideways rather than overflowing the page."""
    return "\n".join(
        f'<div class="scroll"><h3>{escape(shift_title(shift))}</h3>\n{table}</div>'
        for shift, table in tables.items()
    )


def image(figure: Figure, alt: str) -> str:
    """A figure as an embedded PNG (its title is drawn in the image itself)."""
    return png_image(png_bytes(figure), alt)


def png_image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{escape(alt)}"></figure>'


def shift_title(shift: str) -> str:
    if shift == TRAINING_SHIFT:
        return "training distribution"
    return condition_title(shift) if shift in ONLINE_METRICS else shift


def section(title: str, content: str) -> str:
    return f"<section>\n<h2>{escape(title)}</h2>\n{content}\n</section>"


def empty(message_html: str) -> str:
    return f'<p class="empty">{message_html}</p>'


def fact_list(facts: dict[str, str]) -> str:
    items = "".join(
        f"<div><dt>{escape(name)}</dt><dd>{escape(value)}</dd></div>"
        for name, value in facts.items()
    )
    return f'<dl class="facts">{items}</dl>'


def timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).astimezone().strftime("%Y-%m-%d %H:%M %Z")
