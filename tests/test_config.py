"""Config validation: every error names the field, the bad value and what is allowed."""

from __future__ import annotations

import pytest
import yaml

from iclab.config import ConfigError, RunConfig, apply_overrides, build_config, load_config


def error_of(data: dict, overrides: list[str] = ()) -> str:
    with pytest.raises(ConfigError) as caught:
        build_config(data, overrides, source="cfg.yaml")
    return str(caught.value)


def test_unknown_key_is_rejected_with_its_path():
    message = error_of({"train": {"stepz": 10}})
    assert "cfg.yaml: train.stepz: unknown key" in message


def test_unknown_task_name_lists_registered_tasks():
    message = error_of({"task": {"name": "linear_regresion"}})
    assert "task" in message and "'linear_regresion'" in message
    assert "registered: " in message and "linear_regression," in message


def test_task_option_is_checked_against_the_family():
    assert "noise_std" in error_of({"task": {"noise_std": -1.0}})
    assert "unknown key" in error_of({"task": {"noise_sd": 0.1}})


def test_out_of_range_value_names_field_and_value():
    message = error_of({"train": {"lr": -0.1}})
    assert "train.lr" in message and "greater than 0" in message and "-0.1" in message


def test_literal_field_lists_allowed_values():
    message = error_of({"model": {"norm": "batchnorm"}})
    assert "model.norm" in message and "'layernorm'" in message and "'batchnorm'" in message


def test_unknown_mixer_or_mixer_option_names_the_field_and_what_exists():
    message = error_of({"model": {"mixer": "mambo"}})
    assert "model.mixer" in message and "unknown mixer 'mambo'" in message and "lstm" in message
    message = error_of({"model": {"layers": "lstm, softmax(positions=sinusoid)"}})
    assert "model.layers" in message and "model.layers.1" in message and "positions" in message


def test_layers_set_the_depth_and_must_agree_with_n_layers():
    config = build_config({"model": {"layers": "lstm, softmax, lstm", "d_model": 32}})
    assert config.model.n_layers == 3
    assert [str(spec) for spec in config.model.layer_specs] == ["lstm", "softmax", "lstm"]
    message = error_of({"model": {"layers": ["lstm", "softmax"], "n_layers": 4}})
    assert "n_layers (4) differs from the 2 mixers" in message


def test_heads_must_divide_width():
    assert "multiple of 4" in error_of({"model": {"d_model": 30, "n_heads": 4}})
    assert "multiple of 8" in error_of(
        {"model": {"d_model": 36, "mixer": "softmax(positions=rotary)", "n_heads": 4}}
    )
    assert (
        build_config({"model": {"d_model": 30, "n_heads": 4, "mixer": "lstm"}}).model.d_model == 30
    )


def test_unknown_algorithm_lists_registered_ones():
    message = error_of({"eval": {"algorithms": ["least_squares", "lasso9"]}})
    assert "eval.algorithms" in message and "'lasso9'" in message and "least_squares" in message


def test_curriculum_cannot_exceed_task_size():
    message = error_of(
        {"task": {"n_dims": 5}, "train": {"curriculum": {"dims": {"start": 2, "end": 8}}}}
    )
    assert "train.curriculum.dims.end (8) exceeds task.n_dims (5)" in message


def test_dotted_overrides_set_nested_fields_with_yaml_types():
    config = build_config({}, ["train.steps=2000", "task.noise_std=0.5", "train.grad_clip=null"])
    assert config.train.steps == 2000
    assert config.task.options == {"noise_std": 0.5}
    assert config.train.grad_clip is None


def test_override_of_unknown_field_is_rejected():
    assert "train.step: unknown key" in error_of({}, ["train.step=5"])


def test_malformed_override_says_expected_shape():
    assert "section.field=value" in error_of({}, ["train.steps"])


def test_dotted_overrides_fill_an_optional_section_left_null():
    config = build_config(
        {"train": {"stop_at": None}}, ["train.stop_at.k=10", "train.stop_at.target=0.05"]
    )
    assert (config.train.stop_at.k, config.train.stop_at.target) == (10, 0.05)
    assert "train.stop_at.target: Field required" in error_of({}, ["train.stop_at.k=10"])


def test_override_into_a_value_is_rejected():
    with pytest.raises(ConfigError, match=r"train\.steps is a value, not a section"):
        apply_overrides({"train": {"steps": 3}}, ["train.steps.x=1"])


def test_resolved_config_round_trips_through_yaml(tmp_path):
    config = build_config({"name": "x", "task": {"n_dims": 4, "noise_std": 0.25}})
    path = tmp_path / "resolved.yaml"
    path.write_text(config.to_yaml())
    again = load_config(path)
    assert again == config
    assert again.digest() == config.digest()


