"""``iclab eval RUN --cache`` and ``iclab longctx``: a run's model under cache policies beside
its full cache, recurrent runs and the algorithms, on the same prompts, with tables, figures and
report sections."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_config
from iclab.algorithms import build_algorithm
from iclab.cli import app
from iclab.episode import Episode
from iclab.evaluation import read_curves_csv
from iclab.evaluation.caches import LastExamples, read_kept_csv, read_memory_csv
from iclab.io import read_yaml
from iclab.run import RunDir, train_run
from iclab.run.longctx import budgeted_policies, read_memory
from iclab.run.report import write_report
from iclab.tasks import make_task


def named(name: str, **sections):
    return tiny_config(**sections).model_copy(update={"name": name})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A rotary softmax run (any length) and a recurrent run on the same task."""
    root = tmp_path_factory.mktemp("longctx")
    rotary = named("rotary", model={"mixer": "softmax(positions=rotary)"})
    recurrent = named("deltanet", model={"mixer": "deltanet"})
    train_run(rotary, root / "rotary", show_progress=False)
    train_run(recurrent, root / "deltanet", show_progress=False)
    return root / "rotary", root / "deltanet"


def invoke(*arguments: str):
    result = CliRunner().invoke(app, [*arguments, "--no-progress"])
    assert result.exit_code == 0, result.output
    return result


def test_eval_with_caches_writes_their_curves_memory_and_kept_positions(runs):
    rotary, _ = runs
    invoke(
        "eval",
        str(rotary),
        "--n-prompts",
        "32",
        "--n-points",
        "16",
        "--cache",
        "window(budget=8),h2o(budget=8)",
        "--cache",
        "full",
    )
    directory = RunDir(rotary).latest_evaluation()
    learners = {p.learner for p in read_curves_csv(directory / "curves.csv")}
    assert {"model", "model[window(budget=8)]", "model[h2o(budget=8)]", "model[full]"} <= learners
    memory = {
        (row.learner, row.layer): row.floats for row in read_memory_csv(directory / "caches.csv")
    }
    # tiny model: d_model 32 → 2·32 floats per entry; 16 examples = 32 tokens
    assert memory["model[full]", 0] == 2 * 32 * 32
    assert memory["model[window(budget=8)]", 1] == 2 * 32 * 8
    kept = [
        row
        for row in read_kept_csv(directory / "kept.csv")
        if row.learner.startswith("model[window")
    ]
    last = max(row.position for row in kept)
    assert {row.position for row in kept if row.share == 1.0} == set(range(last - 7, last + 1))
    assert (directory / "kept.png").stat().st_size > 0
    assert read_yaml(directory / "settings.yaml")["eval"]["caches"] == [
        "window(budget=8)",
        "h2o(budget=8)",
        "full",
    ]
    full = {p.k: p.mean for p in read_curves_csv(directory / "curves.csv") if p.learner == "model"}
    cached = {
        p.k: p.mean for p in read_curves_csv(directory / "curves.csv") if p.learner == "model[full]"
    }
    assert all(math.isclose(full[k], cached[k], rel_tol=1e-4, abs_tol=1e-6) for k in full)


def test_eval_cache_errors_name_the_problem(runs):
    rotary, recurrent = runs
    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(rotary), "--cache", "snapvk"])
    assert result.exit_code != 0 and "did you mean snapkv" in result.output
    result = runner.invoke(app, ["eval", str(recurrent), "--cache", "window(budget=4)"])
    assert result.exit_code != 0 and "no softmax-attention layer" in result.output
    result = runner.invoke(app, ["eval", "--task", "linear_regression", "--cache", "full"])
    assert result.exit_code != 0 and "--cache" in result.output


