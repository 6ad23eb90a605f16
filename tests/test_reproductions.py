"""Reproductions: runs that resume, every reproduction end to end at smoke scale through the CLI,
the von Oswald construction's known answer, and the documented CPU-scale runs (slow)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_config
from iclab.cli import app
from iclab.errors import ConfigError, DivergedError
from iclab.reproductions import REPRODUCTIONS, reproduce
from iclab.reproductions.base import SCALES, Verdict, trained, untrained_model
from iclab.reproductions.budget import cpu_step_seconds
from iclab.reproductions.parallel import complete, train_in_parallel
from iclab.run import RunDir
from iclab.training.trainer import with_batch_shards, with_precision
from reproduction_checks import recorded_verdict


def test_a_completed_run_is_not_trained_again_and_a_shorter_one_is_continued(tmp_path):
    run = trained(tiny_config(train={"steps": 10}), tmp_path / "run", show_progress=False)
    metrics = run.metrics_path.stat().st_mtime_ns
    trained(tiny_config(train={"steps": 10}), tmp_path / "run", show_progress=False)
    assert run.metrics_path.stat().st_mtime_ns == metrics
    trained(tiny_config(train={"steps": 20}), tmp_path / "run", show_progress=False)
    assert [row["step"] for row in run.read_metrics()] == list(range(1, 21))


@pytest.mark.parametrize("name", REPRODUCTIONS.names())
def test_every_reproduction_runs_end_to_end_at_smoke_scale_from_the_cli(name, tmp_path):
    """The contract every registered reproduction meets, new ones included: the smoke scale
    (tiny runs, seconds) goes through the same code as cpu and paper and writes an honest
    verdict.json and a figure; what the verdict is does not matter here (decisions are tested
    from tables in test_reproduction_decisions.py)."""
    result = CliRunner().invoke(
        app, ["reproduce", name, "--scale", "smoke", "--out", str(tmp_path), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    recorded_verdict(tmp_path, name, "smoke")
    runs = {
        info.parent.relative_to(tmp_path / name).as_posix(): RunDir(info.parent)
        for info in (tmp_path / name).rglob("run.json")
    }
    # What `trainings` lists (and the cost estimate counts) is exactly what the run trained
    trainings = REPRODUCTIONS.get(name).trainings("smoke")
    assert set(runs) == set(trainings)
    for key, run in runs.items():
        assert run.read_info()["status"] == "completed"
        expected = with_precision(with_batch_shards(trainings[key], 1), torch.device("cpu"))
        assert run.load_config().model_dump() == expected.model_dump(), key


@pytest.mark.parametrize("name", REPRODUCTIONS.names())
def test_every_reproduction_trains_its_stated_steps_at_every_scale(name):
    """A claim is decided after the steps its scale states: no run stops early at a target
    (the quickstart preset has one: garg-linear at CPU scale stopped at 0.05 before this)."""
    for scale in SCALES:
        for key, config in REPRODUCTIONS.get(name).trainings(scale).items():
            assert config.train.stop_at is None, f"{scale}: {key}"


@pytest.mark.parametrize("name", REPRODUCTIONS.names())
def test_every_reproduction_trains_the_papers_attention_not_the_quickstarts(name):
    """The quickstart's attention has a short convolution, a demonstration's choice; the
    reproductions, some built on that preset, keep the papers' GPT-2 attention."""
    for scale in SCALES:
        for run, config in REPRODUCTIONS.get(name).trainings(scale).items():
            for cls, options in config.model.layer_specs:
                assert cls.name != "softmax" or options.short_conv == 0, (scale, run)


@pytest.mark.parametrize("name", ["garg-linear", "linear-probes", "cache-vs-state"])
def test_reproductions_built_on_the_quickstart_keep_the_rate_they_were_recorded_at(name):
    """Not the quickstart's present rate (3e-3, chosen with its convolution, and fixed when the
    preset loads, before a reproduction swaps the mixer): softmax's swept 2e-3, the preset's
    rate when these reproductions' CPU verdicts were recorded."""
    runs = REPRODUCTIONS.get(name).trainings("cpu").items()
    regression = [(run, config) for run, config in runs if config.task.name == "linear_regression"]
    assert regression
    for run, config in regression:
        assert config.train.lr == 2e-3, run


