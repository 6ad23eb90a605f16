"""The run layer: the one writer of run directories.

Training (``iclab.training``) and evaluation (``iclab.evaluation``) compute and return values;
this package decides what goes into a run directory, checks its inputs before it writes, and
writes atomically: the config and checkpoints when training, evaluation tables and plots, the
report, comparisons and the run index.

Its names are imported on first use (PEP 562), so that training never loads what only
evaluation and reports need (matplotlib: ~30 MB of a training run's peak memory).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iclab.run.directory import RunDir, environment
    from iclab.run.evaluation import (
        RunEvaluation,
        checked_steps,
        evaluate_checkpoints,
        evaluate_config,
        evaluate_run,
        evaluation_points,
        kept_steps,
        load_trained_model,
        with_eval_overrides,
        write_evaluation,
    )
    from iclab.run.report import write_report
    from iclab.run.training import train_run

WHERE = {
    "RunDir": "directory",
    "environment": "directory",
    "RunEvaluation": "evaluation",
    "checked_steps": "evaluation",
    "evaluate_checkpoints": "evaluation",
    "evaluate_config": "evaluation",
    "evaluate_run": "evaluation",
    "evaluation_points": "evaluation",
    "kept_steps": "evaluation",
    "load_trained_model": "evaluation",
    "with_eval_overrides": "evaluation",
    "write_evaluation": "evaluation",
    "write_report": "report",
    "train_run": "training",
}
__all__ = [
    "RunDir",
    "RunEvaluation",
    "checked_steps",
    "environment",
    "evaluate_checkpoints",
    "evaluate_config",
    "evaluate_run",
    "evaluation_points",
    "kept_steps",
    "load_trained_model",
    "train_run",
    "with_eval_overrides",
    "write_evaluation",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name not in WHERE:
        raise AttributeError(f"module 'iclab.run' has no attribute {name!r}")
    return getattr(importlib.import_module(f"iclab.run.{WHERE[name]}"), name)
