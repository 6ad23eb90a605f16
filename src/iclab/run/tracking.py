"""Optional MLflow tracking: the trainer's TensorBoard scalars, the config and the run's status,
in an MLflow store. mlflow is imported only when a config asks for it (``logging.mlflow``).

A run directory maps to one MLflow run for its whole life: its id is kept in run.json as
``mlflow_run_id``, and a resumed run logs into the same MLflow run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from iclab import __version__
from iclab.config import MlflowConfig, RunConfig
from iclab.errors import ConfigError
from iclab.run.directory import RunDir

PARAMS_PER_BATCH = 100  # MLflow's limit for one log_batch request


def flatten_config(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"model": {"d_model": 32}}`` → ``{"model.d_model": "32"}``; values as JSON text."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value)
    return flat


def unusable_store(uri: str, reason: object) -> ConfigError:
    return ConfigError(f"logging.mlflow.tracking_uri {uri!r}: MLflow cannot use it: {reason}")


class MlflowTracker:
    """One MLflow run, started fresh or continued from a run directory's ``mlflow_run_id``.

    On resume, steps the interrupted run already logged are not logged again: a resumed run
    reproduces them bitwise, so the history stays one entry per step, like metrics.jsonl.
    MLflow params cannot change, so a resume with overrides keeps the params the run started
    with; the ``iclab.config_hash`` tag and config.yaml describe the config it ends with.
    """

    def __init__(self, settings: MlflowConfig) -> None:
        try:
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError(
                "logging.mlflow needs the mlflow package: pip install 'iclab[mlflow]'"
            ) from None
        self.settings = settings
        try:  # connects, and creates a SQLite store's tables
            self.client = MlflowClient(tracking_uri=settings.tracking_uri)
        except (MlflowException, OSError) as error:
            raise unusable_store(settings.tracking_uri, error) from None
        self.run_id: str | None = None
        self.logged_through = 0  # the last step the MLflow run holds, when resumed

    def start(self, run_name: str, tags: Mapping[str, str]) -> str:
        """Create a run in the configured experiment (created if missing); returns its id."""
        from mlflow.exceptions import MlflowException

        try:
            experiment = self.client.get_experiment_by_name(self.settings.experiment)
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else self.client.create_experiment(self.settings.experiment)
            )
            run = self.client.create_run(experiment_id, tags=dict(tags), run_name=run_name)
        except MlflowException as error:
            raise unusable_store(self.settings.tracking_uri, error.message) from None
        self.run_id = run.info.run_id
        return self.run_id

    def resume(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Continue run ``run_id``: mark it running again and note the last step it holds."""
        from mlflow.entities import RunTag
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as error:
            raise ConfigError(
                f"run.json names MLflow run {run_id}, which {self.settings.tracking_uri!r} "
                f"does not hold ({error.message}); restore logging.mlflow.tracking_uri, or "
                "delete mlflow_run_id from run.json to start a new MLflow run"
            ) from None
        self.run_id = run_id
        self.logged_through = max(
            (
                metric.step
                for key in run.data.metrics
                for metric in self.client.get_metric_history(run_id, key)
            ),
            default=0,
        )
        self.client.update_run(run_id, status="RUNNING")
        self.client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])

    def log_params(self, params: Mapping[str, str]) -> None:
        """Log params the run does not hold yet (all of them, for a new run)."""
        from mlflow.entities import Param

        held = self.client.get_run(self.run_id).data.params
        new = [Param(key, value) for key, value in params.items() if key not in held]
        for start in range(0, len(new), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=new[start : start + PARAMS_PER_BATCH])

    def log_metrics(self, step: int, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        if step <= self.logged_through:
            return
        timestamp = int(time.time() * 1000)
        metrics = [Metric(key, float(value), timestamp, step) for key, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, status: str) -> None:
        """End the run as ``FINISHED``, ``FAILED`` or ``KILLED``."""
        self.client.set_terminated(self.run_id, status=status)

    def __enter__(self) -> MlflowTracker:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        """Finish as the block ends: FINISHED, KILLED on Ctrl-C, FAILED on any other error."""
        if kind is None:
            self.finish("FINISHED")
        else:
            self.finish("KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")


def open_tracker(config: RunConfig, run: RunDir) -> MlflowTracker | None:
    """The tracker ``config.logging`` asks for, started or resumed for ``run``; None if none."""
    settings = config.logging.mlflow
    if settings is None:
        return None
    tracker = MlflowTracker(settings)
    tags = {
        "iclab.version": __version__,
        "iclab.run_dir": str(run.path.resolve()),
        "iclab.config_hash": config.digest(),
    }
    run_id = run.read_info().get("mlflow_run_id")
    if run_id is None:
        run.update_info(mlflow_run_id=tracker.start(config.name, tags))
    else:
        tracker.resume(run_id, tags)
    tracker.log_params(flatten_config(config.to_dict()))
    return tracker
