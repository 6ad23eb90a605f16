"""The contract every registered probe keeps, checked for all of them at once (as
``test_task_contract.py`` does for tasks).

Probe-specific claims (a planted feature is found, a GD model aligns with GD, an induction
pattern scores 1) live in each probe's own test file; this file makes sure a new probe cannot
forget the shared rules of ``iclab.probes``: ``probe_run`` on a trained run writes
``summary.json`` with the result's keys and finite numbers or strings, one CSV per table and one
PNG per figure (and nothing else, leaving no figure open), gives the same result again for the
same run and spec, and a probe that does not suit a model refuses it with a ``ConfigError``
naming the probe, before writing anything. The loops run over ``PROBES``: a new registered probe
is covered without editing this file.
"""

from __future__ import annotations

import csv
import json
import math
import time

import matplotlib.pyplot as plt
import pytest
import torch

from conftest import model_for, tiny_config
from iclab.config import ModelConfig, TaskConfig
from iclab.errors import ConfigError, UserError
from iclab.probes import PROBES, build_probe, probe_run
from iclab.probes.run_probe import probe_dir
from iclab.run import RunDir, load_trained_model, train_run
from iclab.specs import resolve_spec

PROBE_NAMES = PROBES.names()
STEPS = 4  # a trained run, not a good one: the contract, not the findings
MQAR = {"name": "mqar", "n_points": 16, "vocab_size": 16, "n_pairs": 4, "n_queries": 4}
# Runs a probe is tried on, in order, until one suits it: the d = 3 linear-regression softmax
# run (tiny_config's) first; the others are trained only when some probe refuses it.
CANDIDATE_RUNS = {
    "regression": {},
    "tokens": {"task": MQAR, "eval": {"algorithms": ["mqar_lookup"]}},
}
BANDIT = {"task": {"name": "bandit", "n_points": 8}, "eval": {"algorithms": ["thompson"]}}


class TrainedRuns:
    """Tiny runs trained on first use, once per module."""

    def __init__(self, root) -> None:
        self.root, self.paths = root, {}

    def __getitem__(self, name: str):
        if name not in self.paths:
            sections = {**CANDIDATE_RUNS, "decisions": BANDIT}[name]
            config = tiny_config(train={"steps": STEPS}, **sections)
            train_run(config, self.root / name, show_progress=False)
            self.paths[name] = self.root / name
        return self.paths[name]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> TrainedRuns:
    return TrainedRuns(tmp_path_factory.mktemp("probe-contract"))


def refusal_of(name: str, run) -> ConfigError | None:
    """The probe's ``check_applies`` error for the run's model and task, if it refuses them."""
    model, task = load_trained_model(run), RunDir(run).load_config().task.build()
    try:
        build_probe(name).check_applies(model, task)
    except ConfigError as error:
        return error
    return None


def check_written(result, run, spec: str) -> None:
    """summary.json, one CSV per table and one PNG per figure, matching the result."""
    directory = probe_dir(RunDir(run), spec)
    assert result.summary, f"{spec} has no headline numbers"
    assert result.tables and result.figures, f"{spec} returns no table or no figure"
    expected_files = {"summary.json"}
    expected_files |= {f"{table}.csv" for table in result.tables}
    expected_files |= {f"{figure}.png" for figure in result.figures}
    assert {path.name for path in directory.iterdir()} == expected_files

    summary = json.loads((directory / "summary.json").read_text())
    assert summary.pop("probe") == spec
    assert summary.keys() == result.summary.keys()
    for key, value in summary.items():
        assert isinstance(value, (int, float, str)), f"{spec} summary {key} = {value!r}"
        assert not isinstance(value, float) or math.isfinite(value), f"{spec} summary {key}"
        assert value == result.summary[key], f"{spec} summary {key} was not written as is"

    for table, rows in result.tables.items():
        assert rows, f"{spec} table {table} is empty"
        assert all(row.keys() == rows[0].keys() for row in rows), f"{spec} table {table}"
        with open(directory / f"{table}.csv", newline="") as handle:
            reader = csv.DictReader(handle)
            written = list(reader)
        assert reader.fieldnames == list(rows[0]), f"{spec} table {table}'s columns"
        assert written == [{key: str(value) for key, value in row.items()} for row in rows]

    for figure in result.figures:
        image = plt.imread(directory / f"{figure}.png")  # decodes: a real PNG
        assert image.ndim == 3 and min(image.shape[:2]) > 10, f"{spec} figure {figure}"


