"""The config loader, fuzzed: whatever a config holds (the shipped presets with random edits:
huge, negative, non-finite, mistyped or deeply nested values, keys deleted or added; or random
YAML text), loading it gives a valid ``RunConfig`` or raises ``ConfigError``, never another
exception, and never hangs or exhausts memory.

``make test`` runs a fixed, derandomized budget; ``ICLAB_FUZZ_EXAMPLES=10000`` runs the long
fuzz (every test gets that many examples).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from iclab.config import PRESETS_DIR, RunConfig, build_config, load_config
from iclab.errors import ConfigError
from iclab.io import parse_yaml, read_yaml

EXAMPLES = int(os.environ.get("ICLAB_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PRESETS = {path.stem: read_yaml(path) for path in sorted(PRESETS_DIR.glob("*.yaml"))}

SPECS = st.sampled_from(
    [
        "knn(k=-1)",
        "knn(k=1000000000000)",
        "ridge(alpha=1.0e+400)",
        "ridge(alpha=-1)",
        "softmax(positions=rotary)",
        "linear_attention(form=chunked, chunk=0)",
        "mamba(d_state=1000000000)",
        "scale_inputs(factor=.nan)",
        "all",
        "bogus(x=1)",
        "knn(k=[[[1]]])",
        "least_squares(",
        "",
    ]
)
NUMBERS = st.sampled_from(
    [0, 1, 2, -1, 7, 2**31, 2**63, 10**9, 10**12, 10**400, -(10**30), 1e9, 1e308, 0.5]
)
SCALARS = (
    NUMBERS
    | st.integers()
    | st.floats()
    | st.booleans()
    | st.none()
    | st.text(max_size=20)
    | st.sampled_from(["\ud800", "2024-01-01", "1e9", ".inf", "null"])
    | SPECS
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def nested(depth: int, leaf: Any, as_dict: bool) -> Any:
    """``leaf`` inside ``depth`` lists (or one-key mappings)."""
    for _ in range(depth):
        leaf = {"x": leaf} if as_dict else [leaf]
    return leaf


DEEP = st.builds(nested, st.integers(20, 3000), SCALARS, st.booleans())


def paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """The key paths in ``data`` (sections, values, list items) down to a preset's depth."""
    found = [prefix]
    if len(prefix) < 5 and isinstance(data, dict):
        found += [path for key, value in data.items() for path in paths(value, (*prefix, key))]
    if len(prefix) < 5 and isinstance(data, list):
        found += [path for i, value in enumerate(data) for path in paths(value, (*prefix, i))]
    return found


@st.composite
def mutated_presets(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A shipped preset with one to four random edits: a value replaced (by a scalar, a small
    structure or a deep nesting), a key deleted, or an unknown key added."""
    name = draw(st.sampled_from(sorted(PRESETS)))
    data = yaml.safe_load(yaml.safe_dump(PRESETS[name]))  # a fresh copy
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(paths(data)))
        edit = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if not path:
            continue
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        if edit == "delete":
            del parent[path[-1]]
        elif edit == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(VALUES)
        else:
            parent[path[-1]] = draw(VALUES | DEEP | SCALARS)
    return name, data


def check_loads(load) -> None:
    """``load()`` gives a valid ``RunConfig`` or raises ``ConfigError``; a config it gives is
    written to YAML and read back as the same config, as a run directory's config.yaml is."""
    try:
        config = load()
    except ConfigError:
        return
    assert isinstance(config, RunConfig)
    again = build_config(parse_yaml(config.to_yaml(), "config.yaml"), source="config.yaml")
    assert again.digest() == config.digest()


def load_text(text: str | bytes) -> RunConfig:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzzed.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "replace"))
        return load_config(path)


@FUZZ
@given(mutated_presets())
def test_mutated_presets_load_or_raise_config_error(preset):
    name, data = preset
    check_loads(lambda: build_config(data, source=name))


@FUZZ
@given(mutated_presets())
def test_mutated_preset_files_load_or_raise_config_error(preset):
    _, data = preset
    try:
        text = yaml.safe_dump(data, sort_keys=False)
    except RecursionError:  # too deep for the dumper; deep text is fuzzed below
        assume(False)
    check_loads(lambda: load_text(text))


YAML_CHARACTERS = "&*[]{}:-,!|>'\"#%@`?<= \n\t.0123456789eE+abcxyz_~"


@st.composite
def edited_preset_texts(draw: st.DrawFn) -> bytes:
    """A preset file's bytes with random characters inserted, deleted or replaced, and YAML
    written from scratch (anchors, aliases, tags, brackets, odd bytes)."""
    text = (PRESETS_DIR / f"{draw(st.sampled_from(sorted(PRESETS)))}.yaml").read_bytes()
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        piece = draw(st.text(YAML_CHARACTERS, max_size=6)).encode() or bytes(
            [draw(st.integers(0, 255))]
        )
        cut = draw(st.integers(0, 3))
        text = text[:at] + piece + text[at + cut :]
    return text


def deep_text(depth: int, brackets: str) -> str:
    return "train: " + brackets[0] * depth + brackets[1] * depth


DEEP_TEXTS = st.builds(deep_text, st.integers(20, 3000), st.sampled_from(["[]", "{}"]))


@FUZZ
@given(
    edited_preset_texts()
    | st.text(YAML_CHARACTERS, max_size=200)
    | st.binary(max_size=200)
    | DEEP_TEXTS
)
def test_random_yaml_text_loads_or_raises_config_error(text):
    check_loads(lambda: load_text(text))


@FUZZ
@given(
    st.lists(
        st.text(YAML_CHARACTERS + "=", max_size=30)
        | SPECS.map(lambda spec: f"eval.algorithms=[{spec}]"),
        max_size=3,
    )
)
def test_random_overrides_load_or_raise_config_error(overrides):
    check_loads(lambda: load_config("quickstart", overrides))
