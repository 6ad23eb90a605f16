"""Raventós et al. 2023: with few pretraining tasks a transformer behaves like dMMSE, the posterior
over its task pool; past a task-diversity threshold it behaves like ridge, the Bayes estimator for
the Gaussian prior, also on tasks it has never seen."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import matplotlib.pyplot as plt

from iclab.config import RunConfig
from iclab.evaluation.curves import CurvePoint, PairedDifference
from iclab.metrics import METRICS
from iclab.report.plots import save_figure
from iclab.reproductions.base import (
    SMOKE_EVAL,
    SMOKE_MODEL,
    SMOKE_TRAIN,
    Outcome,
    PresetChanges,
    Reproduction,
    Scale,
    Verdict,
    compared,
    evaluated_curves,
    late_average,
    recorded,
    register_reproduction,
    seeds_in,
    trained_all,
)

RIDGE = "ridge(alpha=0.25)"  # λ = σ²/τ² at σ = 0.5, τ = 1: Bayes-optimal for the Gaussian prior


@dataclass(frozen=True)
class DiversitySetting:
    """One run per pool size M (None: a fresh w per prompt, M = ∞) and training seed, each
    from ``runs``; every seed trains on the same pool (``task.seed``) and is evaluated on the
    same prompts, so only the initialisation and the order of the training data differ. The
    pool sizes in ``first_seed_only`` are trained with the first seed alone: those whose sides,
    measured over every seed, could not have changed the verdict."""

    runs: PresetChanges
    pool_sizes: tuple[int | None, ...]
    seeds: tuple[int, ...] = (0,)
    first_seed_only: tuple[int, ...] = ()

    def runs_to_train(self) -> list[tuple[int, int | None]]:
        """The (seed, M) of every run, seed by seed, M in the order of ``pool_sizes``."""
        return [
            (seed, m)
            for index, seed in enumerate(self.seeds)
            for m in self.pool_sizes
            if index == 0 or m not in self.first_seed_only
        ]


# cpu: the preset (d = 4, 16 points, σ = 0.5, with its curriculum; 4 layers of width 64) trained
# 5000 steps, three training seeds. The M = ∞ model, late-k gap to ridge on unseen tasks: seed 0
# 0.041 after 4000 steps; seed 1 0.055 after 4000, 0.036 after 5000, 0.020 after 6000; seed 2
# 0.032 after 5000 (2 layers and 2000 steps: 0.20). Over three runs of all twelve (two CPUs) the
# M = 1 models sat at dMMSE (1.298-1.309 against 1.300; the midpoint near 0.70) and the M = 16
# ones between ridge's side and unclear, which the rule allows in between: neither could change
# the verdict, so they train with seed 0 only. M = 256 is what the seed moves (position 0.11-0.52
# of the way from ridge to dMMSE), and longer training moved seed 0's towards dMMSE (AMD CPU:
# 0.41 after 5000 steps, 0.52 after 5500), so more steps do not settle it. paper:
# d = 8, 16 points, 8 layers of width 128, 2 heads, batch 256, M = 2^0 … 2^20 in the paper; 100k
# steps is our choice (not checked against the paper). smoke: a tiny model, M = 1 and M = ∞.
SETTINGS: dict[Scale, DiversitySetting] = {
    "smoke": DiversitySetting(
        PresetChanges(
            "finite_pool_regression",
            {"model": SMOKE_MODEL, "train": SMOKE_TRAIN, "eval": SMOKE_EVAL},
        ),
        (1, None),
        seeds=(0, 1),
        first_seed_only=(1,),
    ),
    "cpu": DiversitySetting(
        PresetChanges("finite_pool_regression", {"train": {"steps": 5000}}),
        (1, 16, 256, None),
        seeds=(0, 1, 2),
        first_seed_only=(1, 16),
    ),
    "paper": DiversitySetting(
        PresetChanges(
            "finite_pool_regression",
            {
                "task": {"n_dims": 8},
                "model": {"n_layers": 8, "d_model": 128, "n_heads": 2},
                "train": {
                    "batch_size": 256,
                    "steps": 100000,
                    "checkpoint_every": 5000,
                    "curriculum": {"dims": {"end": 8}},
                },
            },
        ),
        (1, 16, 256, 4096, 65536, None),
        seeds=(0, 1, 2),
    ),
}
# Decided before the CPU run. On unseen tasks, over the late half of the prompt, the model is
# closer to ridge when (model − ridge) < ½ (dMMSE − ridge), closer to dMMSE when it is above; each
# side must hold with the 95% intervals of both paired differences (to ridge, prompt by prompt).
MIDPOINT = 0.5
# The precondition: the M = ∞ model must be this close to ridge (model − ridge, unseen tasks,
# late half), or no M can be told to behave like ridge (the 2-layer model of the first CPU run
# was 0.20 above it: under-trained).
TRAINED = 0.05
Side = Literal["ridge", "dmmse", "unclear"]


def pool_label(pool_size: int | None) -> str:
    return "inf" if pool_size is None else str(pool_size)


def run_config(
    scale: Scale, pool_size: int | None, seed: int = 0, unseen: bool = False
) -> RunConfig:
    """The run of pool size M and training seed ``seed``; ``unseen``: the same run evaluated on
    w drawn from the prior."""
    changes = {
        "name": f"task-diversity-M{pool_label(pool_size)}-seed{seed}",
        "task": {"pool_size": pool_size},
        "train": {"seed": seed},
        "eval": {"algorithms": ["dmmse", RIDGE]},
    }
    if unseen:
        changes["task"]["sample_from"] = "prior"
        changes["eval"]["reference"] = RIDGE
    return SETTINGS[scale].runs.config(**changes)


def late_mean(rows: list[CurvePoint] | list[PairedDifference], learner: str, first_k: int):
    """(mean, ci_low, ci_high) of ``learner``'s rows averaged over k ≥ ``first_k``."""
    return late_average((row for row in rows if row.learner == learner), first_k)


