"""``train.stop_at``: training stops at the first checkpoint, after the curriculum, where the
model reaches its target; checking changes nothing of the training, and a resume knows."""

from __future__ import annotations

import pytest
from rich.console import Console

from conftest import tiny_config
from iclab.config import PRESETS_DIR, build_config, load_config
from iclab.errors import ConfigError
from iclab.kinds import kind_of
from iclab.report.console import steps_of
from iclab.run import RunDir, catalog, train_run, write_report
from iclab.seeding import generator_for
from iclab.tasks import TASKS
from iclab.training.checkpoint import list_checkpoints
from saved_state import assert_bitwise_equal, final_state

# The curriculum reaches the task's 8 points at step 15: the check at step 10 must not count.
CURRICULUM = {"points": {"start": 4, "end": 8, "increment": 4, "interval": 15}}
REACHABLE = {"k": 6, "target": 10.0, "n_prompts": 64}  # any model's error is below 10
UNREACHABLE = {"k": 6, "target": 0.0, "n_prompts": 64}


def stopping(stop_at: dict | None, task: str = "linear_regression") -> object:
    return tiny_config(
        task={"name": task},
        train={"curriculum": CURRICULUM, "stop_at": stop_at},
        eval={"algorithms": None},  # the family's yardsticks
    )


def train(config, run_dir, **options) -> tuple[object, str]:
    console = Console(record=True, width=200)
    trainer = train_run(config, run_dir, show_progress=False, console=console, **options)
    return trainer, console.export_text()


def test_training_stops_at_the_first_checkpoint_after_the_curriculum_that_reaches_the_target(
    tmp_path,
):
    trainer, output = train(stopping(REACHABLE), tmp_path / "run")
    run = RunDir(tmp_path / "run")
    assert trainer.step == 20  # not 10: the curriculum was still at 4 points then
    assert [checkpoint.step for checkpoint in list_checkpoints(run.checkpoints)] == [10, 20]
    assert run.read_metrics()[-1]["step"] == 20
    stopped = run.read_info()["stopped"]
    assert stopped["step"] == 20 and stopped["k"] == 6 and stopped["metric"] == "error"
    assert 0 < stopped["score"] <= 10.0
    assert "reached its target at step 20: error" in output
    assert "stopped 10 steps early" in output
    header = write_report(tmp_path / "run").read_text().split("</header>")[0]
    assert "20 of 30, stopped at its target: error " in header
    entry = catalog.get_run(tmp_path, "run")
    assert entry.steps == 20 and entry.stopped.startswith("error ")
    assert entry.stopped.endswith(" ≤ 10 after 6 examples")
    assert steps_of(entry) == "20 target"


def test_checking_a_target_changes_nothing_of_the_training(tmp_path):
    """An unreachable target trains every step, bitwise as a run without one: the checks draw
    their own prompts and leave the global random state alone."""
    checked, output = train(stopping(UNREACHABLE), tmp_path / "checked")
    train(stopping(None), tmp_path / "plain")
    assert checked.step == 30 and checked.stopped is None
    assert_bitwise_equal(final_state(tmp_path / "checked"), final_state(tmp_path / "plain"))
    assert RunDir(tmp_path / "checked").read_info()["stopped"] is None
    assert "step 20: error " in output and "not yet 0 (train.stop_at): training on" in output
    assert "step 30: error " in output and "the last step, short of the target" in output
    assert "step 10: error" not in output  # before the curriculum's end: no check


def test_a_stopped_run_stays_stopped_on_resume(tmp_path):
    run_dir = tmp_path / "run"
    train(stopping(REACHABLE), run_dir)
    again, output = train(stopping(REACHABLE), run_dir, resume=True)
    assert again.step == 20
    assert "reached its target at step 20" in output and "nothing to train" in output
    assert f"iclab train --resume {run_dir} --set train.stop_at=null" in output


@pytest.mark.parametrize("stop_at", [UNREACHABLE, None], ids=["stricter-target", "no-target"])
def test_a_stopped_run_trains_on_when_its_target_moves_out_of_reach(tmp_path, stop_at):
    run_dir = tmp_path / "run"
    train(stopping(REACHABLE), run_dir)
    resumed, output = train(stopping(stop_at), run_dir, resume=True)
    assert resumed.step == 30 and resumed.stopped is None
    assert ("step 30: error " in output) == (stop_at is not None)


@pytest.mark.parametrize(
    ("target", "steps"), [(0.0, 20), (1.01, 30)], ids=["reached", "out-of-reach"]
)
def test_an_accuracy_target_is_reached_from_below(tmp_path, target, steps):
    stop_at = {"k": 6, "target": target, "n_prompts": 64}
    trainer, _ = train(stopping(stop_at, "linear_classification"), tmp_path / "run")
    assert trainer.step == steps


def test_a_target_after_the_last_example_is_a_config_error():
    data = tiny_config().to_dict()
    data["train"]["stop_at"] = {"k": 8, "target": 0.1}
    with pytest.raises(ConfigError, match=r"train\.stop_at\.k \(8\) must be below task\.n_points"):
        build_config(data)


def preset_of(family: str) -> str:
    """A preset that trains ``family`` (every family has one: tests/test_task_contract.py)."""
    presets = sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))
    return next(preset for preset in presets if load_config(preset).task.name == family)


def last_scored_position(config) -> int:
    """The last position a prompt of the task is scored at (a token task scores only some)."""
    task = config.task.build()
    episode = task.sample(8, config.task.n_points, generator_for(0, "positions"))
    if episode.loss_mask is None:
        return config.task.n_points - 1
    return int(episode.loss_mask.any(0).nonzero().max())


@pytest.mark.parametrize("family", TASKS.names())
def test_every_family_can_stop_at_a_target_of_its_own_metric(family, tmp_path):
    """Each family, scored after its last scored example: a target every model reaches
    (accuracy ≥ 0, error or regret ≤ 10⁹) stops it at the first check."""
    config = load_config(preset_of(family))
    higher = kind_of(TASKS.get(family).kind).metric.higher_is_better
    stop_at = {"k": last_scored_position(config), "target": 0.0 if higher else 1e9}
    config = config.updated(
        model={"n_layers": 1, "d_model": 32},  # smoke size: the check is under test
        train={
            "steps": 4,
            "checkpoint_every": 2,
            "curriculum": {"dims": None, "points": None},
            "stop_at": {**stop_at, "n_prompts": 8},
            "device": "cpu",
        },
    )
    trainer, _ = train(config, tmp_path / "run")
    assert trainer.step == 2
    assert RunDir(tmp_path / "run").read_info()["stopped"]["step"] == 2
