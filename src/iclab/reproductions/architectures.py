"""Architecture comparisons: Arora et al. 2023 (Zoology, multi-query associative recall against a
mixer's recurrent state) and Akyürek et al. 2024 (in-context language learning at equal size)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import NullFormatter

from iclab.config import RunConfig
from iclab.evaluation.curves import (
    CurvePoint,
    late_paired_difference,
    write_curves_csv,
    write_differences_csv,
)
from iclab.metrics import METRICS
from iclab.models.mixers import resolve_mixer
from iclab.report.plots import curves_figure, save_figure
from iclab.reproductions.base import (
    SMOKE_EVAL,
    SMOKE_TRAIN,
    Outcome,
    PresetChanges,
    Reproduction,
    Scale,
    Verdict,
    agreed,
    curve,
    evaluated_curves,
    late_average,
    named,
    register_reproduction,
    seeds_in,
    trained_all,
    trained_model,
)
from iclab.run import evaluate_config


def state_size(config: RunConfig, d_model: int, length: int) -> int:
    """Floats the whole stack carries per sequence after ``length`` tokens (Mixer.state_size)."""
    total = 0
    for spec in config.model.layer_specs:
        cls, options = resolve_mixer(spec)
        with torch.device("meta"):
            total += cls(d_model, config.model.n_heads, options).state_size(length)
    return total


def pooled(points: dict[int, CurvePoint]) -> tuple[float, float]:
    """Accuracy over every scored position (each k weighted by the prompts it scores) and the
    half-width of its 95% interval, taken as the weighted mean of the per-k half-widths: an
    upper bound, as if the positions of one prompt were perfectly correlated."""
    weight = sum(p.n_prompts for p in points.values())
    mean = sum(p.mean * p.n_prompts for p in points.values()) / weight
    half = sum((p.ci_high - p.ci_low) / 2 * p.n_prompts for p in points.values()) / weight
    return mean, half


# --- mqar-state --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecallSetting:
    """The runs of one scale: every mixer (its model section) at every pair count (``pairs``:
    n_points per count), each from ``runs``, once per training seed."""

    runs: PresetChanges
    pairs: dict[int, int]
    mixers: dict[str, dict[str, Any]]
    seeds: tuple[int, ...] = (0,)


ATTENTION = "softmax"
RECALL: dict[Scale, RecallSetting] = {
    # A vocabulary of 16, 2 and 4 pairs in 12 and 16 tokens, one layer, a few steps.
    "smoke": RecallSetting(
        runs=PresetChanges(
            "mqar",
            {
                "task": {"vocab_size": 16},
                "model": {"n_layers": 1},
                "train": SMOKE_TRAIN,
                "eval": {**SMOKE_EVAL, "algorithms": ["mqar_lookup"]},
            },
        ),
        pairs={2: 12, 4: 16},
        mixers={
            "softmax": {"mixer": "softmax", "d_model": 16, "n_heads": 2},
            "linear_attention": {"mixer": "linear_attention", "d_model": 8, "n_heads": 1},
        },
        seeds=(0, 1),
    ),
    # Vocabulary 64 (32 keys), 1, 2 and 4 pairs all queried in 32 tokens, 2000 steps, three
    # seeds: attention as the preset (width 64, 4 heads), the small-state mixers at width 8 (one
    # head). Measured while designing it (seed 0): attention solves 4 pairs by step 750 and
    # does not learn 8 pairs at this vocabulary in 6000 steps, with learned or rotary
    # positions; gla at width 16 still holds 4 pairs (its loss 0.12), at width 8 not 2 (2.05).
    "cpu": RecallSetting(
        runs=PresetChanges(
            "mqar",
            {
                "task": {"vocab_size": 64},
                "train": {"steps": 2000, "log_every": 100, "checkpoint_every": 1000},
                "eval": {"n_prompts": 512, "algorithms": ["mqar_lookup"]},
            },
        ),
        pairs={1: 32, 2: 32, 4: 32},
        mixers={
            "softmax": {"mixer": "softmax", "d_model": 64, "n_heads": 4},
            "linear_attention": {"mixer": "linear_attention", "d_model": 8, "n_heads": 1},
            "gla": {"mixer": "gla", "d_model": 8, "n_heads": 1},
        },
        seeds=(0, 1, 2),
    ),
    # Zoology's grid: vocabulary 8192, (tokens, pairs) = (64, 4), (128, 8), (256, 16).
    "paper": RecallSetting(
        runs=PresetChanges(
            "mqar",
            {
                "task": {"vocab_size": 8192},
                "train": {"steps": 20000, "batch_size": 64, "lr": 1.0e-3},
                "eval": {"algorithms": ["mqar_lookup"]},
            },
        ),
        pairs={4: 64, 8: 128, 16: 256},
        mixers={
            "softmax": {"mixer": "softmax", "d_model": 128, "n_heads": 2},
            "linear_attention": {"mixer": "linear_attention", "d_model": 64},
            "gla": {"mixer": "gla", "d_model": 64},
            "mamba": {"mixer": "mamba", "d_model": 64},
        },
        seeds=(0, 1, 2),
    ),
}
# Decided before the CPU run.
SOLVES = 0.9  # query accuracy attention must reach at every pair count
FALLS_OFF = 0.2  # drop, fewest → most pairs, of the best small-state mixer that counts
HOLDS_UP = 0.05  # a drop this small (from an accuracy ≥ LEARNED) means it does not fall off
LEARNED = 0.5  # the fewest pairs must be learned at least this well for a drop to mean anything


@register_reproduction("mqar-state")
class RecallState(Reproduction):
    """Attention recalls every key; a small recurrent state runs out as the pairs grow."""

    paper = "Arora et al. 2023 (Zoology), arXiv 2312.04927"
    claim = (
        "On multi-query associative recall, softmax attention is near-perfect at every number of "
        "key-value pairs, while mixers with a small fixed recurrent state (linear attention, "
        "gated linear attention) lose accuracy as the pairs outgrow what their state holds."
    )
    cpu_minutes = 7.9

    @staticmethod
    def decide(numbers: dict[str, float]) -> Outcome:
        return agreed(seed_outcome(numbers, seed) for seed in seeds_in(numbers, "attention_min"))

    @staticmethod
    def trainings(scale: Scale) -> dict[str, RunConfig]:
        setting = RECALL[scale]
        return {
            f"seed{seed}/{mixer}-pairs{pairs}": setting.runs.config(
                name=f"mqar-{mixer}-{pairs}-seed{seed}",
                task={"n_pairs": pairs, "n_queries": pairs, "n_points": n_points},
                model=model,
                train={"seed": seed},
            )
            for seed in setting.seeds
            for mixer, model in setting.mixers.items()
            for pairs, n_points in setting.pairs.items()
        }

    def run(self, out: Path, scale: Scale, show_progress: bool = True) -> Verdict:
        setting = RECALL[scale]
        fewest, most = min(setting.pairs), max(setting.pairs)
        configs = self.trainings(scale)
        runs = trained_all(configs, out, show_progress)
        accuracy: dict[tuple[int, str, int], tuple[float, float]] = {}
        states: dict[tuple[str, int], int] = {}
        numbers: dict[str, float] = {}
        for seed in setting.seeds:
            for mixer in setting.mixers:
                for pairs, n_points in setting.pairs.items():
                    key = f"seed{seed}/{mixer}-pairs{pairs}"
                    config, run = configs[key], runs[key]
                    accuracy[seed, mixer, pairs] = pooled(curve(evaluated_curves(run), "model"))
                    d_model = run.read_info().get("d_model", config.model.d_model)
                    states[mixer, pairs] = state_size(config, d_model, n_points)
            mine = {(m, p): a for (s, m, p), a in accuracy.items() if s == seed}
            numbers |= {f"seed{seed}_{m}_pairs{p}": a for (m, p), (a, _) in mine.items()}
            numbers |= seed_summary(mine, f"seed{seed}", fewest, most)
        numbers |= {f"{m}_state": float(states[m, most]) for m in setting.mixers}
        save_figure(recall_figure(over_seeds(accuracy), states, scale), out / "figure.png")
        return self.judged(
            numbers,
            scale,
            quantity="per training seed, query accuracy over all queries of the evaluation "
            "prompts, per mixer and pair count; the best small-state mixer is the most "
            f"accurate at {most} pairs, its drop is its accuracy at {fewest} pairs minus that "
            f"at {most}",
            threshold=f"per seed: reproduced when attention ≥ {SOLVES} at every pair count and "
            f"the best small-state mixer drops by ≥ {FALLS_OFF} from {fewest} to {most} pairs; "
            f"not reproduced when attention ≥ {SOLVES} and that mixer drops by < {HOLDS_UP} "
            f"from ≥ {LEARNED}; inconclusive otherwise (attention did not learn, or in "
            "between). Seeds that disagree: inconclusive",
        )


def seed_summary(
    accuracy: dict[tuple[str, int], tuple[float, float]], seed: str, fewest: int, most: int
) -> dict[str, float]:
    """One seed's decision numbers: attention's worst accuracy, and the start and drop of the
    small-state mixer most accurate at the most pairs."""
    mixers = dict.fromkeys(mixer for mixer, _ in accuracy)
    small = [mixer for mixer in mixers if mixer != ATTENTION]
    best = max(small, key=lambda mixer: accuracy[mixer, most][0])
    start, end = accuracy[best, fewest][0], accuracy[best, most][0]
    return {
        f"{seed}_attention_min": min(a for (m, _), (a, _) in accuracy.items() if m == ATTENTION),
        f"{seed}_best_small_state_fewest_pairs": start,
        f"{seed}_best_small_state_drop": start - end,
        f"{seed}_best_small_state_is_{best}": 1.0,
    }


def seed_outcome(numbers: dict[str, float], seed: str) -> Outcome:
    """One seed's outcome from its numbers (keys ``{seed}_...``)."""
    attention = numbers[f"{seed}_attention_min"]
    start = numbers[f"{seed}_best_small_state_fewest_pairs"]
    drop = numbers[f"{seed}_best_small_state_drop"]
    if attention >= SOLVES and drop >= FALLS_OFF:
        return "reproduced"
    if attention >= SOLVES and start >= LEARNED and drop < HOLDS_UP:
        return "not reproduced"
    return "inconclusive"


