"""``eval.task_options``: evaluating a run on a variant of its task (bursty classification's
novel-class and absent-class prompts), without touching its training config."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from conftest import tiny_config
from iclab.cli import app
from iclab.config import ConfigError, build_config
from iclab.evaluation import read_curves_csv
from iclab.io import read_yaml
from iclab.run import RunDir, train_run

BURSTY = {
    "name": "bursty_classification",
    "n_dims": 8,
    "n_points": 9,
    "n_clusters": 64,
    "n_labels": 8,
    "burstiness": 4,
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("task-options") / "run"
    config = tiny_config(
        task=BURSTY, train={"steps": 4}, eval={"algorithms": ["copy_exemplar", "majority_label"]}
    )
    train_run(config, path, show_progress=False)
    return path


def accuracy(directory, learner: str) -> float:
    points = read_curves_csv(directory / "curves.csv")
    return next(p.mean for p in points if p.learner == learner and p.shift == "none")


def test_modes_change_the_evaluation_prompts_and_not_the_training_config(run):
    before = (RunDir(run).path / "config.yaml").read_text()
    copying = {}
    for mode in ("icl", "iwl"):
        result = CliRunner().invoke(
            app,
            ["eval", str(run), "--set", f"eval.task_options.mode={mode}", "--no-progress"],
        )
        assert result.exit_code == 0, result.output
        latest = RunDir(run).latest_evaluation()
        assert read_yaml(latest / "settings.yaml")["eval"]["task_options"] == {"mode": mode}
        copying[mode] = accuracy(latest, "copy_exemplar")
    # Novel classes are answered by copying an exemplar's label; an absent class never is.
    assert copying["icl"] == 1.0 and copying["iwl"] < 0.5
    assert (RunDir(run).path / "config.yaml").read_text() == before


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "few_shot"}, "eval.task_options: .*mode: Input should be 'train', 'icl' or"),
        ({"modes": "icl"}, "eval.task_options: .*modes: unknown key; did you mean mode"),
        ({"n_dims": 4}, "eval.task_options: n_dims cannot change at evaluation"),
    ],
)
def test_a_bad_evaluation_option_is_a_config_error_naming_the_field(options, message):
    data = tiny_config(task=BURSTY, eval={"algorithms": ["copy_exemplar"]}).to_dict()
    data["eval"]["task_options"] = options
    with pytest.raises(ConfigError, match=message):
        build_config(data)
