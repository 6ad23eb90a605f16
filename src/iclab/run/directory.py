"""The run directory: everything a run reads and writes, and nothing else.

```
runs/<name>/
  config.yaml     the training config, fully resolved: the only input needed to rerun
  run.json        status, config hash, versions (with the source's git commit and the CPU),
                  parameter count, timings
  metrics.jsonl   one JSON object per logged training step
  checkpoints/    step-000500/{model.safetensors, optimizer.safetensors, meta.json}
  eval/001/, ...  one directory per evaluation, all kept: settings.yaml (what it used: the eval
                  section, overrides, checkpoint step, date), curves.csv, differences.csv,
                  curves.png and curves-SHIFT.png; with cache policies caches.csv, kept.csv,
                  kept.png
  longctx/001/    one directory per iclab longctx sweep: settings.yaml, curves.csv,
                  memory.csv, caches.csv, kept.csv, curves.png, memory.png, kept.png
  plots/          loss.png
  probes/         <probe spec>/: summary.json, tables, figures
  report.html     the whole run on one page
  tb/             TensorBoard event files
  .lock           held by the one process training the run (its pid, host and start)
```

Only the run layer (this package) writes here, and only after validating what it was given;
config.yaml changes only when training starts or resumes, never by evaluating. One process at a
time trains a run (``RunDir.writer_lock``); evaluations, reports and listings read it meanwhile.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import IO, Any

import torch

from iclab import __version__
from iclab.config import RunConfig, build_config
from iclab.errors import RunBusyError, RunDamagedError, RunNotFoundError, did_you_mean
from iclab.io import atomic_write_json, atomic_write_text, read_yaml

LOCK_FILE = ".lock"


def describe_holder(text: str) -> str:
    """Who holds a lock, from its file: "process 123 on host h since …"."""
    try:
        holder = json.loads(text)
        return f"process {holder['pid']} on {holder['host']} (since {holder['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


def metrics_line(row: dict[str, Any]) -> str:
    """A metrics.jsonl line: ``row`` as strict JSON, non-finite numbers as null."""
    finite = {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in row.items()
    }
    return json.dumps(finite, allow_nan=False) + "\n"


def environment() -> dict[str, str]:
    """Versions that matter for reproducing a run, the commit of iclab's source when it runs
    from a git checkout (numbers move between commits of one version), and the CPU (timings
    move between machines)."""
    found = {
        "iclab": __version__,
        "source": source_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
    }
    return {name: value for name, value in found.items() if value}


@cache  # git runs once per process, not at every checkpoint
def source_commit() -> str | None:
    """The git commit of the checkout iclab runs from (an editable install), with "+changes"
    when tracked files differ from it; None for an installed package or without git."""
    root = Path(__file__).resolve().parents[3]  # src/iclab/run/directory.py
    if not (root / ".git").exists():
        return None

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
        )
        if done.returncode:
            raise OSError(done.stderr)
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+changes" if changed else "")


# The widest vector instructions a CPU has, most capable first: CPUs of one model name differ
# in them ("AMD EPYC" with AVX2 only or with AVX-512-BF16), and they set precision: auto's
# choice and the speed of everything.
VECTOR_UNITS = (
    ("amx_bf16", "AMX"),
    ("avx512_bf16", "AVX-512-BF16"),
    ("avx512f", "AVX-512"),
    ("avx2", "AVX2"),
)


@cache
def cpu_name() -> str | None:
    """The CPU's model name (Linux), with the cores this process may use and its widest vector
    instructions: ``AMD EPYC (2 cores, AVX-512-BF16)``."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    if not names:
        return None
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    widest = next((f", {unit}" for flag, unit in VECTOR_UNITS if flag in flags), "")
    return f"{names[0]} ({len(os.sched_getaffinity(0))} cores{widest})"


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
    def longctx_dir(self) -> Path:
        return self.path / "longctx"

    @property
    def probes_dir(self) -> Path:
        return self.path / "probes"

    @property
    def report_path(self) -> Path:
        return self.path / "report.html"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tb"

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Hold the run's exclusive training lock (``.lock``, with this process's pid, host and
        start), or fail at once with a ``RunBusyError`` naming the holder. The kernel releases
        the lock when its process ends however it ends, so a lock left by a killed process is
        never in the way. A directory this created that holds nothing but the lock when the
        lock is released is removed again: a training that failed its checks leaves nothing."""
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        handle = self._locked_handle()
        try:
            handle.seek(0)
            handle.truncate()
            since = datetime.now(UTC).isoformat(timespec="seconds")
            handle.write(
                json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since})
            )
            handle.flush()
            yield
        finally:
            if created and [p.name for p in self.path.iterdir()] == [LOCK_FILE]:
                shutil.rmtree(self.path, ignore_errors=True)
            handle.close()  # releases the lock

    def _locked_handle(self) -> IO[str]:
        """The lock file, open and locked by this process (retried if it was replaced between
        opening and locking, so two processes never lock two different files)."""
        path = self.path / LOCK_FILE
        while True:
            handle = path.open("a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = describe_holder(handle.read())
                handle.close()
                raise RunBusyError(
                    f"{self.path} is being trained by {holder}; wait for it to end (or stop "
                    "it), then try again"
                ) from None
            if path.exists() and os.fstat(handle.fileno()).st_ino == path.stat().st_ino:
                return handle
            handle.close()

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

    def long_contexts(self) -> list[Path]:
        """Every kept ``iclab longctx`` sweep (``longctx/001``, ...), oldest first."""
        folder = self.longctx_dir
        if not folder.is_dir():
            return []
        kept = [
            path
            for path in folder.iterdir()
            if path.is_dir() and path.name.isdigit() and (path / "memory.csv").is_file()
        ]
        return sorted(kept, key=lambda path: int(path.name))

    def latest_evaluation(self) -> Path | None:
        """The newest evaluation's directory: what commands show by default."""
        found = self.evaluations()
        return found[-1] if found else None

    def exists(self) -> bool:
        return self.config_path.exists()

    def load_config(self) -> RunConfig:
        if not self.config_path.exists():
            raise RunNotFoundError(
                f"{self.path} is not a run directory (no config.yaml){self._nearby_runs()}"
            )
        return build_config(read_yaml(self.config_path), source=str(self.config_path))

    def _nearby_runs(self) -> str:
        """``"; did you mean runs/qs?"`` for a misspelt run: the run directories beside this
        path whose names are close to its name."""
        parent = self.path.parent
        if not parent.is_dir():
            return ""
        runs = [child.name for child in parent.iterdir() if (child / "config.yaml").is_file()]
        return did_you_mean(self.path.name, runs, written=lambda name: str(parent / name))

    def write_config(self, config: RunConfig) -> None:
        atomic_write_text(self.config_path, config.to_yaml())

    def read_info(self) -> dict[str, Any]:
        if not self.info_path.exists():
            return {}
        return json.loads(self.info_path.read_text())

    def update_info(self, **fields: Any) -> None:
        atomic_write_json(self.info_path, {**self.read_info(), **fields})

    def read_metrics(self) -> list[dict[str, Any]]:
        """The logged training steps. A torn last line (a write cut short by a crash or a full
        disk) is left out with a warning naming it; resuming rewrites the file without it. A
        loss logged as null (a non-finite step) reads as NaN."""
        if not self.metrics_path.exists():
            return []
        lines = self.metrics_path.read_text(errors="replace").splitlines()
        rows = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                    raise ValueError("not a logged step")
            except ValueError as error:
                where = f"{self.metrics_path}, line {number}"
                if number == len(lines):
                    warnings.warn(f"{where} is torn ({error}); left out", stacklevel=2)
                    break
                raise RunDamagedError(f"cannot read {where}: {error}") from None
            if row.get("loss", 0.0) is None:
                row["loss"] = math.nan
            rows.append(row)
        return rows

    def truncate_metrics(self, step: int) -> None:
        """Drop metrics logged after ``step`` by an interrupted run (they will be redone)."""
        kept = [row for row in self.read_metrics() if row["step"] <= step]
        atomic_write_text(self.metrics_path, "".join(map(metrics_line, kept)))