def test_missing_file_names_path_and_presets(tmp_path):
    with pytest.raises(ConfigError, match=r"no config file .*presets: .*quickstart"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(path)


def test_run_name_defaults_to_file_stem(tmp_path):
    path = tmp_path / "my-experiment.yaml"
    path.write_text(yaml.safe_dump({"train": {"steps": 3}}))
    assert load_config(path).name == "my-experiment"


def test_quickstart_preset_is_valid():
    config = load_config("quickstart")
    assert isinstance(config, RunConfig)
    assert (config.task.n_dims, config.task.n_points) == (5, 21)


# --- hostile files: each fails fast as a ConfigError naming the file (and the field) -----------

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)
HOSTILE = {
    "billion laughs": (LAUGHS, r"more than 100,000 values with aliases expanded"),
    "3000 levels": ("train: " + "[" * 3000 + "]" * 3000, r"nested more than 32 levels deep"),
    "a date": ("train:\n  steps: 2024-01-01\n", r"train\.steps: .*got '2024-01-01'"),
    "a python tag": ("train: !!python/object:os.system {}\n", r"not valid YAML"),
    "n_layers 1e9": ("model:\n  n_layers: 1000000000\n", r"model\.n_layers: must be at most 256"),
    "n_dims 1e6": ("task:\n  n_dims: 1000000\n", r"task\.n_dims: must be at most 1,024"),
    "a huge pool": (
        "task:\n  name: finite_pool_regression\n  pool_size: 100000000\n",
        r"pool_size × n_dims = .* must be at most",
    ),
    "lr inf": ("train:\n  lr: .inf\n", r"train\.lr: Input should be a finite number"),
    "weight decay nan": ("train:\n  weight_decay: .nan\n", r"train\.weight_decay: .*finite"),
    "betas out of range": ("train:\n  betas: [5, -3]\n", r"train\.betas\.0: .*less than 1"),
    "knn k=-1": ("eval:\n  algorithms: [knn(k=-1)]\n", r"knn\(k=-1\)'?: k: .*greater than"),
    "a bogus reference": ("eval:\n  reference: bogus\n", r"eval\.reference: 'bogus' is none"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_config_file_is_a_config_error_naming_it(tmp_path, case):
    text, message = HOSTILE[case]
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"hostile\.yaml: .*{message}"):
        load_config(path)


def test_files_that_are_not_yaml_text_are_config_errors_naming_them(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"train:\n  lr: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"latin\.yaml: not UTF-8 text"):
        load_config(latin)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ConfigError, match=r"folder: a directory, not a YAML file"):
        load_config(tmp_path / "folder")
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * 1_100_000)
    with pytest.raises(ConfigError, match=r"huge\.yaml: larger than 1,000,000 bytes"):
        load_config(huge)


def test_size_limits_are_lifted_by_the_environment(monkeypatch):
    monkeypatch.setenv("ICLAB_NO_SIZE_LIMITS", "1")
    config = build_config({"model": {"n_layers": 300, "d_model": 8, "n_heads": 1}})
    assert config.model.n_layers == 300  # validated without building 300 blocks


def test_lr_auto_is_each_mixers_tuned_rate_and_the_config_records_the_number():
    from iclab.models.mixers import MIXERS

    for name, cls in MIXERS:
        config = build_config({"model": {"mixer": name}, "train": {"lr": "auto"}})
        assert config.train.lr == cls.learning_rate, name
        assert yaml.safe_load(config.to_yaml())["train"]["lr"] == cls.learning_rate
    rates = {name: cls.learning_rate for name, cls in MIXERS}
    hybrid = build_config({"model": {"layers": "mamba, softmax"}, "train": {"lr": "auto"}})
    assert hybrid.train.lr == min(rates["mamba"], rates["softmax"])
    # an option that changes how fast the mixer learns changes its rate: softmax's convolution
    convolved = build_config({"model": {"mixer": "softmax(short_conv=2)"}, "train": {"lr": "auto"}})
    assert convolved.train.lr == 3e-3 != rates["softmax"]
    with pytest.raises(ConfigError, match=r"train\.lr: a number or auto, got 'fast'"):
        build_config({"train": {"lr": "fast"}})
    with pytest.raises(ConfigError) as invalid_model:
        build_config({"model": {"mixer": "nosuch"}, "train": {"lr": "auto"}})
    assert "model.mixer: unknown mixer 'nosuch'" in str(invalid_model.value)
    assert "train.lr" not in str(invalid_model.value)  # no second error about what follows


@pytest.mark.parametrize(
    ("file_name", "name"),
    [("my config[2].yaml", "my-config-2"), ("]z.yaml", "z"), ("[].yaml", "run")],
)
def test_a_config_files_name_becomes_a_valid_run_name(tmp_path, file_name, name):
    path = tmp_path / file_name
    path.write_text("train:\n  steps: 3\n")
    assert load_config(path).name == name
