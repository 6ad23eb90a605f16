"""`iclab compare`: runs of one task on the very same prompts, with paired run-vs-run
differences; runs of different tasks overlaid."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from conftest import tiny_config
from iclab.cli import app
from iclab.errors import UserError
from iclab.evaluation.curves import read_curves_csv, read_differences_csv
from iclab.kinds import KINDS
from iclab.report.compare import default_ks, never_learned, pair_sentences
from iclab.run import evaluate_run, train_run
from iclab.run.compare import compare_runs

METRIC = KINDS["regression"].metric


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny runs of one task (one wider), and an exact copy of the first."""
    root = tmp_path_factory.mktemp("runs")
    for name, sections in (("small", {}), ("wide", {"model": {"d_model": 48}})):
        train_run(tiny_config(train={"steps": 3}, **sections), root / name, show_progress=False)
    shutil.copytree(root / "small", root / "twin")
    return root


def test_models_are_named_after_their_runs_and_compared_to_the_reference_on_the_same_prompts(
    runs, tmp_path
):
    comparison = compare_runs([runs / "small", runs / "wide"], tmp_path / "cmp")
    learners = list(dict.fromkeys(p.learner for p in comparison.evaluation.curves))
    assert learners == ["small", "wide", "least_squares", "averaging"]
    assert comparison.reference == "small"
    pairs = {(d.learner, d.reference) for d in comparison.evaluation.differences}
    assert pairs == {("wide", "small"), ("least_squares", "small"), ("averaging", "small")}
    assert [run.label for run in comparison.runs] == ["small", "wide"]
    wide = comparison.runs[1]
    assert wide.n_params > comparison.runs[0].n_params and wide.steps == 3
    assert wide.state_size == 2 * 2 * 48 * 16  # 2 layers of KV cache, 2·E·t, t = 16 tokens
    written = read_differences_csv(tmp_path / "cmp" / "differences.csv")
    assert written == comparison.evaluation.differences


def test_a_run_compared_with_its_exact_copy_differs_by_exactly_zero(runs, tmp_path):
    comparison = compare_runs([runs / "small", runs / "twin"], tmp_path / "cmp")
    twin = [d for d in comparison.evaluation.differences if d.learner == "twin"]
    assert twin and all(d.mean == d.ci_low == d.ci_high == 0.0 for d in twin)
    lines = pair_sentences(comparison.evaluation.differences, ["small", "twin"], [3], METRIC)
    assert lines == [
        "twin − small at k=3: +0.000 [+0.000, +0.000], no difference the prompts can tell"
    ]


def test_the_reference_is_chosen_by_name_and_an_unknown_one_is_refused(runs, tmp_path):
    comparison = compare_runs([runs / "small", runs / "wide"], tmp_path / "cmp", reference="wide")
    assert {d.reference for d in comparison.evaluation.differences} == {"wide"}
    with pytest.raises(UserError, match="--reference 'nope' is none of the compared runs"):
        compare_runs([runs / "small", runs / "wide"], tmp_path / "cmp", reference="nope")


def test_default_ks_are_where_the_models_differ_most_and_d_and_2d(runs, tmp_path):
    comparison = compare_runs([runs / "small", runs / "wide"], tmp_path / "cmp")
    curves = comparison.evaluation.curves
    ks = default_ks(curves, ["small", "wide"], n_dims=3)
    means = {}
    for p in curves:
        if p.learner in ("small", "wide"):
            means.setdefault(p.k, []).append(p.mean)
    widest = max(means, key=lambda k: max(means[k]) - min(means[k]))
    assert ks == sorted({widest, 3, 6} & set(means))


def test_an_untrained_model_is_flagged_as_never_better_than_ignoring_its_context(runs, tmp_path):
    comparison = compare_runs([runs / "small", runs / "wide"], tmp_path / "cmp")
    curves = comparison.evaluation.curves
    assert never_learned(curves, "small", 1.0, METRIC)  # 3 training steps
    assert not never_learned(curves, "least_squares", 1.0, METRIC)  # exact from k = d


def test_runs_of_different_tasks_are_overlaid_with_a_warning_and_no_pairs(runs, tmp_path):
    other = tmp_path / "d4"
    train_run(tiny_config(train={"steps": 2}, task={"n_dims": 4}), other, show_progress=False)
    with (
        pytest.raises(UserError, match="has not been evaluated"),
        pytest.warns(UserWarning, match="different tasks"),
    ):
        compare_runs([runs / "small", other], tmp_path / "cmp")
    evaluate_run(runs / "small", ["eval.n_prompts=16"])
    evaluate_run(other, ["eval.n_prompts=16"])
    with pytest.warns(UserWarning, match="different tasks"):
        comparison = compare_runs([runs / "small", other], tmp_path / "cmp")
    assert not comparison.paired and comparison.evaluation.differences == []
    assert {"small", "d4"} <= {p.learner for p in comparison.evaluation.curves}


def test_cli_compare_answers_is_a_better_than_b_and_where_the_files_are(runs, tmp_path):
    out = tmp_path / "cmp"
    result = CliRunner().invoke(
        app,
        ["compare", str(runs / "small"), str(runs / "wide"), "--out", str(out), "--k", "1,3"],
        terminal_width=80,
    )
    assert result.exit_code == 0, result.output
    assert "wide − small at k=1:" in result.output and "wide − small at k=3:" in result.output
    assert "state" in result.output and "params" in result.output
    assert "nowhere better than a learner that ignores its context" in result.output
    assert {p.learner for p in read_curves_csv(out / "curves.csv")} >= {"small", "wide"}
    assert (out / "curves.png").exists()
    bad = CliRunner().invoke(app, ["compare", str(runs / "small"), "--k", "two"])
    assert bad.exit_code == 2 and "--k 'two'" in bad.output