@pytest.mark.parametrize("name", PROBE_NAMES)
def test_probe_run_writes_its_result_and_repeats_it(name, runs):
    refused = []
    for run_name in CANDIDATE_RUNS:
        run = runs[run_name]
        refusal = refusal_of(name, run)
        if refusal is None:
            break
        assert name in str(refusal), f"{name}'s refusal does not name it: {refusal}"
        with pytest.raises(ConfigError):
            probe_run(run, name)
        assert not probe_dir(RunDir(run), name).exists(), f"{name} wrote before refusing"
        refused.append(f"{run_name}: {refusal}")
    else:
        pytest.fail(f"{name} refuses every candidate run: {refused}")

    open_figures = set(plt.get_fignums())
    started = time.perf_counter()
    result = probe_run(run, name)  # default options
    seconds = time.perf_counter() - started
    print(f"{name} on the {run_name} run: {seconds:.2f} s")
    assert set(plt.get_fignums()) == open_figures, f"{name} leaves figures open"
    check_written(result, run, name)

    again = probe_run(run, name)
    assert again.summary == result.summary, f"{name} is not a function of the run and spec"
    assert same_tables(again.tables, result.tables), f"{name} is not a function of the run"


@pytest.mark.parametrize("name", PROBE_NAMES)
def test_a_probe_runs_on_a_decision_run_or_refuses_it_naming_itself(name, runs):
    """Decision episodes (histories of actions and rewards) are the kind a probe author is
    most likely to forget: a probe either runs on a bandit run or refuses it cleanly."""
    run = runs["decisions"]
    refusal = refusal_of(name, run)
    if refusal is not None:
        assert name in str(refusal), f"{name}'s refusal does not name it: {refusal}"
        with pytest.raises(ConfigError):
            probe_run(run, name)
        assert not probe_dir(RunDir(run), name).exists(), f"{name} wrote before refusing"
        return
    check_written(probe_run(run, name), run, name)


def same_tables(first: dict, second: dict) -> bool:
    """Equal tables, NaN equal to NaN (an R² of a constant target, say)."""

    def cell(value):
        return "nan" if isinstance(value, float) and math.isnan(value) else value

    def cells(tables):
        return {
            name: [{k: cell(v) for k, v in row.items()} for row in rows]
            for name, rows in tables.items()
        }

    return cells(first) == cells(second)


# Untrained models the probes are asked about: a mixer with softmax attention and one without,
# on a regression, a classification and a token task.
MODELS = [
    (mixer, task)
    for mixer in ("softmax", "gru")
    for task in (
        {"name": "linear_regression", "n_dims": 3, "n_points": 8},
        {"name": "linear_classification", "n_dims": 3, "n_points": 8},
        MQAR,
    )
]


@pytest.mark.parametrize("name", PROBE_NAMES)
def test_a_probe_accepts_a_model_or_refuses_it_with_a_config_error_naming_itself(name):
    probe = build_probe(name)
    for mixer, task_options in MODELS:
        task_config = TaskConfig(**task_options)
        torch.manual_seed(0)
        model = model_for(ModelConfig(mixer=mixer, n_layers=1, d_model=16, n_heads=2), task_config)
        try:
            probe.check_applies(model.eval(), task_config.build())
        except ConfigError as refusal:
            assert isinstance(refusal, UserError)
            assert name in str(refusal), f"{name}'s refusal does not name it: {refusal}"


@pytest.mark.parametrize("name", PROBE_NAMES)
def test_every_probe_is_documented_and_its_spec_round_trips(name):
    cls = PROBES.get(name)
    assert cls.paper and cls.__doc__ and cls.__doc__.strip()
    fields = cls.Options.model_fields
    for field, info in fields.items():
        assert info.description, f"{name} option {field} has no description"
        assert not info.is_required(), f"{name} option {field} has no default"
    assert str(resolve_spec(name, PROBES, "probe")) == name
    every = cls.Options(**{field: info.default for field, info in fields.items()})
    written = str(resolve_spec(name, PROBES, "probe")._replace(options=every))
    assert resolve_spec(written, PROBES, "probe").options == every