def side(model_gap: tuple[float, ...], dmmse_gap: tuple[float, ...]) -> Side:
    """``ridge``, ``dmmse`` or ``unclear``: which yardstick the model's error is nearer, from the
    (mean, ci_low, ci_high) of model − ridge and dMMSE − ridge."""
    if model_gap[2] < MIDPOINT * dmmse_gap[1]:
        return "ridge"
    if model_gap[1] > MIDPOINT * dmmse_gap[2]:
        return "dmmse"
    return "unclear"


def sides(numbers: dict[str, float], seed: str) -> dict[int, Side]:
    """Each finite M's side for training seed ``seed`` (``"seed0"``), in increasing M, from the
    numbers ``run`` records."""
    finite = sorted(
        int(match[1])
        for key in numbers
        if (match := re.fullmatch(rf"{seed}_M(\d+)_model_minus_ridge", key))
    )

    def gap(m: int, learner: str) -> tuple[float, float, float]:
        key = f"{seed}_M{m}_{learner}_minus_ridge"
        return numbers[key], numbers[f"{key}_ci_low"], numbers[f"{key}_ci_high"]

    return {m: side(gap(m, "model"), gap(m, "dmmse")) for m in finite}


def outcome_of(order: list[Side]) -> Outcome:
    """The verdict from each finite M's side, in increasing M: dMMSE first, ridge last and no
    return to dMMSE after ridge."""
    if not order:
        raise ValueError("no finite pool size M was evaluated")
    back_to_dmmse = "ridge" in order and "dmmse" in order[order.index("ridge") :]
    if order[0] == "dmmse" and order[-1] == "ridge" and not back_to_dmmse:
        return "reproduced"
    if order[0] == "ridge" or order[-1] == "dmmse" or back_to_dmmse:
        return "not reproduced"
    return "inconclusive"


def pooled_sides(numbers: dict[str, float], seeds: list[str]) -> dict[int, Side]:
    """Each finite M's side over the training seeds that trained it, in increasing M: the side
    they all give, ``unclear`` where they differ (a side that flips with the seed is none)."""
    by_seed = [sides(numbers, seed) for seed in seeds]
    pool_sizes = sorted({m for order in by_seed for m in order})
    found = {m: {order[m] for order in by_seed if m in order} for m in pool_sizes}
    return {m: next(iter(given)) if len(given) == 1 else "unclear" for m, given in found.items()}


