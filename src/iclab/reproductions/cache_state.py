"""Bounded memory two ways: a softmax model's KV cache kept by eviction policies (StreamingLLM,
H2O, TOVA, SnapKV, ...) against a recurrent mixer's fixed state of the same size, on a task
that needs exact memory (associative recall) and one where a summary suffices (noisy linear
regression with many more examples than dimensions)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from iclab.config import RunConfig
from iclab.evaluation.curves import CurvePoint
from iclab.models import InContextModel
from iclab.models.cached import CachedModel
from iclab.models.caches import build_policy
from iclab.report.plots import save_figure
from iclab.reproductions.architectures import RECALL, pooled
from iclab.reproductions.base import (
    SMOKE_EVAL,
    SMOKE_TRAIN,
    Outcome,
    PresetChanges,
    Reproduction,
    Scale,
    Verdict,
    agreed,
    compared_learners,
    curve,
    register_reproduction,
    seeds_in,
    trained_all,
    trained_model,
)
from iclab.run import RunDir

ATTENTION, STATE = "softmax", "gla"
POLICIES = ["window", "sink_window", "h2o", "tova", "snapkv", "knorm", "random"]


@dataclass(frozen=True)
class CacheSetting:
    """The runs of one scale: associative recall at each pair count (``pairs``: n_points) for
    every training seed of ``recall_seeds``, and noisy regression (its seed is the preset's),
    each with the attention and the recurrent model sections."""

    recall: PresetChanges
    pairs: dict[int, int]
    recall_models: dict[str, dict[str, Any]]
    recall_seeds: tuple[int, ...]
    regression: PresetChanges
    regression_models: dict[str, dict[str, Any]]


TINY = {"n_layers": 1, "d_model": 16, "n_heads": 2}
SETTINGS: dict[Scale, CacheSetting] = {
    "smoke": CacheSetting(
        recall=PresetChanges(
            "mqar",
            {
                "task": {"vocab_size": 16},
                "train": SMOKE_TRAIN,
                "eval": {**SMOKE_EVAL, "algorithms": ["mqar_lookup"]},
            },
        ),
        pairs={2: 12, 4: 16},
        recall_models={ATTENTION: TINY, STATE: {**TINY, "mixer": STATE}},
        recall_seeds=(0, 1),
        regression=PresetChanges(
            "quickstart",
            {
                "task": {"n_points": 12, "noise_std": 0.5},
                "train": SMOKE_TRAIN,
                "eval": {**SMOKE_EVAL, "algorithms": ["least_squares"]},
            },
        ),
        regression_models={
            ATTENTION: {**TINY, "mixer": ATTENTION},
            STATE: {**TINY, "mixer": STATE},
        },
    ),
    # MQAR at vocabulary 64, 32 tokens, 1, 2 and 4 pairs, every pair queried (mqar-state's
    # grid), 6000 steps at lr 1e-3, three training seeds. GLA at width 8 (one head, 88 floats
    # per layer) recalls 1 pair and falls to 0.15-0.19 at 4 (mqar-state); attention at width 32
    # (2 heads), whose KV entries of 64 floats make the matched budget 2 entries. Measured while
    # designing it: attention at width 16 (3 entries) learned 4 pairs on seeds 0 and 2 only
    # (loss 1.8 after 6000 steps on seeds 1 and 3, 1.5 after 15000 on seed 1), at width 32 on
    # seeds 1, 2 and 3 (loss < 0.001); at width 64 the budget would be one entry, too few to
    # hold a pair. Regression: the quickstart recipe on d = 5 with noise σ = 0.5 and 41 examples
    # (8d), the curriculum to 41 at a stage every 100 steps: at the quickstart's 50 seed 1 did
    # not learn in 2400 steps (loss 4.5, E[y²] = 5.25), at 100 it did. Seed 2: seeds 0 and 1
    # were seen while designing.
    "cpu": CacheSetting(
        recall=PresetChanges(
            "mqar",
            {
                "task": {"vocab_size": 64},
                "train": {
                    "steps": 6000,
                    "lr": 1.0e-3,
                    "log_every": 100,
                    "checkpoint_every": 2000,
                },
                "eval": {"n_prompts": 512, "algorithms": ["mqar_lookup"]},
            },
        ),
        pairs={1: 32, 2: 32, 4: 32},
        recall_models={
            ATTENTION: {"d_model": 32, "n_heads": 2},
            STATE: {"mixer": STATE, "d_model": 8, "n_heads": 1},
        },
        recall_seeds=(0, 1, 2),
        regression=PresetChanges(
            "quickstart",
            {
                "task": {"n_points": 41, "noise_std": 0.5},
                "train": {
                    "curriculum": {
                        "dims": {"interval": 100},
                        "points": {"start": 6, "end": 41, "increment": 5, "interval": 100},
                    },
                    "lr": 2.0e-3,  # both mixers, as recorded (the preset's rate then)
                    "seed": 2,
                    "log_every": 100,
                    "checkpoint_every": 500,
                    "stop_at": None,
                },
                "eval": {"n_prompts": 512, "algorithms": ["least_squares", "ridge"]},
            },
        ),
        regression_models={ATTENTION: {"mixer": ATTENTION}, STATE: {"mixer": STATE}},
    ),
    # Zoology's recall sizes, as mqar-state's paper scale (vocabulary 8192, up to 16 pairs in
    # 256 tokens), and regression at d = 20 with 161 examples, on a GPU.
    "paper": CacheSetting(
        recall=RECALL["paper"].runs,
        pairs=RECALL["paper"].pairs,
        recall_models={
            ATTENTION: {"d_model": 128, "n_heads": 2},
            STATE: {"mixer": STATE, "d_model": 64, "n_heads": 2},
        },
        recall_seeds=(0, 1, 2),
        regression=PresetChanges(
            "garg_linear_regression",
            {
                "task": {"n_points": 161, "noise_std": 0.5},
                "train": {"curriculum": {"points": {"start": 11, "end": 161}}},
                "eval": {"algorithms": ["least_squares", "ridge"]},
            },
        ),
        regression_models={ATTENTION: {}, STATE: {"mixer": STATE}},
    ),
}
# Decided before the CPU run.
SOLVES = 0.9  # recall accuracy of the full cache at every pair count
LEARNS = 0.1  # the full cache's regression error within this of least squares (it learned)
FALLS_OFF = 0.2  # drop in recall accuracy, fewest → most pairs, of a bounded memory
MATCHES = 0.1  # the recurrent state's regression error within this of least squares
FAILS = 0.2  # the best evicting cache's regression error at least this above least squares
HOLDS_UP = 0.05  # a recall drop or a regression gap this small refutes the claim


def matched_budget(attention: InContextModel, recurrent: InContextModel, n_points: int) -> int:
    """KV entries per head and layer whose floats (2·E each) reach the recurrent model's
    state per layer: the cache budget of the same memory."""
    state = recurrent.state_size(n_points) / len(recurrent.backbone.blocks)
    return max(1, math.ceil(state / (2 * attention.backbone.d_model)))


def cached(model: InContextModel, budget: int) -> list[CachedModel]:
    return [CachedModel(model, build_policy(f"{name}(budget={budget})")) for name in POLICIES]


@register_reproduction("cache-vs-state")
class CacheVersusState(Reproduction):
    """Evicting KV caches against a recurrent state of the same size."""

    paper = (
        "StreamingLLM (Xiao et al. 2023), H2O (Zhang et al. 2023), SnapKV (Li et al. 2024) vs "
        "Zoology (Arora et al. 2023)"
    )
    claim = (
        "On associative recall a full KV cache solves every pair count, while eviction policies "
        "and a recurrent state fall off once the pairs exceed their memory; on noisy linear "
        "regression with many more examples than dimensions, a recurrent state matches least "
        "squares while evicting caches of the same size do not."
    )
    cpu_minutes = 19.9

    @staticmethod
    def decide(numbers: dict[str, float]) -> Outcome:
        return agreed(seed_outcome(numbers, seed) for seed in seeds_in(numbers, "recall_full_min"))

    @staticmethod
    def trainings(scale: Scale) -> dict[str, RunConfig]:
        setting = SETTINGS[scale]
        recall = {
            f"seed{seed}/recall-{mixer}-pairs{pairs}": setting.recall.config(
                name=f"recall-{mixer}-{pairs}-seed{seed}",
                task={"n_pairs": pairs, "n_queries": pairs, "n_points": n_points},
                model=model,
                train={"seed": seed},
            )
            for seed in setting.recall_seeds
            for pairs, n_points in setting.pairs.items()
            for mixer, model in setting.recall_models.items()
        }
        regression = {
            f"regression-{mixer}": setting.regression.config(
                name=f"regression-{mixer}", model=model
            )
            for mixer, model in setting.regression_models.items()
        }
        return regression | recall  # the long runs first: side by side, the short fill in

    def run(self, out: Path, scale: Scale, show_progress: bool = True) -> Verdict:
        setting = SETTINGS[scale]
        configs = self.trainings(scale)
        runs = trained_all(configs, out, show_progress)
        fewest, most = min(setting.pairs), max(setting.pairs)
        regression, regression_budget, k = self.regression(setting, configs, runs, out)
        at_k = {name: points[k].mean for name, points in regression.items()}
        evicting = [f"model[{name}(budget={regression_budget})]" for name in POLICIES]
        best_evicting = min(evicting, key=lambda name: at_k[name])
        numbers = {f"regression_{name}": value for name, value in at_k.items()}
        numbers |= {
            "regression_budget": float(regression_budget),
            "regression_full_gap": at_k["model"] - at_k["least_squares"],
            "regression_state_gap": at_k[STATE] - at_k["least_squares"],
            "regression_evict_gap": at_k[best_evicting] - at_k["least_squares"],
            "regression_best_evicting_is_" + best_evicting: 1.0,
        }
        for seed in setting.recall_seeds:
            recall, budget = self.recall(setting, configs, runs, out, seed)
            policies = [f"model[{name}(budget={budget})]" for name in POLICIES]
            # Eviction's envelope: the best any policy recalls at the fewest pairs and at the
            # most (not one policy's drop: the one best at the most pairs may never have held
            # a pair)
            best_fewest = max(policies, key=lambda name: recall[name, fewest][0])
            best = max(policies, key=lambda name: recall[name, most][0])
            mine = {f"recall_{n}_pairs{p}": a for (n, p), (a, _) in recall.items()}
            mine |= {
                "recall_budget": float(budget),
                "recall_full_min": min(recall["model", p][0] for p in setting.pairs),
                "recall_evict_best_fewest": recall[best_fewest, fewest][0],
                "recall_evict_best_most": recall[best, most][0],
                "recall_evict_drop": recall[best_fewest, fewest][0] - recall[best, most][0],
                "recall_state_drop": recall[STATE, fewest][0] - recall[STATE, most][0],
                "recall_best_evicting_at_fewest_is_" + best_fewest: 1.0,
                "recall_best_evicting_is_" + best: 1.0,
            }
            numbers |= {f"seed{seed}_{key}": value for key, value in mine.items()}
            if seed == setting.recall_seeds[0]:
                figure = cache_state_figure(
                    recall, setting.pairs, regression, k, best, best_evicting, seed, scale
                )
                save_figure(figure, out / "figure.png")
        return self.judged(
            numbers,
            scale,
            quantity=f"recall, per training seed: query accuracy over every query at {fewest} "
            f"and {most} pairs of the full cache, the eviction policies (the best of them at "
            f"each pair count; budget: the entries whose floats match {STATE}'s state per layer) "
            f"and {STATE}; regression: error / E[y²] after k = {k} examples of the full cache, "
            f"{STATE}, the best evicting cache of the same memory, and least squares",
            threshold=f"per recall seed, with the regression: inconclusive unless the full cache "
            f"recalls ≥ {SOLVES} at every pair count and its regression error is within "
            f"{LEARNS} of least squares; reproduced when both the policies' best recall and "
            f"{STATE}'s drop by ≥ {FALLS_OFF} from {fewest} to {most} pairs, {STATE}'s "
            f"regression error is within {MATCHES} of least squares and the best evicting "
            f"cache's is ≥ {FAILS} above it; not reproduced when the policies' best recall drops "
            f"by < {HOLDS_UP}, or the best evicting cache is within {HOLDS_UP} of least squares, "
            f"or {STATE} is > {FAILS} above it. Seeds that disagree: inconclusive",
        )

    def recall(
        self,
        setting: CacheSetting,
        configs: dict[str, RunConfig],
        trainings: dict[str, RunDir],
        out: Path,
        seed: int,
    ) -> tuple[dict[tuple[str, int], tuple[float, float]], int]:
        """(learner, pairs) → pooled query accuracy and half-width for training seed ``seed``;
        and the cache budget."""
        accuracy: dict[tuple[str, int], tuple[float, float]] = {}
        budget = 0
        for pairs, n_points in setting.pairs.items():
            keys = {m: f"seed{seed}/recall-{m}-pairs{pairs}" for m in setting.recall_models}
            runs = {m: trainings[key] for m, key in keys.items()}
            attention, recurrent = (trained_model(runs[m]) for m in (ATTENTION, STATE))
            budget = matched_budget(attention, recurrent, n_points)
            directory = out / f"seed{seed}" / f"recall-pairs{pairs}"
            points = self.compare(
                attention, recurrent, budget, configs[keys[ATTENTION]], runs, directory
            )
            for learner in dict.fromkeys(p.learner for p in points):
                accuracy[learner, pairs] = pooled(curve(points, learner))
        return accuracy, budget

    def regression(
        self,
        setting: CacheSetting,
        configs: dict[str, RunConfig],
        trainings: dict[str, RunDir],
        out: Path,
    ) -> tuple[dict[str, dict[int, CurvePoint]], int, int]:
        """Learner → its error curve; the cache budget; the last k."""
        runs = {m: trainings[f"regression-{m}"] for m in setting.regression_models}
        config = configs[f"regression-{ATTENTION}"]
        attention, recurrent = (trained_model(runs[m]) for m in (ATTENTION, STATE))
        n_points = config.task.n_points
        budget = matched_budget(attention, recurrent, n_points)
        points = self.compare(attention, recurrent, budget, config, runs, out / "regression")
        curves = {
            learner: curve(points, learner) for learner in dict.fromkeys(p.learner for p in points)
        }
        return curves, budget, n_points - 1

    @staticmethod
    def compare(
        attention: InContextModel,
        recurrent: InContextModel,
        budget: int,
        config: RunConfig,
        runs: dict[str, Any],
        directory: Path,
    ) -> list[CurvePoint]:
        """The full cache, every policy at ``budget`` and the recurrent model on the same
        prompts of ``config``'s task, with its algorithms."""
        recurrent.name = STATE

        def learners() -> list[Any]:
            return [attention, *cached(attention, budget), recurrent]

        directory.mkdir(parents=True, exist_ok=True)
        return compared_learners(learners, config, directory, runs.values())


def seed_outcome(numbers: dict[str, float], seed: str) -> Outcome:
    """One recall seed's outcome, with the regression's numbers (keys ``{seed}_recall_...``
    and ``regression_...``)."""
    recall_full, evict_drop, state_drop = (
        numbers[f"{seed}_recall_{key}"] for key in ("full_min", "evict_drop", "state_drop")
    )
    full_gap, state_gap, evict_gap = (
        numbers[f"regression_{key}_gap"] for key in ("full", "state", "evict")
    )
    if recall_full < SOLVES or full_gap > LEARNS:
        return "inconclusive"
    if (
        evict_drop >= FALLS_OFF
        and state_drop >= FALLS_OFF
        and state_gap <= MATCHES
        and evict_gap >= FAILS
    ):
        return "reproduced"
    refuted = evict_drop < HOLDS_UP or evict_gap < HOLDS_UP or state_gap > FAILS
    return "not reproduced" if refuted else "inconclusive"


def cache_state_figure(
    recall: dict[tuple[str, int], tuple[float, float]],
    pairs: dict[int, int],
    regression: dict[str, dict[int, CurvePoint]],
    k: int,
    best_recall: str,
    best_regression: str,
    seed: int,
    scale: str,
) -> plt.Figure:
    """Left: recall accuracy vs pairs (full cache, every policy, the recurrent state); right:
    regression error vs k (full cache, the best evicting cache, the recurrent state, least
    squares)."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    counts = sorted(pairs)
    learners = list(dict.fromkeys(learner for learner, _ in recall))
    for learner in learners:
        if learner == "mqar_lookup":
            continue
        means = [recall[learner, p][0] for p in counts]
        halves = [recall[learner, p][1] for p in counts]
        bold = learner in ("model", STATE, best_recall)
        left.errorbar(
            counts,
            means,
            yerr=halves,
            marker="o",
            capsize=3,
            label=policy_label(learner),
            linewidth=2.2 if bold else 0.9,
            alpha=1.0 if bold else 0.6,
        )
    left.set_xscale("log", base=2)
    left.set_xticks(counts, [str(p) for p in counts])
    left.set_xlabel("key-value pairs")
    left.set_ylabel("query accuracy")
    left.set_ylim(0, 1.02)
    left.set_title(f"associative recall, training seed {seed} ({scale} scale)")
    left.legend(frameon=False, fontsize=7)
    for learner in ("model", best_regression, STATE, "least_squares"):
        rows = sorted(regression[learner].values(), key=lambda p: p.k)
        ks = [p.k for p in rows]
        right.plot(ks, [p.mean for p in rows], label=policy_label(learner))
        right.fill_between(ks, [p.ci_low for p in rows], [p.ci_high for p in rows], alpha=0.2)
    right.set_xlabel("in-context examples k")
    right.set_ylabel("squared error / E[y²]")
    right.set_ylim(0, 1.25)
    right.set_title(f"noisy linear regression, best evicting cache vs state (k = {k})")
    right.legend(frameon=False, fontsize=8)
    for axes in (left, right):
        axes.grid(alpha=0.3)
    return figure


def policy_label(learner: str) -> str:
    """``model[h2o(budget=5)]`` → ``h2o(budget=5)``; the model alone is the full cache."""
    if learner == "model":
        return "full cache"
    return learner.removeprefix("model[").removesuffix("]")
