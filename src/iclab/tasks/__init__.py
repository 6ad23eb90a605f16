"""In-context task families, registered by name."""

from iclab.tasks import regression  # noqa: F401  (registers the regression families)
from iclab.tasks.base import TASKS, Task, TaskOptions, make_task, register_task

__all__ = ["TASKS", "Task", "TaskOptions", "make_task", "register_task"]