def pool_summary(
    curves: list[CurvePoint], differences: list[PairedDifference], config: RunConfig, prefix: str
) -> tuple[dict[str, tuple[float, float, float]], dict[str, float]]:
    """One run's late means on unseen tasks (model, dMMSE, ridge) and its numbers, keyed
    ``{prefix}_...``: each learner − ridge and, for a finite pool, where the model sits between
    ridge (0) and dMMSE (1)."""
    first_k = config.task.n_points // 2
    means = {learner: late_mean(curves, learner, first_k) for learner in ("model", "dmmse", RIDGE)}
    numbers = {
        f"{prefix}_unseen_model": means["model"][0],
        f"{prefix}_unseen_dmmse": means["dmmse"][0],
    }
    for learner in ("model", "dmmse"):
        mean, low, high = late_mean(differences, learner, first_k)
        numbers[f"{prefix}_{learner}_minus_ridge"] = mean
        numbers[f"{prefix}_{learner}_minus_ridge_ci_low"] = low
        numbers[f"{prefix}_{learner}_minus_ridge_ci_high"] = high
    if config.task.pool_size is not None:  # at M = ∞ dMMSE is ridge: nothing in between
        numbers[f"{prefix}_position_0ridge_1dmmse"] = (
            numbers[f"{prefix}_model_minus_ridge"] / numbers[f"{prefix}_dmmse_minus_ridge"]
        )
    return means, numbers


