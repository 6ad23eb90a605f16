"""Algorithm specs: ``name(option=value, ...)`` strings, parsed, applied and named."""

from __future__ import annotations

import pytest

from iclab.algorithms.base import build_algorithm
from iclab.specs import parse_spec, split_specs
from iclab.tasks import make_task


def test_specs_parse_names_and_yaml_valued_options():
    assert parse_spec("knn") == ("knn", {})
    assert parse_spec(" ridge(alpha=0.5) ") == ("ridge", {"alpha": 0.5})
    assert parse_spec("gd(steps=2, lr=null, name=x)") == (
        "gd",
        {"steps": 2, "lr": None, "name": "x"},
    )


@pytest.mark.parametrize("bad", ["knn(", "knn(k)", "2nn", "knn(k=1))", "knn(=1)"])
def test_malformed_specs_are_clear_errors(bad):
    with pytest.raises(ValueError, match="must look like"):
        parse_spec(bad)


def test_split_keeps_commas_inside_parentheses():
    assert split_specs("a, b(x=1, y=2),c") == ["a", "b(x=1, y=2)", "c"]
    assert split_specs("") == []


def test_built_algorithm_is_named_by_its_spec_and_gets_its_options():
    task = make_task("linear_regression", 3)
    ridge = build_algorithm("ridge(alpha = 2)", task)
    assert ridge.name == "ridge(alpha=2)" and ridge.options.alpha == 2.0


def test_unknown_option_lists_the_allowed_ones():
    with pytest.raises(ValueError, match=r"ridge\(beta=1\).*alpha=0.1"):
        build_algorithm("ridge(beta=1)", make_task("linear_regression", 3))


def test_lists_in_options_stay_in_one_spec():
    assert split_specs("linear_probe(positions=[1, 2]), knn(k=3)") == [
        "linear_probe(positions=[1, 2])",
        "knn(k=3)",
    ]
    assert parse_spec("linear_probe(positions=[1, 2])")[1] == {"positions": [1, 2]}