def test_longctx_sweeps_policies_and_budgets_with_recurrent_runs_on_one_memory_axis(runs):
    rotary, recurrent = runs
    result = invoke(
        "longctx",
        str(rotary),
        "--policies",
        "window,snapkv,quantize(bits=4)",
        "--budgets",
        "4,8",
        "--n-points",
        "24",
        "--n-prompts",
        "32",
        "--with",
        str(recurrent),
    )
    assert "floats per layer" in result.output
    directory = RunDir(rotary).long_contexts()[-1]
    memory = {row.learner: row for row in read_memory(directory)}
    assert set(memory) >= {
        "model",
        "model[window(budget=4)]",
        "model[window(budget=8)]",
        "model[snapkv(budget=4)]",
        "model[snapkv(budget=8)]",
        "model[quantize(bits=4)]",
        "deltanet",
        "least_squares",
    }
    assert memory["model"].floats == 2 * 32 * 48  # the full cache after 24 examples
    assert memory["model[window(budget=4)]"].floats == 2 * 32 * 4
    assert memory["model[quantize(bits=4)]"].floats < memory["model"].floats / 2
    assert memory["least_squares"].floats == 3 * 3 + 3  # recursive least squares' state
    assert memory["deltanet"].role == "run" and memory["deltanet"].floats > 0
    # least squares on what a window of each budget holds: 2 and 4 examples, at their memory
    assert memory["least_squares[last 2]"].floats == memory["model[window(budget=4)]"].floats
    assert memory["least_squares[last 4]"].budget == 8
    curves = read_curves_csv(directory / "curves.csv")
    assert {p.n_prompts for p in curves} == {32} and max(p.k for p in curves) == 23
    for figure in ("curves.png", "memory.png", "kept.png"):
        assert (directory / figure).stat().st_size > 0
    html = write_report(rotary).read_text()
    assert "Long context" in html and "Memory under cache policies" in html


def test_longctx_refuses_what_it_cannot_run(runs, tmp_path):
    rotary, recurrent = runs
    runner = CliRunner()
    result = runner.invoke(app, ["longctx", str(rotary), "--budgets", "4,x"])
    assert result.exit_code != 0 and "--budgets" in result.output
    result = runner.invoke(app, ["longctx", str(recurrent)])
    assert result.exit_code != 0 and "no softmax-attention layer" in result.output
    train_run(
        named("other", task={"n_dims": 4}, train={"steps": 2}),
        tmp_path / "other",
        show_progress=False,
    )
    result = runner.invoke(app, ["longctx", str(rotary), "--with", str(tmp_path / "other")])
    assert result.exit_code != 0 and "n_dims=4" in result.output


def test_learned_positions_refuse_prompts_longer_than_trained(tmp_path):
    path = tmp_path / "learned"
    train_run(tiny_config(train={"steps": 2}), path, show_progress=False)
    result = CliRunner().invoke(app, ["longctx", str(path), "--n-points", "40"])
    assert result.exit_code != 0 and "learned position table" in result.output


def test_last_examples_sees_only_the_window_before_each_query():
    task = make_task("linear_regression", n_dims=3, options={"noise_std": 0.5})
    episode = task.sample(4, 12, torch.Generator().manual_seed(0))
    least_squares = build_algorithm("least_squares", task)
    windowed = LastExamples(least_squares, 5).predict(episode)
    alone = Episode(episode.inputs[:, 4:10], episode.targets[:, 4:10], episode.kind)
    assert torch.allclose(windowed[:, 9], least_squares.predict(alone)[:, -1])
    assert torch.equal(windowed[:, :6], least_squares.predict(episode)[:, :6])
    assert not torch.allclose(windowed[:, 11], least_squares.predict(episode)[:, 11])


def test_budgets_apply_to_policies_without_their_own():
    specs = [
        str(spec)
        for spec in budgeted_policies(
            ["window", "h2o(budget=5)", "quantize", "tova(unit=example)"], [8, 16]
        )
    ]
    assert specs == [
        "window(budget=8)",
        "window(budget=16)",
        "h2o(budget=5)",
        "quantize",
        "tova(budget=8, unit=example)",
        "tova(budget=16, unit=example)",
    ]
