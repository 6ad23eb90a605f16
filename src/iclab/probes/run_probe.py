"""Run probes on a trained run and write their results into ``RUN/probes/<spec>/``."""

from __future__ import annotations

import json
import re
from pathlib import Path

from iclab.devices import resolve_device
from iclab.io import atomic_write_text
from iclab.probes.base import ProbeResult, build_probe
from iclab.progress import progress
from iclab.report.plots import save_figure
from iclab.run import RunDir, checked_steps, load_trained_model
from iclab.seeding import generator_for


def probe_dir(run: RunDir, spec: str) -> Path:
    """``RUN/probes/<spec with anything but letters, digits, . and _ made ->``."""
    return run.path / "probes" / re.sub(r"[^A-Za-z0-9._]+", "-", spec).strip("-")


def probe_run(
    run_dir: Path, spec: str, show_progress: bool = False, step: int | None = None
) -> ProbeResult:
    """Probe the newest valid checkpoint of a run (or that of ``step``) on fresh prompts (the
    ``(eval.seed, "probe", spec)`` stream, the same for every checkpoint), on the run's
    ``eval.device``, and write summary.json, the tables (CSV) and the figures (PNG) into
    ``probe_dir`` (``step_dir`` for a ``step``)."""
    run = RunDir(Path(run_dir))
    config = run.load_config()
    probe = build_probe(spec)
    spec = probe.spec  # canonical: linear_probe(alpha=0.10) is linear_probe(alpha=0.1)
    device = resolve_device(config.eval.device)
    model = load_trained_model(run.path, device, step)
    task = config.task.build()
    probe.check_applies(model, task)
    generator = generator_for(config.eval.seed, "probe", spec, device=device)
    with progress(f"probe {spec}", 1, enabled=show_progress) as tracker:
        probe.on_progress = lambda done, total: tracker.update(done, total=total)
        result = probe.run(model, task, config.task.n_points, generator)
        tracker.update(tracker.total)
    directory = probe_dir(run, spec) if step is None else step_dir(run, spec, step)
    write_result(result, directory, spec)
    return result


def step_dir(run: RunDir, spec: str, step: int) -> Path:
    """Where a probe of the checkpoint of ``step`` is written: ``probe_dir/steps/step-NNNNNN``."""
    return probe_dir(run, spec) / "steps" / f"step-{step:06d}"


def probe_checkpoints(
    run_dir: Path, spec: str, steps: list[int] | None = None, show_progress: bool = False
) -> dict[int, ProbeResult]:
    """``probe_run`` on each checkpoint of ``steps`` (None: every valid one the run kept), on
    the same prompts, then ``probe_dir/steps/summary.csv``: one row per step with the
    summary's numbers, the probe's findings along training (when an induction head forms)."""
    run = RunDir(Path(run_dir))
    steps = checked_steps(run.path, steps)
    results = {step: probe_run(run.path, spec, show_progress, step) for step in steps}
    rows = [{"step": step, **result.summary} for step, result in results.items()]
    canonical = build_probe(spec).spec
    atomic_write_text(probe_dir(run, canonical) / "steps" / "summary.csv", table_csv(rows))
    return results


def write_result(result: ProbeResult, directory: Path, spec: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    summary = {"probe": spec, **result.summary}
    summary = {key: None if value != value else value for key, value in summary.items()}  # NaN
    atomic_write_text(directory / "summary.json", json.dumps(summary, indent=2) + "\n")
    for name, rows in result.tables.items():
        atomic_write_text(directory / f"{name}.csv", table_csv(rows))
    for name, figure in result.figures.items():
        save_figure(figure, directory / f"{name}.png")


def table_csv(rows: list[dict]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
