"""In-context task families, registered by name (``iclab tasks`` lists them)."""

from iclab.tasks import (  # noqa: F401  (each module registers its families)
    bandits,
    boolean,
    classification,
    language,
    nonlinear,
    recall,
    regression,
    tabular,
)
from iclab.tasks.base import TASKS, Task, TaskOptions, make_task, register_task

__all__ = ["TASKS", "Task", "TaskOptions", "make_task", "register_task"]