def over_seeds(
    accuracy: dict[tuple[int, str, int], tuple[float, float]],
) -> dict[tuple[str, int], tuple[float, float]]:
    """Per (mixer, pairs): the mean accuracy over seeds and half its range (the seeds' spread;
    with one seed, that seed's own interval)."""
    grouped: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for (_, mixer, pairs), value in accuracy.items():
        grouped.setdefault((mixer, pairs), []).append(value)
    summary = {}
    for key, values in grouped.items():
        means = [mean for mean, _ in values]
        spread = (max(means) - min(means)) / 2 if len(means) > 1 else values[0][1]
        summary[key] = (sum(means) / len(means), spread)
    return summary


def recall_figure(
    accuracy: dict[tuple[str, int], tuple[float, float]],
    states: dict[tuple[str, int], int],
    scale: str,
) -> plt.Figure:
    """Zoology's two views: accuracy vs pairs per mixer, and accuracy vs recurrent state size."""
    figure, (by_pairs, by_state) = plt.subplots(1, 2, figsize=(11, 4.2))
    mixers = list(dict.fromkeys(mixer for mixer, _ in accuracy))
    for mixer in mixers:
        pairs = sorted(p for m, p in accuracy if m == mixer)
        means = [accuracy[mixer, p][0] for p in pairs]
        halves = [accuracy[mixer, p][1] for p in pairs]
        line = by_pairs.errorbar(pairs, means, yerr=halves, marker="o", capsize=3, label=mixer)
        by_state.scatter([states[mixer, p] for p in pairs], means, color=line[0].get_color())
        by_state.plot(
            [states[mixer, p] for p in pairs], means, color=line[0].get_color(), alpha=0.4
        )
        for p, mean in zip(pairs, means, strict=True):
            by_state.annotate(
                f"{p}",
                (states[mixer, p], mean),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
    by_pairs.set_xlabel("key-value pairs")
    by_pairs.set_xscale("log", base=2)
    counts = sorted({p for _, p in accuracy})
    by_pairs.set_xticks(counts, [str(p) for p in counts])
    by_pairs.set_title(f"MQAR ({scale} scale): mean over seeds, bars: their spread", fontsize=10)
    by_state.set_xlabel("recurrent state (floats per sequence, all layers; numbers: pairs)")
    by_state.set_xscale("log")
    by_state.xaxis.set_minor_formatter(NullFormatter())  # crowded labels between the decades
    by_state.set_title("accuracy vs state size")
    for axes in (by_pairs, by_state):
        axes.set_ylim(0, 1.02)
        axes.set_ylabel("query accuracy")
        axes.grid(alpha=0.3)
    by_pairs.legend(frameon=False)
    return figure


# --- icll-architectures ------------------------------------------------------------------------


@dataclass(frozen=True)
class LanguageSetting:
    """Every architecture (name: its model section) at one parameter budget, each from
    ``runs``, once per training seed of ``seeds``."""

    runs: PresetChanges
    architectures: dict[str, dict[str, Any]]
    seeds: tuple[int, ...]


REFERENCE = "transformer"
ARCHITECTURES = {
    "transformer": {"mixer": "softmax"},
    "linear_attention": {"mixer": "linear_attention"},
    "mamba": {"mixer": "mamba"},
    "lstm": {"mixer": "lstm"},
}
LANGUAGE: dict[Scale, LanguageSetting] = {
    # 12 tokens, one layer of about 6k parameters, the transformer against an LSTM, a few steps.
    "smoke": LanguageSetting(
        runs=PresetChanges(
            "icll",
            {
                "task": {"n_points": 12},
                "model": {"n_layers": 1, "n_heads": 1, "target_params": 6000},
                "train": SMOKE_TRAIN,
                "eval": {**SMOKE_EVAL, "algorithms": ["ngram(n=1)", "ngram(n=2)"]},
            },
        ),
        architectures={name: ARCHITECTURES[name] for name in ("transformer", "lstm")},
        seeds=(0, 1),
    ),
    # 64 tokens instead of 512, 2 layers (2 heads) of about 28k parameters, 3000 steps, 4096
    # prompts. Measured while designing it (one seed, late accuracy k ≥ 32): transformer 0.809,
    # linear attention 0.796, mamba 0.693, lstm 0.535 (bigram 0.805); at 32 tokens and 300 steps
    # all four sat between the unigram and bigram baselines. Three seeds: linear attention's
    # deficit is small (0.014 / 0.0045 / 0.016 on 1024 prompts, whose interval's half-width,
    # 0.005, let seed 1 flip), so 4096 prompts (seconds) halve the interval. Neither longer
    # training (6000 steps), 128 tokens, 100k parameters, rotary positions nor 4 layers took the
    # transformer much past the bigram model (at most 0.820 against 0.809).
    "cpu": LanguageSetting(
        runs=PresetChanges(
            "icll",
            {
                "model": {"n_layers": 2, "n_heads": 2, "target_params": 28000},
                "train": {"steps": 3000, "log_every": 100, "checkpoint_every": 1000},
                "eval": {"n_prompts": 4096},
            },
        ),
        architectures=ARCHITECTURES,
        seeds=(0, 1, 2),
    ),
    # REGBENCH's 512-token prompts; the paper's models are larger (here 4 layers, ~2M parameters).
    "paper": LanguageSetting(
        runs=PresetChanges(
            "icll",
            {
                "task": {"n_points": 512},
                "model": {"n_layers": 4, "target_params": 2000000},
                "train": {"steps": 20000, "lr": 3.0e-4},
                "eval": {"n_prompts": 1280},
            },
        ),
        architectures=ARCHITECTURES,
        seeds=(0, 1, 2),
    ),
}
# Decided before the CPU run.
MARGIN = 0.0  # the transformer wins when its paired late-k difference's 95% interval is above this
BEATEN = 0.0  # another architecture beats the transformer when the interval lies below this
UNIGRAM = "ngram(n=1)"  # every architecture must beat it (late accuracy): it learned in context


@register_reproduction("icll-architectures")
class LanguageArchitectures(Reproduction):
    """At equal parameter counts the transformer learns random regular languages in context
    best."""

    paper = "Akyürek et al. 2024, arXiv 2401.12973"
    claim = (
        "Trained at equal parameter counts on strings of random finite automata, a transformer "
        "predicts valid next symbols in context more accurately than linear attention, a "
        "selective SSM (Mamba) and an LSTM."
    )
    cpu_minutes = 12.8

    @staticmethod
    def decide(numbers: dict[str, float]) -> Outcome:
        seeds = seeds_in(numbers, f"{REFERENCE}_late_accuracy")
        return agreed(language_outcome(numbers, seed) for seed in seeds)

    @staticmethod
    def trainings(scale: Scale) -> dict[str, RunConfig]:
        setting = LANGUAGE[scale]
        return {
            f"seed{seed}/{name}": setting.runs.config(
                name=f"icll-{name}-seed{seed}", model=model, train={"seed": seed}
            )
            for seed in setting.seeds
            for name, model in setting.architectures.items()
        }

    def run(self, out: Path, scale: Scale, show_progress: bool = True) -> Verdict:
        setting = LANGUAGE[scale]
        runs = trained_all(self.trainings(scale), out, show_progress)
        config = setting.runs.config(eval={"reference": REFERENCE})
        late = config.task.n_points // 2
        numbers: dict[str, float] = {}
        for seed in setting.seeds:
            mine = {name: runs[f"seed{seed}/{name}"] for name in setting.architectures}
            models = [named(trained_model(run), name) for name, run in mine.items()]
            # Evaluated afresh on every run (seconds): the per-prompt scores the decision needs
            # are not written to disk, so the cached tables of `compared` cannot serve here
            evaluation = evaluate_config(config, models)
            directory = out / f"seed{seed}"
            directory.mkdir(parents=True, exist_ok=True)
            write_curves_csv(evaluation.curves, directory / "curves.csv")
            write_differences_csv(evaluation.differences, directory / "differences.csv")
            points = evaluation.curves
            if seed == setting.seeds[0]:
                figure = curves_figure(
                    [p for p in points if p.shift == "none"],
                    f"ICLL ({scale} scale, training seed {seed}): random DFA languages, equal "
                    "parameter counts",
                    METRICS["tokens"].label,
                )
                figure.axes[0].set_xlabel("position in the prompt (tokens)")
                save_figure(figure, out / "figure.png")
            learners = dict.fromkeys(p.learner for p in points)
            numbers |= {
                f"seed{seed}_{name}_late_accuracy": late_mean(curve(points, name), late)
                for name in learners
            }
            for name in setting.architectures:
                if name != REFERENCE:
                    mean, low, high = late_paired_difference(evaluation, REFERENCE, name, late)
                    key = f"seed{seed}_{REFERENCE}_minus_{name}"
                    numbers |= {key: mean, f"{key}_ci_low": low, f"{key}_ci_high": high}
        first = setting.seeds[0]
        numbers |= {
            f"{name}_params": float(runs[f"seed{first}/{name}"].read_info()["n_params"])
            for name in setting.architectures
        }
        return self.judged(
            numbers,
            scale,
            quantity=f"per training seed: late-k accuracy (mean over positions k ≥ {late}); "
            f"paired difference {REFERENCE} − each other architecture on the same prompts, "
            f"averaged over k ≥ {late} within each prompt, its 95% interval across prompts",
            threshold=f"per seed: inconclusive when an architecture's late accuracy is not above "
            f"{UNIGRAM}'s (it has not learned in context); reproduced when every difference's "
            f"interval lies above {MARGIN}; not reproduced when some architecture's interval "
            f"lies below {BEATEN} (it beats the {REFERENCE}); inconclusive otherwise. Seeds "
            "that disagree: inconclusive",
        )


def language_outcome(numbers: dict[str, float], seed: str) -> Outcome:
    """One training seed's outcome from its numbers (keys ``{seed}_...``)."""
    prefix = f"{seed}_{REFERENCE}_minus_"
    others = [
        key.removesuffix("_ci_low")
        for key in numbers
        if key.startswith(prefix) and key.endswith("_ci_low")
    ]
    if not others:
        raise ValueError(f"no architecture was compared with the {REFERENCE} ({seed})")
    names = [REFERENCE, *(key.removeprefix(prefix) for key in others)]
    floor = numbers[f"{seed}_{UNIGRAM}_late_accuracy"]
    if any(numbers[f"{seed}_{name}_late_accuracy"] <= floor for name in names):
        return "inconclusive"
    if all(numbers[f"{key}_ci_low"] > MARGIN for key in others):
        return "reproduced"
    if any(numbers[f"{key}_ci_high"] < BEATEN for key in others):
        return "not reproduced"
    return "inconclusive"


def late_mean(points: dict[int, CurvePoint], late: int) -> float:
    """Mean of a curve over positions k ≥ ``late``."""
    return late_average(points.values(), late)[0]
