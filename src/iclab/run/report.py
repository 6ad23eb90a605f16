"""Write a run's HTML report: gather what its directory holds, then render it (``iclab.report``)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from iclab.evaluation.caches import mean_floats_by_learner, read_memory_csv
from iclab.evaluation.curves import read_curves_csv, read_differences_csv
from iclab.io import atomic_write_text, read_yaml
from iclab.report.html import (
    CheckpointRecord,
    EvaluationRecord,
    LongContextRecord,
    ProbeRecord,
    RunReport,
    render_report,
)
from iclab.run.directory import RunDir
from iclab.run.longctx import read_memory
from iclab.training.checkpoint import META_FILE, MODEL_FILE, list_checkpoints


def write_report(run_dir: Path) -> Path:
    """Write ``RUN/report.html`` (atomically, readable by everyone) and return its path."""
    run = RunDir(Path(run_dir))
    atomic_write_text(run.report_path, render_report(read_report(run)))
    return run.report_path


def read_report(run: RunDir) -> RunReport:
    """Everything the report shows, from the run directory."""
    config = run.load_config()
    info = run.read_info()
    return RunReport(
        path=run.path,
        config=config,
        config_text=run.config_path.read_text(),
        info=info,
        metrics=run.read_metrics(),
        evaluations=[read_evaluation(run, directory) for directory in run.evaluations()],
        probes=read_probes(run),
        long_contexts=read_long_contexts(run),
        checkpoints=[
            CheckpointRecord(
                name=checkpoint.path.name,
                step=checkpoint.step,
                size_bytes=sum(f.stat().st_size for f in checkpoint.path.rglob("*") if f.is_file()),
                has_model=(checkpoint.path / MODEL_FILE).is_file(),
                has_meta=(checkpoint.path / META_FILE).is_file(),
            )
            for checkpoint in list_checkpoints(run.checkpoints)
        ],
        # run.json records when training first started; before that, config.yaml's time
        created=(
            datetime.fromisoformat(info["created"]).timestamp()
            if "created" in info
            else run.config_path.stat().st_mtime
        ),
        updated=newest_change(run),
    )


def read_evaluation(run: RunDir, directory: Path) -> EvaluationRecord:
    """One kept evaluation: its settings (none for one written before they were kept), tables."""
    settings, differences = directory / "settings.yaml", directory / "differences.csv"
    caches = directory / "caches.csv"
    return EvaluationRecord(
        name=directory.relative_to(run.eval_dir).as_posix()
        if directory != run.eval_dir
        else "eval",
        settings=read_yaml(settings) if settings.is_file() else None,
        curves=read_curves_csv(directory / "curves.csv"),
        differences=read_differences_csv(differences) if differences.is_file() else [],
        memory=mean_floats_by_learner(read_memory_csv(caches)) if caches.is_file() else {},
        figures=[
            ("kept", path.read_bytes()) for path in [directory / "kept.png"] if path.is_file()
        ],
    )


def read_long_contexts(run: RunDir) -> list[LongContextRecord]:
    """What ``iclab longctx`` wrote under RUN/longctx/NNN/, oldest first."""
    records = []
    for directory in run.long_contexts():
        curves = read_curves_csv(directory / "curves.csv")
        k = max(point.k for point in curves)
        at_k = {p.learner: p for p in curves if p.k == k and p.shift == "none"}
        rows = [(m.learner, m.floats, at_k.get(m.learner)) for m in read_memory(directory)]
        figures = [
            (name, (directory / f"{name}.png").read_bytes())
            for name in ("curves", "memory", "kept")
            if (directory / f"{name}.png").is_file()
        ]
        settings = read_yaml(directory / "settings.yaml")
        records.append(LongContextRecord(directory.name, settings, k, rows, figures))
    return records


def read_probes(run: RunDir) -> list[ProbeRecord]:
    """What ``iclab probe`` wrote under RUN/probes/<spec>/, probe by probe."""
    records = []
    for path in sorted(run.probes_dir.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        spec = str(summary.pop("probe", path.parent.name))
        figures = [(png.stem, png.read_bytes()) for png in sorted(path.parent.glob("*.png"))]
        records.append(ProbeRecord(spec, summary, figures))
    return records


def newest_change(run: RunDir) -> float:
    """The last time any file of the run changed (the report itself aside)."""
    files = (p for p in run.path.rglob("*") if p.is_file() and p.name != run.report_path.name)
    return max((p.stat().st_mtime for p in files), default=run.config_path.stat().st_mtime)
