"""The run layer: the one writer of run directories.

Training (``iclab.training``) and evaluation (``iclab.evaluation``) compute and return values;
this package decides what goes into a run directory, checks its inputs before it writes, and
writes atomically: the config and checkpoints when training, evaluation tables and plots, the
report, comparisons and the run index.
"""

from iclab.run.directory import RunDir, environment
from iclab.run.evaluation import (
    RunEvaluation,
    evaluate_config,
    evaluate_run,
    evaluation_points,
    load_trained_model,
    with_eval_overrides,
    write_evaluation,
)
from iclab.run.report import write_report
from iclab.run.training import train_run

__all__ = [
    "RunDir",
    "RunEvaluation",
    "environment",
    "evaluate_config",
    "evaluate_run",
    "evaluation_points",
    "load_trained_model",
    "train_run",
    "with_eval_overrides",
    "write_evaluation",
    "write_report",
]