@register_reproduction("task-diversity")
class TaskDiversity(Reproduction):
    """The model follows dMMSE when pretrained on few tasks and ridge when on many."""

    paper = "Raventós et al. 2023, arXiv 2306.15063, Figure 2"
    claim = (
        "A transformer pretrained on noisy linear regression with a small pool of M tasks "
        "behaves like dMMSE (the posterior over the pool) on unseen tasks; past a task-diversity "
        "threshold in M it behaves like ridge, the Bayes estimator for the Gaussian prior."
    )
    cpu_minutes = 19.5

    @staticmethod
    def decide(numbers: dict[str, float]) -> Outcome:
        seeds = seeds_in(numbers, "Minf_model_minus_ridge")
        if any(numbers[f"{seed}_Minf_model_minus_ridge"] > TRAINED for seed in seeds):
            return "inconclusive"
        return outcome_of(list(pooled_sides(numbers, seeds).values()))

    @staticmethod
    def trainings(scale: Scale) -> dict[str, RunConfig]:
        return {
            f"seed{seed}/M{pool_label(m)}": run_config(scale, m, seed)
            for seed, m in SETTINGS[scale].runs_to_train()
        }

    def run(self, out: Path, scale: Scale, show_progress: bool = True) -> Verdict:
        setting = SETTINGS[scale]
        configs = self.trainings(scale)
        runs = trained_all(configs, out, show_progress)
        unseen: dict[int, dict] = {seed: {} for seed in setting.seeds}
        seen: dict[int, dict] = {seed: {} for seed in setting.seeds}
        numbers: dict[str, float] = {}
        for seed, pool_size in setting.runs_to_train():
            where = f"seed{seed}/M{pool_label(pool_size)}"
            seen[seed][pool_size] = evaluated_curves(runs[where])
            # The model, dMMSE (its own pool) and ridge on prompts whose w comes from the
            # prior, beside the run (only the run layer writes into a run directory).
            curves, differences = compared(
                {"model": runs[where]},
                run_config(scale, pool_size, seed, unseen=True),
                out / f"{where}-unseen",
            )
            unseen[seed][pool_size], pool_numbers = pool_summary(
                curves, differences, configs[where], f"seed{seed}_M{pool_label(pool_size)}"
            )
            numbers |= pool_numbers
        first = setting.seeds[0]
        config = configs[f"seed{first}/M{pool_label(setting.pool_sizes[0])}"]
        numbers["unseen_ridge"] = unseen[first][setting.pool_sizes[0]][RIDGE][0]
        numbers["steps"] = config.train.steps
        self.draw(unseen, seen[first], config, out / "figure.png", scale)

        orders = {
            seed: sides(recorded(numbers), seed)
            for seed in seeds_in(numbers, "Minf_model_minus_ridge")
        }
        return self.judged(
            numbers,
            scale,
            quantity="per training seed and pool size M, on unseen tasks (w from the prior) over "
            "k ≥ n_points/2: model − ridge against half of dMMSE − ridge (paired differences, "
            "mean and 95% CI ends). Side per M: "
            + "; ".join(
                f"{seed}: " + ", ".join(f"M={m}: {where}" for m, where in order.items())
                for seed, order in orders.items()
            ),
            threshold=f"inconclusive when the M = ∞ model is more than {TRAINED} above ridge (it "
            "has not learned what the claim presupposes); otherwise "
            "a model is closer to ridge when the 95% CI of model − ridge lies below "
            f"{MIDPOINT} × (dMMSE − ridge)'s CI, closer to dMMSE when above; reproduced when the "
            "smallest M is on dMMSE's side, the largest finite M on ridge's and no larger M "
            "returns to dMMSE; not reproduced when one of these is reversed; inconclusive "
            "otherwise. An M whose seeds give different sides is unclear",
        )

    def draw(
        self,
        unseen: dict[int, dict[int | None, dict[str, tuple[float, ...]]]],
        seen: dict[int | None, list[CurvePoint]],
        config: RunConfig,
        path: Path,
        scale: Scale,
    ) -> None:
        """Error vs number of pretraining tasks M (∞ at the right), like the paper's Figure 2:
        on unseen tasks (left: every training seed's model; dMMSE and ridge are the same for
        all) and on the pool's own tasks (right: the first seed)."""
        first = next(iter(unseen))
        pool_sizes = list(unseen[first])
        finite = [m for m in pool_sizes if m is not None]
        infinity = 4 * max(finite)  # where M = ∞ is drawn
        xs = [infinity if m is None else m for m in pool_sizes]
        first_k = config.task.n_points // 2
        on_pool = {
            m: {name: late_mean(points, name, first_k) for name in ("model", "dmmse", RIDGE)}
            for m, points in seen.items()
        }
        figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
        panels = [  # (title, the yardsticks' table, each model line's label and table)
            (
                "unseen tasks (w from the prior)",
                unseen[first],
                {f"model, seed {seed}": table for seed, table in unseen.items()},
            ),
            ("pretraining tasks (the pool)", on_pool, {f"model, seed {first}": on_pool}),
        ]
        for ax, (title, yardsticks, models) in zip(axes, panels, strict=True):
            lines = [  # (label, table, learner, style, colour): one colour per seed
                (label, table, "model", "o-", f"C{index}")
                for index, (label, table) in enumerate(models.items())
            ]
            lines += [
                ("dmmse", yardsticks, "dmmse", "s--", "tab:red"),
                (RIDGE, yardsticks, RIDGE, "^:", "tab:gray"),
            ]
            for label, table, learner, style, colour in lines:
                drawn = [m for m in pool_sizes if m in table]  # a seed may train fewer M
                mean = [table[m][learner][0] for m in drawn]
                low = [table[m][learner][0] - table[m][learner][1] for m in drawn]
                high = [table[m][learner][2] - table[m][learner][0] for m in drawn]
                ax.errorbar(
                    [xs[pool_sizes.index(m)] for m in drawn],
                    mean,
                    yerr=[low, high],
                    fmt=style,
                    capsize=3,
                    label=label,
                    color=colour,
                )
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [pool_label(m).replace("inf", "∞") for m in pool_sizes])
            ax.set_xlabel("number of pretraining tasks M")
            ax.set_title(f"{title}, k ≥ {first_k}")
            ax.grid(alpha=0.3)
            ax.legend(frameon=False, fontsize=8)
        axes[0].set_ylabel(METRICS["regression"].label)
        figure.suptitle(
            f"Task diversity ({scale} scale): d={config.task.n_dims}, "
            f"{config.task.n_points} points, σ={config.task.build().options.noise_std}"
        )
        save_figure(figure, path)
