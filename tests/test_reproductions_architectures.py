"""Architecture reproductions: Zoology's recall vs state size and ICLL at equal parameter counts.
Their decisions are tested from tables in test_reproduction_decisions.py; here, what their runs
produce at smoke scale, their helpers, and the documented CPU-scale runs (slow)."""

from __future__ import annotations

import pytest

from iclab.evaluation.curves import CurvePoint
from iclab.reproductions import architectures as module
from iclab.reproductions import reproduce
from iclab.run import RunDir
from reproduction_checks import recorded_verdict, smoke_runs


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Both reproductions at smoke scale, run once for this module: the out directory."""
    return smoke_runs(tmp_path_factory, ("mqar-state", "icll-architectures"))


def test_recall_state_sizes_are_the_kv_cache_for_attention_and_fixed_for_linear_attention():
    setting = module.RECALL["smoke"]
    pairs, n_points = 4, setting.pairs[4]
    for mixer, expected in (
        ("softmax", 2 * 16 * n_points),  # a KV cache: 2·E·t per layer
        ("linear_attention", 8 * 8 + 8 + 8 * 3),  # E²/H + E + E·3, whatever t
    ):
        model = setting.mixers[mixer]
        config = setting.runs.config(task={"n_pairs": pairs, "n_points": n_points}, model=model)
        assert module.state_size(config, model["d_model"], n_points) == expected


def test_the_recall_comparison_trains_every_mixer_at_every_pair_count_for_every_seed(smoke):
    numbers = recorded_verdict(smoke, "mqar-state", "smoke")["numbers"]
    setting = module.RECALL["smoke"]
    assert len(setting.seeds) > 1  # the smoke scale goes through the seeds' decision
    for mixer in setting.mixers:
        assert numbers[f"{mixer}_state"] > 0
        for seed in setting.seeds:
            for pairs in setting.pairs:
                assert 0.0 <= numbers[f"seed{seed}_{mixer}_pairs{pairs}"] <= 1.0
                run = RunDir(smoke / "mqar-state" / f"seed{seed}" / f"{mixer}-pairs{pairs}")
                assert run.read_info()["status"] == "completed"
                assert run.load_config().train.seed == seed


def test_language_comparison_evaluates_every_architecture_on_the_same_prompts(smoke):
    numbers = recorded_verdict(smoke, "icll-architectures", "smoke")["numbers"]
    root = smoke / "icll-architectures"
    for seed in module.LANGUAGE["smoke"].seeds:
        table = (root / f"seed{seed}" / "curves.csv").read_text().splitlines()[1:]
        learners = {row.split(",")[0] for row in table}
        assert learners == {"transformer", "lstm", "ngram(n=1)", "ngram(n=2)"}
        low = numbers[f"seed{seed}_transformer_minus_lstm_ci_low"]
        high = numbers[f"seed{seed}_transformer_minus_lstm_ci_high"]
        assert low <= numbers[f"seed{seed}_transformer_minus_lstm"] <= high
        run = RunDir(root / f"seed{seed}" / "lstm")
        assert run.load_config().train.seed == seed
    params = [numbers["transformer_params"], numbers["lstm_params"]]
    assert max(params) / min(params) < 1.1  # equal sizes, within target_params' 5% each


def point(learner: str, k: int, mean: float, half: float, n: int) -> CurvePoint:
    return CurvePoint(learner, "accuracy", "none", k, mean, mean - half, mean + half, n)


def test_pooled_accuracy_weights_positions_by_their_prompts():
    mean, half = module.pooled({3: point("m", 3, 1.0, 0.1, 30), 5: point("m", 5, 0.0, 0.3, 10)})
    assert mean == pytest.approx(0.75) and half == pytest.approx(0.15)


@pytest.mark.slow
def test_mqar_state_at_cpu_scale(tmp_path):
    """The documented CPU-scale run (19.6 minutes, one thread, the machine shared with two other
    runs; reproduced in three seeds): docs/REPRODUCTIONS.md. Measured: attention 1.000 at 1, 2
    and 4 pairs in every seed; gla 1.000 → 0.17, 0.15, 0.17 at 4 pairs; linear attention 1.000
    → 0.44, 0.67, 0.12. Checked whatever the verdict: accuracies are accuracies, and
    attention's KV cache at 32 tokens outgrows the small fixed states."""
    reproduce("mqar-state", tmp_path, "cpu", show_progress=False)
    numbers = recorded_verdict(tmp_path, "mqar-state", "cpu")["numbers"]
    setting = module.RECALL["cpu"]
    for seed in setting.seeds:
        for mixer in setting.mixers:
            assert all(0.0 <= numbers[f"seed{seed}_{mixer}_pairs{p}"] <= 1.0 for p in setting.pairs)
    assert numbers["softmax_state"] > max(numbers["gla_state"], numbers["linear_attention_state"])


@pytest.mark.slow
def test_icll_architectures_at_cpu_scale(tmp_path):
    """The documented CPU-scale run (14.0 minutes with --jobs 2, three seeds; inconclusive:
    seed 1's lead over linear attention is not above 0): docs/REPRODUCTIONS.md. Measured:
    late-k accuracy transformer 0.806-0.812, linear attention 0.796-0.802, mamba 0.678-0.687,
    lstm 0.538-0.540 (unigram 0.459, bigram 0.809). Checked whatever the verdict: the four
    architectures are of equal size."""
    reproduce("icll-architectures", tmp_path, "cpu", show_progress=False)
    numbers = recorded_verdict(tmp_path, "icll-architectures", "cpu")["numbers"]
    params = [numbers[f"{name}_params"] for name in module.ARCHITECTURES]
    assert max(params) / min(params) < 1.1