def test_cli_lists_reproductions_and_rejects_unknown_ones_and_unknown_scales(tmp_path):
    runner = CliRunner()
    listing = runner.invoke(app, ["reproduce", "--list"])
    assert listing.exit_code == 0 and all(name in listing.output for name in REPRODUCTIONS.names())
    result = runner.invoke(app, ["reproduce", "nonsense", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown reproduction 'nonsense'" in result.output
    result = runner.invoke(app, ["reproduce", "al", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "did you mean all?" in result.output
    result = runner.invoke(app, ["reproduce", "garg-linear", "--scale", "huge"])
    assert result.exit_code == 2 and all(scale in result.output for scale in SCALES)


def test_reproduce_all_says_which_reproduction_runs_and_each_verdict_as_it_comes(
    tmp_path, monkeypatch
):
    """``all`` runs for hours: a log names each reproduction as it starts (of how many, with
    its expected minutes) and its verdict when it ends, then the table with the minutes."""
    import iclab.reproductions

    def judged_at_once(name, out, scale, **_):
        outcome = "reproduced" if name == "boolean" else "inconclusive"
        entry = REPRODUCTIONS.get(name)
        return Verdict(name, entry.paper, entry.claim, "q", "t", outcome, {"x": 1.0}, scale, 0.5)

    monkeypatch.setattr(iclab.reproductions, "reproduce", judged_at_once)
    result = CliRunner().invoke(app, ["reproduce", "all", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    names, text = REPRODUCTIONS.names(), " ".join(result.output.split())
    boolean = REPRODUCTIONS.get("boolean")
    assert f"reproduction 1 of {len(names)}, {names[0]}: about " in text
    assert f"boolean: about {boolean.cpu_minutes:g} min on 2 cores" in text
    assert "boolean: reproduced in 0.5 min" in text  # the minutes reproduce timed
    assert f"{names[-1]}: inconclusive in 0.5 min" in text
    table = result.output.split("verdicts (cpu scale)")[1]
    assert "min" in table and "0.5" in table  # the table's column


def test_the_von_oswald_construction_is_one_gd_step_and_a_multiple_of_the_identity():
    """Known answer: the hand-built LSA model (identity read-in, W_K = W_Q reading x, W_V
    reading y) scores cosine 1 with one GD step, and its key-query matrix is exactly I; a
    random model is far from both."""
    import torch

    from iclab.reproductions.von_oswald import (
        alignment,
        distance_from_identity,
        key_query_matrix,
        run_config,
    )

    config = run_config("cpu")
    dim = config.task.n_dims
    model = untrained_model(config, seed=0)
    assert distance_from_identity(key_query_matrix(model)) > 0.5  # random init
    assert abs(alignment(model, config, "test")["sensitivity_cosine"]) < 0.2
    width = config.model.d_model  # the tokens (x, y) in its first d + 1 coordinates
    reads_x = torch.diag(torch.tensor([1.0] * dim + [0.0] * (width - dim)))
    reads_y = torch.zeros(width, width)
    reads_y[dim, dim] = 1.0
    with torch.no_grad():
        model.codec.read_in.weight.copy_(torch.eye(width, dim + 1))
        model.codec.read_in.bias.zero_()
        mixer = model.backbone.blocks[0].mixer
        mixer.qkv.weight.copy_(torch.cat([reads_x, reads_x, reads_y]))
        mixer.proj.weight.copy_(0.1 * torch.eye(width))
        model.codec.read_out.weight.copy_(reads_y[dim : dim + 1])
        model.codec.read_out.bias.zero_()
    assert distance_from_identity(key_query_matrix(model)) < 1e-6
    summary = alignment(model, config, "test")
    assert summary["sensitivity_cosine"] > 0.999 and summary["prediction_difference"] < 1e-6
    two_heads = config.model_copy(update={"model": config.model.model_copy(update={"n_heads": 2})})
    with pytest.raises(ValueError, match="one-head layer; this one has 2"):
        key_query_matrix(untrained_model(two_heads))


@pytest.mark.slow
def test_garg_linear_at_cpu_scale(tmp_path):
    """The documented CPU-scale run (7.4 minutes; reproduced, gap 0.015): docs/REPRODUCTIONS.md.
    Checked whatever the verdict: least squares is exact from k = d on (noiseless), so its error
    at k = 2d is zero."""
    reproduce("garg-linear", tmp_path, "cpu", show_progress=False)
    numbers = recorded_verdict(tmp_path, "garg-linear", "cpu")["numbers"]
    assert numbers["least_squares_error_at_2d"] == pytest.approx(0.0, abs=1e-3)
    assert numbers["steps"] == 6000


@pytest.mark.slow
def test_von_oswald_gd_at_cpu_scale(tmp_path):
    """The documented CPU-scale run (three seeds, 2.5 minutes): docs/REPRODUCTIONS.md. Checked
    whatever the verdict: no untrained layer is a GD step."""
    reproduce("von-oswald-gd", tmp_path, "cpu", show_progress=False)
    numbers = recorded_verdict(tmp_path, "von-oswald-gd", "cpu")["numbers"]
    for seed in range(3):
        assert abs(numbers[f"seed{seed}_untrained_sensitivity_cosine"]) < 0.2
        assert -1.0 <= numbers[f"seed{seed}_sensitivity_cosine"] <= 1.0


def test_runs_trained_side_by_side_equal_runs_trained_one_after_another(tmp_path):
    configs = {f"seed{seed}": tiny_config(train={"steps": 6, "seed": seed}) for seed in (0, 1)}
    train_in_parallel(configs, tmp_path / "parallel", jobs=2, threads=1, show_progress=False)
    for key, config in configs.items():
        alone = trained(config, tmp_path / "serial" / key, show_progress=False)
        side_by_side = RunDir(tmp_path / "parallel" / key)
        assert complete(config, side_by_side.path)
        assert [row["loss"] for row in side_by_side.read_metrics()] == [
            row["loss"] for row in alone.read_metrics()
        ]
    # complete runs are not trained again
    stamp = RunDir(tmp_path / "parallel" / "seed0").metrics_path.stat().st_mtime_ns
    train_in_parallel(configs, tmp_path / "parallel", jobs=2, threads=1, show_progress=False)
    assert RunDir(tmp_path / "parallel" / "seed0").metrics_path.stat().st_mtime_ns == stamp


def test_a_run_that_fails_in_its_process_fails_the_reproduction_with_its_own_error(tmp_path):
    configs = {
        "diverges": tiny_config(train={"steps": 60, "lr": 1e9, "divergence_patience": 2}),
        "fine": tiny_config(train={"steps": 4}),
    }
    with pytest.raises(DivergedError, match="diverged"):
        train_in_parallel(configs, tmp_path, jobs=2, threads=1, show_progress=False)


def test_the_progress_of_runs_side_by_side_weights_each_step_by_its_cost():
    """A reproduction's long runs and short runs share one bar: a step of a wider, deeper
    model on longer prompts counts for more, so the time left is not read off a step count."""
    small = tiny_config()
    wider = tiny_config(model={"d_model": 64})
    deeper = tiny_config(model={"n_layers": 4})
    longer = tiny_config(task={"n_points": 16})
    assert cpu_step_seconds(small) < min(cpu_step_seconds(wider), cpu_step_seconds(deeper))
    assert cpu_step_seconds(small) < cpu_step_seconds(longer)


def test_reproduce_with_jobs_trains_the_runs_side_by_side_and_shows_their_progress(tmp_path):
    args = ["reproduce", "bursty-icl", "--scale", "smoke", "--jobs", "2", "--threads", "1"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "training 4 runs, 2 at a time: 100%, runs 4/4 done" in result.output  # piped
    record = recorded_verdict(tmp_path, "bursty-icl", "smoke")
    serial = reproduce("bursty-icl", tmp_path / "serial", "smoke", show_progress=False)
    assert record["numbers"] == serial.numbers  # the same runs, whichever way trained


def test_a_directory_holding_another_configs_run_is_refused_not_continued(tmp_path):
    """A rerun after a reproduction's settings changed must not continue the old run under the
    new settings (one run, two configs); a longer run of the same config is continued."""
    trained(tiny_config(train={"steps": 4}), tmp_path / "run", show_progress=False)
    changed = tiny_config(task={"noise_std": 0.5}, train={"steps": 8, "lr": 1e-3})
    with pytest.raises(ConfigError, match=r"another config \(task.noise_std, train.lr differ\)"):
        trained(changed, tmp_path / "run", show_progress=False)
    with pytest.raises(ConfigError, match="another config"):
        train_in_parallel({"run": changed}, tmp_path, jobs=2, show_progress=False)
    longer = trained(tiny_config(train={"steps": 8}), tmp_path / "run", show_progress=False)
    assert longer.read_info()["steps"] == 8
