"""Chan et al. 2022: bursty training sequences make in-context learning emerge, uniform i.i.d.
ones do not, and in-weights learning goes the other way.

Two models are trained on the same classes (Reddy 2023's minimal form, ``bursty_classification``)
and differ only in their training sequences: bursty (every context holds N/B classes B times
each, the query's among them) or uniform (N + 1 i.i.d. classes). Both are then evaluated on the
same prompts in the task's two test modes: ``icl`` (novel classes with labels given only in the
context) and ``iwl`` (the query's class absent from the context, so only the weights can name its
label); the decision reads the paired differences bursty − uniform in each mode, for each of
three training seeds (when in-context learning emerges varies with the seed), which must agree.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from iclab.config import RunConfig
from iclab.evaluation.curves import CurvePoint, PairedDifference
from iclab.report.plots import save_figure
from iclab.reproductions.base import (
    SMOKE_EVAL,
    SMOKE_TRAIN,
    Outcome,
    PresetChanges,
    Reproduction,
    Scale,
    Verdict,
    agreed,
    compared,
    register_reproduction,
    seeds_in,
    trained_all,
)

TRAINING = {"bursty": 1.0, "uniform": 0.0}  # p_bursty of each model's training sequences
MODES = ("icl", "iwl")
SEEDS: dict[Scale, tuple[int, ...]] = {"smoke": (0, 1), "cpu": (0, 1, 2), "paper": (0, 1, 2)}
# cpu: the preset's classes and prompts (d = 63, 8 exemplars and a query, B = 4, L = 32 labels,
# ε = 0.1) with K = 16384 classes (the preset's 512 are learned in the weights before anything
# is learned in context) and 2 layers, 12000 steps whose cosine decays over 20000: the bursty
# model's loss left its plateau (ln 2) between steps 6000 and 7500 in the run that designed it.
SETTINGS: dict[Scale, PresetChanges] = {
    "smoke": PresetChanges(
        "bursty_classification",
        {
            "task": {"n_clusters": 64},
            "model": {"n_layers": 1, "d_model": 16, "n_heads": 2},
            "train": SMOKE_TRAIN,
            "eval": SMOKE_EVAL,
        },
    ),
    "cpu": PresetChanges(
        "bursty_classification",
        {
            "task": {"n_clusters": 16384},
            "model": {"n_layers": 2},
            "train": {
                "steps": 12000,
                "decay_steps": 20000,
                "log_every": 250,
                "checkpoint_every": 2000,
            },
            "eval": {"n_prompts": 2048},
        },
    ),
    "paper": PresetChanges(
        "bursty_classification",
        {
            "task": {"n_clusters": 16384},
            "model": {"n_layers": 4, "d_model": 128},
            "train": {"steps": 100000, "batch_size": 128, "checkpoint_every": 5000},
            "eval": {"n_prompts": 4096},
        },
    ),
}
# Decided before the CPU run (query accuracy; paired differences on the same prompts, 95% CI).
ICL_GAP = 0.2  # bursty − uniform on novel classes that counts as "ICL emerges with burstiness"
IWL_GAP = 0.0  # uniform − bursty on absent classes must be above this: IWL goes the other way
NO_ICL_GAP = 0.05  # a bursty − uniform ICL difference whose CI stays below this: no effect


def run_config(scale: Scale, training: str, seed: int = 0) -> RunConfig:
    return SETTINGS[scale].config(
        name=f"bursty-icl-{training}-seed{seed}",
        task={"p_bursty": TRAINING[training]},
        train={"seed": seed},
    )


def query_point(points: list[CurvePoint], learner: str) -> CurvePoint:
    """The learner's accuracy at the query (the only scored position), with its interval."""
    (point,) = [p for p in points if p.learner == learner and p.shift == "none"]
    return point


def chance_levels(config: RunConfig) -> dict[str, float]:
    """What guessing scores: in the icl mode, a label of the context at random (each of its
    N / B classes is B exemplars of the N), in the iwl mode one of the L labels."""
    options = config.task.build().options
    return {
        "icl_chance_a_context_label": options.burstiness / (config.task.n_points - 1),
        "iwl_chance": 1.0 / options.n_labels,
    }


def bursty_minus_uniform(differences: list[PairedDifference]) -> tuple[float, float, float]:
    """(mean, ci_low, ci_high) of bursty − uniform at the query, prompt by prompt."""
    (row,) = [d for d in differences if d.learner == "bursty" and d.shift == "none"]
    return row.mean, row.ci_low, row.ci_high


