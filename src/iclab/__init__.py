"""iclab: a laboratory for in-context learning.

The main entry points are importable from here; they load lazily so ``import iclab`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Episode": "iclab.episode",
    "InContextLearner": "iclab.learner",
    "RunConfig": "iclab.config",
    "load_config": "iclab.config",
    "build_config": "iclab.config",
    "make_task": "iclab.tasks",
    "build_algorithm": "iclab.algorithms",
    "build_model": "iclab.models",
    "train_run": "iclab.run",
    "evaluate": "iclab.evaluation.curves",
    "evaluate_run": "iclab.run",
    "load_trained_model": "iclab.run",
    "write_report": "iclab.run",
    "load": "iclab.predictor",
    "Predictor": "iclab.predictor",
}

__all__ = ["__version__", *_EXPORTS]


def __dir__() -> list[str]:
    return sorted(__all__)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'iclab' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
