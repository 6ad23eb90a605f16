"""The run directory: everything a run reads and writes, and nothing else.

```
runs/<name>/
  config.yaml     the training config, fully resolved: the only input needed to rerun
  run.json        status, config hash, versions, parameter count, timings
  metrics.jsonl   one JSON object per logged training step
  checkpoints/    step-000500/{model.safetensors, optimizer.safetensors, meta.json}
  eval/001/, ...  one directory per evaluation, all kept: settings.yaml (what it used: the eval
                  section, overrides, checkpoint step, date), curves.csv, differences.csv,
                  curves.png and curves-SHIFT.png
  plots/          loss.png
  probes/         <probe spec>/: summary.json, tables, figures
  report.html     the whole run on one page
  tb/             TensorBoard event files
```

Only the run layer (this package) writes here, and only after validating what it was given;
config.yaml changes only when training starts or resumes, never by evaluating.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from iclab import __version__
from iclab.config import RunConfig, build_config
from iclab.errors import RunNotFoundError
from iclab.io import atomic_write_json, atomic_write_text


def environment() -> dict[str, str]:
    """Versions that matter for reproducing a run."""
    return {
        "iclab": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def info_path(self) -> Path:
        return self.path / "run.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def plots_dir(self) -> Path:
        return self.path / "plots"

    @property
    def probes_dir(self) -> Path:
        return self.path / "probes"

    @property
    def report_path(self) -> Path:
        return self.path / "report.html"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tb"

    def evaluations(self) -> list[Path]:
        """Every kept evaluation, oldest first (``eval/001``, ``eval/002``, ...; ``eval/`` itself
        first for a run evaluated before evaluations were kept apart)."""
        if not self.eval_dir.is_dir():
            return []
        kept = [
            path
            for path in self.eval_dir.iterdir()
            if path.is_dir() and path.name.isdigit() and (path / "curves.csv").is_file()
        ]
        legacy = [self.eval_dir] if (self.eval_dir / "curves.csv").is_file() else []
        return legacy + sorted(kept, key=lambda path: int(path.name))

    def latest_evaluation(self) -> Path | None:
        """The newest evaluation's directory: what commands show by default."""
        found = self.evaluations()
        return found[-1] if found else None

    def exists(self) -> bool:
        return self.config_path.exists()

    def load_config(self) -> RunConfig:
        if not self.config_path.exists():
            raise RunNotFoundError(f"{self.path} is not a run directory (no config.yaml)")
        data = yaml.safe_load(self.config_path.read_text())
        return build_config(data, source=str(self.config_path))

    def write_config(self, config: RunConfig) -> None:
        atomic_write_text(self.config_path, config.to_yaml())

    def read_info(self) -> dict[str, Any]:
        if not self.info_path.exists():
            return {}
        return json.loads(self.info_path.read_text())

    def update_info(self, **fields: Any) -> None:
        atomic_write_json(self.info_path, {**self.read_info(), **fields})

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        lines = self.metrics_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def truncate_metrics(self, step: int) -> None:
        """Drop metrics logged after ``step`` by an interrupted run (they will be redone)."""
        kept = [row for row in self.read_metrics() if row["step"] <= step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(row) + "\n" for row in kept))