@register_reproduction("bursty-icl")
class BurstyICL(Reproduction):
    """Bursty training gives in-context learning, uniform training in-weights learning."""

    paper = "Chan et al. 2022, arXiv 2205.05055 (in Reddy 2023's form, arXiv 2312.03002)"
    claim = (
        "Trained on bursty sequences (few classes, each repeated in the context) a transformer "
        "learns in context: it labels novel classes from their exemplars, which the same model "
        "trained on uniform i.i.d. sequences does not; in-weights learning (labelling a class "
        "absent from the context) goes the other way."
    )
    cpu_minutes = 27.4

    @staticmethod
    def decide(numbers: dict[str, float]) -> Outcome:
        seeds = seeds_in(numbers, "icl_difference_ci_low")
        return agreed(seed_outcome(numbers, seed) for seed in seeds)

    @staticmethod
    def trainings(scale: Scale) -> dict[str, RunConfig]:
        return {
            f"seed{seed}/{training}": run_config(scale, training, seed)
            for seed in SEEDS[scale]
            for training in TRAINING
        }

    def run(self, out: Path, scale: Scale, show_progress: bool = True) -> Verdict:
        trainings = trained_all(self.trainings(scale), out, show_progress)
        numbers: dict[str, float] = {}
        for seed in SEEDS[scale]:
            runs = {training: trainings[f"seed{seed}/{training}"] for training in TRAINING}
            for mode in MODES:
                config = run_config(scale, "bursty", seed).updated(
                    eval={"task_options": {"mode": mode}, "reference": "uniform"}
                )
                curves, differences = compared(runs, config, out / f"seed{seed}" / f"eval-{mode}")
                for training in TRAINING:
                    numbers[f"seed{seed}_{mode}_{training}"] = query_point(curves, training).mean
                mean, low, high = bursty_minus_uniform(differences)
                sign = 1.0 if mode == "icl" else -1.0  # IWL: uniform − bursty
                low, high = sorted((sign * low, sign * high))
                numbers |= {
                    f"seed{seed}_{mode}_difference": sign * mean,
                    f"seed{seed}_{mode}_difference_ci_low": low,
                    f"seed{seed}_{mode}_difference_ci_high": high,
                }
        config = run_config(scale, "bursty")
        numbers |= chance_levels(config)
        numbers["steps"] = config.train.steps
        save_figure(self.figure(numbers, scale), out / "figure.png")
        return self.judged(
            numbers,
            scale,
            quantity="per training seed, query accuracy of the model trained on bursty and of "
            "the one trained on "
            "uniform sequences, in the icl mode (novel classes, labels only in the context) and "
            "the iwl mode (the query's class absent from the context); icl difference = bursty "
            "− uniform, iwl difference = uniform − bursty, paired on the same prompts",
            threshold=f"reproduced when the icl difference's 95% CI lies at or above {ICL_GAP} "
            f"and the iwl difference's above {IWL_GAP}; not reproduced when the icl "
            f"difference's CI lies below {NO_ICL_GAP} or the iwl difference's below "
            f"{-IWL_GAP}; inconclusive otherwise. Seeds that disagree: inconclusive",
        )

    @staticmethod
    def figure(numbers: dict[str, float], scale: Scale) -> plt.Figure:
        """Accuracy of the two models in the two modes, one bar per seed, chance marked: Chan
        et al.'s Figure 2 in two panels."""
        seeds = seeds_in(numbers, "icl_difference_ci_low")
        figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        titles = {
            "icl": "novel classes (labels only in context)",
            "iwl": "class absent from context (weights only)",
        }
        width = 0.8 / len(seeds)
        for axis, mode in zip(axes, MODES, strict=True):
            for index, seed in enumerate(seeds):
                values = [numbers[f"{seed}_{mode}_{training}"] for training in TRAINING]
                xs = [x + (index - (len(seeds) - 1) / 2) * width for x in range(len(TRAINING))]
                axis.bar(xs, values, width=width * 0.9, color=f"C{index}", label=seed)
                for x, value in zip(xs, values, strict=True):
                    axis.annotate(f"{value:.2f}", (x, value), ha="center", va="bottom", fontsize=7)
            chance = numbers["icl_chance_a_context_label" if mode == "icl" else "iwl_chance"]
            label = "a context label at random" if mode == "icl" else "chance"
            axis.axhline(chance, color="gray", ls="--", label=label)
            axis.set_xticks(range(len(TRAINING)), list(TRAINING))
            axis.set_title(f"{mode}: {titles[mode]}", fontsize=10)
            axis.set_xlabel("training sequences")
            axis.set_ylim(0, 1.08)
            axis.legend(frameon=False, fontsize=8)
        axes[0].set_ylabel("query accuracy")
        figure.suptitle(f"Chan et al.: burstiness and in-context learning ({scale} scale)")
        figure.tight_layout()
        return figure


def seed_outcome(numbers: dict[str, float], seed: str) -> Outcome:
    """One seed's outcome from its paired differences (keys ``{seed}_...``)."""
    icl_low = numbers[f"{seed}_icl_difference_ci_low"]
    icl_high = numbers[f"{seed}_icl_difference_ci_high"]
    iwl_low = numbers[f"{seed}_iwl_difference_ci_low"]
    iwl_high = numbers[f"{seed}_iwl_difference_ci_high"]
    if icl_low >= ICL_GAP and iwl_low > IWL_GAP:
        return "reproduced"
    if icl_high < NO_ICL_GAP or iwl_high < -IWL_GAP:
        return "not reproduced"
    return "inconclusive"
