"""Every reproduction's decision, branch by branch, from tables of numbers → outcome.

A reproduction's verdict is ``decide(numbers)``, a pure function of the numbers verdict.json
records. Each table below walks every branch of one ``decide``: each if / elif / else, each half
of a compound condition, and each threshold exactly at its boundary (from the module's named
constants, so the boundary is the one the code uses). A new reproduction must bring its table.
"""

from __future__ import annotations

from types import MappingProxyType

import pytest

from iclab.reproductions import (
    REPRODUCTIONS,
    boolean,
    bursty,
    dpt,
    emergence,
    garg,
    probing,
    transience,
    von_oswald,
)
from iclab.reproductions import architectures as arch
from iclab.reproductions import cache_state as cache
from iclab.reproductions import task_diversity as diversity
from iclab.reproductions.base import OUTCOMES, Outcome

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
UP = 1e-4  # one step of the recorded precision: just past a threshold


# --- garg-linear: gap to least squares for k ≥ 2d, largest lead over averaging and knn ---------


def garg_numbers(gap: float, lead: float) -> dict[str, float]:
    return {"gap_k_ge_2d": gap, "model_minus_baselines_max_k_ge_d": lead}


GARG = [
    (garg_numbers(0.015, -0.3), REPRODUCED, "the CPU-scale run: tracks and beats both"),
    (garg_numbers(garg.TRACKING, -0.3), REPRODUCED, "gap exactly at the tracking threshold"),
    (garg_numbers(garg.TRACKING, garg.BEATS - UP), REPRODUCED, "lead just below 0"),
    (garg_numbers(0.015, garg.BEATS), NOT_REPRODUCED, "lead exactly 0: does not beat them"),
    (garg_numbers(0.015, 0.1), NOT_REPRODUCED, "tracks least squares but loses to a baseline"),
    (garg_numbers(garg.TRACKING + UP, -0.3), INCONCLUSIVE, "gap just above tracking"),
    (garg_numbers(garg.FAILING, -0.3), INCONCLUSIVE, "gap exactly at failing"),
    (garg_numbers(garg.FAILING + UP, -0.3), NOT_REPRODUCED, "gap just above failing"),
    (garg_numbers(0.9, 1.0), NOT_REPRODUCED, "an untrained model"),
]


# --- von-oswald-gd: cosine and difference to one GD step, key-query matrix vs a multiple of I --


def gd_numbers(
    cosine: float, difference: float, distance: float, seeds: tuple[int, ...] = (0,)
) -> dict[str, float]:
    """The same numbers for every seed in ``seeds``, with the untrained layer's cosine beside
    them as the run records it (its key ends like the trained one's)."""
    per_seed = {
        "sensitivity_cosine": cosine,
        "untrained_sensitivity_cosine": 0.01,
        "prediction_difference": difference,
        "distance_from_identity": distance,
    }
    return {f"seed{seed}_{key}": value for seed in seeds for key, value in per_seed.items()}


VON_OSWALD = [
    (gd_numbers(0.999, 0.01, 0.05), REPRODUCED, "all three well inside"),
    (
        gd_numbers(von_oswald.ALIGNED, von_oswald.CLOSE, von_oswald.IDENTITY),
        REPRODUCED,
        "all three exactly at their thresholds",
    ),
    (gd_numbers(von_oswald.ALIGNED - UP, 0.01, 0.05), INCONCLUSIVE, "cosine just below aligned"),
    (gd_numbers(0.999, von_oswald.CLOSE + UP, 0.05), INCONCLUSIVE, "difference just above close"),
    (
        gd_numbers(0.999, 0.01, von_oswald.IDENTITY + UP),
        INCONCLUSIVE,
        "distance just above identity",
    ),
    (gd_numbers(0.947, 0.063, 0.317), INCONCLUSIVE, "width d + 1's run: between the thresholds"),
    (gd_numbers(0.999, 0.001, 0.03, seeds=(0, 1, 2)), REPRODUCED, "three seeds agree"),
    (
        gd_numbers(0.999, 0.001, 0.03, seeds=(0, 2)) | gd_numbers(0.25, 0.05, 1.0, seeds=(1,)),
        INCONCLUSIVE,
        "one seed of three left at the initial saddle",
    ),
    (gd_numbers(0.25, 0.05, 1.0, seeds=(0, 1, 2)), NOT_REPRODUCED, "no seed leaves the saddle"),
    (gd_numbers(von_oswald.FAILING, 0.01, 0.05), INCONCLUSIVE, "cosine exactly at failing"),
    (gd_numbers(von_oswald.FAILING - UP, 0.01, 0.05), NOT_REPRODUCED, "cosine just below failing"),
    (
        gd_numbers(0.999, 0.01, von_oswald.NOT_IDENTITY),
        INCONCLUSIVE,
        "distance exactly at not-identity",
    ),
    (
        gd_numbers(0.999, 0.01, von_oswald.NOT_IDENTITY + UP),
        NOT_REPRODUCED,
        "distance above not-identity",
    ),
    (gd_numbers(0.02, 0.9, 0.99), NOT_REPRODUCED, "an untrained layer"),
]


# --- boolean: conjunction half (gap CI to elimination), parity half (model CI around chance) ---

CHANCE_LOW = boolean.CHANCE - boolean.PARITY_MARGIN
CHANCE_HIGH = boolean.CHANCE + boolean.PARITY_MARGIN


def boolean_numbers(
    gap: tuple[float, float], parity: tuple[float, float], gf2: float = 1.0
) -> dict[str, float]:
    return {
        "conjunction_gap_ci_low": gap[0],
        "conjunction_gap_ci_high": gap[1],
        "parity_model_ci_low": parity[0],
        "parity_model_ci_high": parity[1],
        "parity_gf2_elimination": gf2,
    }


HOLDS_GAP, FAILS_GAP, UNCLEAR_GAP = (0.017, 0.040), (0.2, 0.5), (0.03, 0.07)
HOLDS_PARITY, FAILS_PARITY, UNCLEAR_PARITY = (0.525, 0.580), (0.8, 0.9), (0.55, 0.65)
BOOLEAN = [
    (boolean_numbers(HOLDS_GAP, HOLDS_PARITY), REPRODUCED, "the CPU-scale run: both halves hold"),
    (
        boolean_numbers(
            (0.0, boolean.CONJUNCTION_GAP), (CHANCE_LOW, CHANCE_HIGH), boolean.GF2_FLOOR
        ),
        REPRODUCED,
        "every bound exactly at its threshold",
    ),
    (boolean_numbers(FAILS_GAP, HOLDS_PARITY), NOT_REPRODUCED, "conjunction fails"),
    (
        boolean_numbers(UNCLEAR_GAP, HOLDS_PARITY),
        INCONCLUSIVE,
        "conjunction interval straddles the gap",
    ),
    (
        boolean_numbers((boolean.CONJUNCTION_GAP, 0.1), HOLDS_PARITY),
        INCONCLUSIVE,
        "conjunction low exactly at the gap: not yet failing",
    ),
    (
        boolean_numbers((boolean.CONJUNCTION_GAP + UP, 0.1), HOLDS_PARITY),
        NOT_REPRODUCED,
        "conjunction low just above the gap",
    ),
    (
        boolean_numbers(HOLDS_GAP, FAILS_PARITY),
        NOT_REPRODUCED,
        "parity learned: above chance + margin",
    ),
    (boolean_numbers(HOLDS_GAP, (0.05, 0.1)), NOT_REPRODUCED, "parity below chance − margin"),
    (
        boolean_numbers(HOLDS_GAP, (0.3, CHANCE_LOW - UP)),
        NOT_REPRODUCED,
        "parity high just below the band",
    ),
    (
        boolean_numbers(HOLDS_GAP, (0.3, CHANCE_LOW)),
        INCONCLUSIVE,
        "parity high exactly at the band",
    ),
    (
        boolean_numbers(HOLDS_GAP, (CHANCE_HIGH + UP, 0.9)),
        NOT_REPRODUCED,
        "parity low just above the band",
    ),
    (
        boolean_numbers(HOLDS_GAP, (CHANCE_HIGH, 0.9)),
        INCONCLUSIVE,
        "parity low exactly at the band's top",
    ),
    (
        boolean_numbers(HOLDS_GAP, UNCLEAR_PARITY),
        INCONCLUSIVE,
        "parity interval leaves the band above",
    ),
    (
        boolean_numbers(HOLDS_GAP, (CHANCE_LOW - UP, 0.5)),
        INCONCLUSIVE,
        "parity interval leaves it below",
    ),
    (
        boolean_numbers(HOLDS_GAP, HOLDS_PARITY, boolean.GF2_FLOOR - UP),
        INCONCLUSIVE,
        "gf2 just below its floor: the parity half cannot hold",
    ),
    (
        boolean_numbers(HOLDS_GAP, FAILS_PARITY, boolean.GF2_FLOOR - UP),
        INCONCLUSIVE,
        "gf2 below its floor: the parity half cannot fail either",
    ),
    (
        boolean_numbers(FAILS_GAP, UNCLEAR_PARITY),
        NOT_REPRODUCED,
        "a failing half outweighs an unclear one",
    ),
    (boolean_numbers(FAILS_GAP, FAILS_PARITY), NOT_REPRODUCED, "both halves fail"),
    (boolean_numbers(UNCLEAR_GAP, UNCLEAR_PARITY), INCONCLUSIVE, "both halves unclear"),
]


# --- task-diversity: each finite M's side from the paired differences to ridge -----------------

DMMSE_GAP = (1.0, 0.9, 1.1)  # dMMSE − ridge (mean, ci_low, ci_high): half of it is 0.45 to 0.55
SIDES = {  # model − ridge (mean, ci_low, ci_high) that puts M on each side
    "ridge": (0.1, 0.05, 0.15),
    "dmmse": (0.9, 0.85, 0.95),
    "unclear": (0.5, 0.4, 0.6),
}


def diversity_numbers(
    infinite: float = 0.03, seed: int = 0, **by_pool: str | tuple[float, float, float]
) -> dict[str, float]:
    """``M16="ridge"`` or ``M16=(mean, low, high)`` of model − ridge; every M with DMMSE_GAP.
    An infinite pool (``Minf``), which has no side, is always added, its model − ridge
    ``infinite`` (the precondition: the M = ∞ model reached ridge). Keys of training seed
    ``seed``."""
    numbers: dict[str, float] = {}
    trained = (infinite, infinite - 0.01, infinite + 0.01)
    for label, model in {**by_pool, "Minf": trained}.items():
        gaps = {"model": SIDES[model] if isinstance(model, str) else model, "dmmse": DMMSE_GAP}
        for learner, (mean, low, high) in gaps.items():
            numbers[f"seed{seed}_{label}_{learner}_minus_ridge"] = mean
            numbers[f"seed{seed}_{label}_{learner}_minus_ridge_ci_low"] = low
            numbers[f"seed{seed}_{label}_{learner}_minus_ridge_ci_high"] = high
    return numbers


HALF_LOW, HALF_HIGH = diversity.MIDPOINT * DMMSE_GAP[1], diversity.MIDPOINT * DMMSE_GAP[2]
TASK_DIVERSITY = [
    (diversity_numbers(M1="dmmse", M16="dmmse", M256="ridge"), REPRODUCED, "dMMSE, then ridge"),
    (
        diversity_numbers(diversity.TRAINED, M1="dmmse", M256="ridge"),
        REPRODUCED,
        "the M = ∞ model exactly at the margin of ridge",
    ),
    (
        diversity_numbers(diversity.TRAINED + UP, M1="dmmse", M256="ridge"),
        INCONCLUSIVE,
        "the M = ∞ model short of ridge: an under-trained model cannot tell",
    ),
    (
        diversity_numbers(0.3, M1="dmmse", M16="dmmse", M256="dmmse"),
        INCONCLUSIVE,
        "never ridge, but neither is the M = ∞ model",
    ),
    (diversity_numbers(M1="dmmse", M16="unclear", M256="ridge"), REPRODUCED, "unclear in between"),
    (
        diversity_numbers(M256="ridge", M4="dmmse", M16="unclear"),
        REPRODUCED,
        "M in increasing order as numbers, whatever the order of the keys",
    ),
    (diversity_numbers(M1="dmmse", M16="dmmse", M256="dmmse"), NOT_REPRODUCED, "never ridge"),
    (
        diversity_numbers(M1="ridge", M16="ridge", M256="ridge"),
        NOT_REPRODUCED,
        "ridge from the start",
    ),
    (
        diversity_numbers(M1="ridge", M16="unclear", M256="unclear"),
        NOT_REPRODUCED,
        "smallest M on ridge's side",
    ),
    (
        diversity_numbers(M1="dmmse", M4="ridge", M16="dmmse", M256="ridge"),
        NOT_REPRODUCED,
        "back to dMMSE after ridge",
    ),
    (
        diversity_numbers(M1="unclear", M16="ridge", M256="ridge"),
        INCONCLUSIVE,
        "smallest M unclear",
    ),
    (
        diversity_numbers(M1="dmmse", M16="unclear", M256="unclear"),
        INCONCLUSIVE,
        "largest M unclear",
    ),
    (
        diversity_numbers(M1="dmmse", M16="unclear", M256=(0.1, 0.05, HALF_LOW - UP)),
        REPRODUCED,
        "model's high just below half of dMMSE's low: ridge",
    ),
    (
        diversity_numbers(M1="dmmse", M16="unclear", M256=(0.1, 0.05, HALF_LOW)),
        INCONCLUSIVE,
        "model's high exactly at half of dMMSE's low: unclear",
    ),
    (
        diversity_numbers(M1=(0.9, HALF_HIGH + UP, 0.95), M16="unclear", M256="ridge"),
        REPRODUCED,
        "model's low just above half of dMMSE's high: dMMSE",
    ),
    (
        diversity_numbers(M1=(0.9, HALF_HIGH, 0.95), M16="unclear", M256="ridge"),
        INCONCLUSIVE,
        "model's low exactly at half of dMMSE's high: unclear",
    ),
    (diversity_numbers(M1="dmmse"), NOT_REPRODUCED, "one finite M: dMMSE is first and last"),
    (
        diversity_numbers(M1="dmmse", M256="ridge")
        | diversity_numbers(seed=1, M1="dmmse", M256="ridge"),
        REPRODUCED,
        "two seeds agree",
    ),
    (
        diversity_numbers(M1="dmmse", M256="ridge")
        | diversity_numbers(diversity.TRAINED + UP, seed=1, M1="dmmse", M256="ridge"),
        INCONCLUSIVE,
        "the second seed's M = ∞ model missed ridge: the seeds disagree",
    ),
    (
        diversity_numbers(M1="ridge", M256="ridge")
        | diversity_numbers(seed=1, M1="ridge", M256="ridge"),
        NOT_REPRODUCED,
        "ridge from the start in both seeds",
    ),
    (
        diversity_numbers(M1="dmmse", M16="unclear", M256="ridge")
        | diversity_numbers(seed=1, M256="ridge"),
        REPRODUCED,
        "the small pools trained with the first seed only, the seeds agree on the largest",
    ),
    (
        diversity_numbers(M1="dmmse", M256="ridge") | diversity_numbers(seed=1, M256="dmmse"),
        INCONCLUSIVE,
        "the seeds put the largest M on different sides: unclear",
    ),
    (
        diversity_numbers(M1="dmmse", M256="ridge")
        | diversity_numbers(seed=1, M1="ridge", M256="ridge"),
        INCONCLUSIVE,
        "the seeds put the smallest M on different sides: unclear",
    ),
    (
        diversity_numbers(M1="dmmse", M16="dmmse", M256="dmmse")
        | diversity_numbers(seed=1, M256="dmmse"),
        NOT_REPRODUCED,
        "never ridge in any seed",
    ),
]


# --- mqar-state: attention's worst accuracy, the best small-state mixer's start and drop -------


def recall_numbers(attention: float, start: float, drop: float, seed: int = 0) -> dict[str, float]:
    return {
        f"seed{seed}_attention_min": attention,
        f"seed{seed}_best_small_state_fewest_pairs": start,
        f"seed{seed}_best_small_state_drop": drop,
    }


MQAR = [
    (recall_numbers(0.99, 0.9, 0.6), REPRODUCED, "attention solves it, the small state falls off"),
    (
        recall_numbers(0.99, 0.9, 0.6) | recall_numbers(0.95, 0.8, 0.5, seed=1),
        REPRODUCED,
        "two seeds agree",
    ),
    (
        recall_numbers(0.99, 0.9, 0.6) | recall_numbers(0.95, 0.8, 0.0, seed=1),
        INCONCLUSIVE,
        "the seeds disagree (reproduced, not reproduced)",
    ),
    (
        recall_numbers(arch.SOLVES, 0.9, arch.FALLS_OFF),
        REPRODUCED,
        "both exactly at their thresholds",
    ),
    (recall_numbers(arch.SOLVES - UP, 0.9, 0.6), INCONCLUSIVE, "attention just below solving"),
    (recall_numbers(0.99, 0.9, arch.FALLS_OFF - UP), INCONCLUSIVE, "drop just below falling off"),
    (recall_numbers(0.99, 0.9, 0.0), NOT_REPRODUCED, "the small state holds up"),
    (
        recall_numbers(0.99, arch.LEARNED, arch.HOLDS_UP - UP),
        NOT_REPRODUCED,
        "start exactly learned",
    ),
    (recall_numbers(0.99, arch.LEARNED - UP, 0.0), INCONCLUSIVE, "start just below learned"),
    (recall_numbers(0.99, 0.9, arch.HOLDS_UP), INCONCLUSIVE, "drop exactly at holds-up"),
    (
        recall_numbers(arch.SOLVES - UP, 0.9, 0.0),
        INCONCLUSIVE,
        "holds up, but attention did not learn",
    ),
    (
        recall_numbers(0.076, 0.201, 0.146),
        INCONCLUSIVE,
        "the CPU-scale run: attention did not learn",
    ),
]


# --- icll-architectures: transformer − each other architecture, paired 95% interval ------------


def language_numbers(
    unigram: float = 0.45, seed: str = "seed0", **intervals: tuple[float, float]
) -> dict[str, float]:
    """One training seed's numbers: the unigram baseline and, per architecture, the 95%
    interval of transformer − it (the transformer at 0.8)."""
    numbers = {
        f"{seed}_transformer_late_accuracy": 0.8,
        f"{seed}_{arch.UNIGRAM}_late_accuracy": unigram,
    }
    for name, (low, high) in intervals.items():
        numbers[f"{seed}_{name}_late_accuracy"] = 0.8 - (low + high) / 2
        numbers |= {
            f"{seed}_transformer_minus_{name}": (low + high) / 2,
            f"{seed}_transformer_minus_{name}_ci_low": low,
            f"{seed}_transformer_minus_{name}_ci_high": high,
        }
    return numbers


def language_seeds(*seeds: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Seeds 0, 1, … each with its intervals (``language_numbers`` keyword arguments)."""
    numbers: dict[str, float] = {}
    for index, intervals in enumerate(seeds):
        numbers |= language_numbers(seed=f"seed{index}", **intervals)
    return numbers


ICLL = [
    (language_numbers(lstm=(0.05, 0.1), mamba=(0.01, 0.04)), REPRODUCED, "every interval above 0"),
    (
        language_numbers(0.8 - 0.075, lstm=(0.05, 0.1), mamba=(0.01, 0.04)),
        INCONCLUSIVE,
        "the lstm exactly at the unigram baseline: it has not learned in context",
    ),
    (
        language_numbers(0.8 - 0.075 - UP, lstm=(0.05, 0.1), mamba=(0.01, 0.04)),
        REPRODUCED,
        "every architecture just above the unigram baseline",
    ),
    (
        language_numbers(0.85, lstm=(-0.1, -0.02)),
        INCONCLUSIVE,
        "beaten, but below the unigram baseline: nothing learned to compare",
    ),
    (
        language_numbers(lstm=(0.05, 0.1), mamba=(arch.MARGIN, 0.04)),
        INCONCLUSIVE,
        "one low exactly at the margin",
    ),
    (
        language_numbers(lstm=(0.05, 0.1), mamba=(arch.MARGIN + UP, 0.04)),
        REPRODUCED,
        "just above it",
    ),
    (
        language_numbers(lstm=(-0.02, 0.05), mamba=(-0.01, 0.03)),
        INCONCLUSIVE,
        "every interval straddles 0",
    ),
    (
        language_numbers(lstm=(0.05, 0.1), mamba=(-0.1, -0.02)),
        NOT_REPRODUCED,
        "mamba beats the transformer",
    ),
    (
        language_numbers(lstm=(-0.03, 0.05), mamba=(-0.1, arch.BEATEN - UP)),
        NOT_REPRODUCED,
        "a high just below 0",
    ),
    (
        language_numbers(lstm=(0.05, 0.1), mamba=(-0.1, arch.BEATEN)),
        INCONCLUSIVE,
        "a high exactly at 0",
    ),
    (
        language_seeds(*[{"lstm": (0.05, 0.1), "linear_attention": (0.01, 0.02)}] * 3),
        REPRODUCED,
        "three seeds, every interval above 0 in each",
    ),
    (
        language_seeds(
            {"lstm": (0.05, 0.1), "linear_attention": (0.01, 0.02)},
            {"lstm": (0.05, 0.1), "linear_attention": (-0.005, 0.01)},
            {"lstm": (0.05, 0.1), "linear_attention": (0.01, 0.02)},
        ),
        INCONCLUSIVE,
        "one seed's linear attention interval straddles 0: the seeds disagree",
    ),
    (
        language_seeds(*[{"lstm": (0.05, 0.1), "linear_attention": (-0.03, -0.01)}] * 3),
        NOT_REPRODUCED,
        "linear attention beats the transformer in every seed",
    ),
]


# --- dpt-bandit: online regret vs Thompson sampling (paired) and UCB, after a learning check ---


def dpt_numbers(
    versus_thompson: tuple[float, float] = (-0.2, 0.3),
    model: tuple[float, float] = (4.0, 5.0),
    ucb: tuple[float, float] = (7.0, 8.0),
    offline: tuple[float, float] = (0.33, 0.12),
    thompson: float = 4.5,
) -> dict[str, float]:
    """Numbers as dpt-bandit records them: (low, high) of the CIs, (start, final) offline."""
    return {
        "model_minus_thompson_ci_low": versus_thompson[0],
        "model_minus_thompson_ci_high": versus_thompson[1],
        "model_final_ci_low": model[0],
        "model_final_ci_high": model[1],
        "ucb_final_ci_low": ucb[0],
        "ucb_final_ci_high": ucb[1],
        "model_offline_start": offline[0],
        "model_offline_final": offline[1],
        "thompson_final": thompson,
    }


DPT_MARGIN = dpt.MARGIN * 4.5  # the margin of dpt_numbers' Thompson regret
DPT = [
    (dpt_numbers(), REPRODUCED, "close to Thompson, below UCB"),
    (dpt_numbers(versus_thompson=(0.1, DPT_MARGIN)), REPRODUCED, "CI high exactly at the margin"),
    (
        dpt_numbers(versus_thompson=(0.1, DPT_MARGIN + UP)),
        INCONCLUSIVE,
        "CI high just above the margin",
    ),
    (dpt_numbers(model=(4.0, 7.0)), INCONCLUSIVE, "model's CI touches UCB's"),
    (
        dpt_numbers(versus_thompson=(DPT_MARGIN + UP, 2.0)),
        NOT_REPRODUCED,
        "clearly worse than Thompson",
    ),
    (
        dpt_numbers(versus_thompson=(DPT_MARGIN, 2.0)),
        INCONCLUSIVE,
        "CI low exactly at the margin",
    ),
    (dpt_numbers(model=(8.0 + UP, 9.0)), NOT_REPRODUCED, "clearly above UCB"),
    (
        dpt_numbers(offline=(0.33, dpt.LEARNED * 0.33 + UP)),
        INCONCLUSIVE,
        "does not read the history, whatever its online regret",
    ),
    (
        dpt_numbers(offline=(0.33, dpt.LEARNED * 0.33)),
        REPRODUCED,
        "offline regret exactly at the learning check",
    ),
]


# --- cache-vs-state: full cache learned, bounded memories fall off on recall, state vs evicting -


def cache_numbers(
    full: tuple[float, float] = (0.98, 0.02),
    recall_drops: tuple[float, float] = (0.5, 0.4),
    regression_gaps: tuple[float, float] = (0.05, 0.4),
    seed: str = "seed0",
) -> dict[str, float]:
    """(full-cache recall minimum, full-cache regression gap), (eviction, state) recall drops
    of one recall seed, (state, best evicting) regression gaps to least squares."""
    return {
        f"{seed}_recall_full_min": full[0],
        f"{seed}_recall_evict_drop": recall_drops[0],
        f"{seed}_recall_state_drop": recall_drops[1],
        "regression_full_gap": full[1],
        "regression_state_gap": regression_gaps[0],
        "regression_evict_gap": regression_gaps[1],
    }


def cache_seeds(*recall: dict[str, float]) -> dict[str, float]:
    """Recall seeds 0, 1, … (``cache_numbers`` keyword arguments each) with one regression."""
    numbers: dict[str, float] = {}
    for index, changes in enumerate(recall):
        numbers |= cache_numbers(**changes, seed=f"seed{index}")
    return numbers


CACHE = [
    (cache_numbers(), REPRODUCED, "both bounded memories fall off; state matches, eviction not"),
    (
        cache_numbers(recall_drops=(cache.FALLS_OFF, cache.FALLS_OFF)),
        REPRODUCED,
        "drops exactly at the threshold",
    ),
    (
        cache_numbers(regression_gaps=(cache.MATCHES, cache.FAILS)),
        REPRODUCED,
        "gaps exactly at their thresholds",
    ),
    (cache_numbers(full=(cache.SOLVES - UP, 0.02)), INCONCLUSIVE, "the full cache did not recall"),
    (cache_numbers(full=(0.98, cache.LEARNS + UP)), INCONCLUSIVE, "the full cache did not regress"),
    (cache_numbers(recall_drops=(0.0, 0.4)), NOT_REPRODUCED, "eviction holds up on recall"),
    (cache_numbers(regression_gaps=(0.05, 0.0)), NOT_REPRODUCED, "eviction matches least squares"),
    (cache_numbers(regression_gaps=(cache.FAILS + UP, 0.4)), NOT_REPRODUCED, "the state fails"),
    (cache_numbers(recall_drops=(0.1, 0.4)), INCONCLUSIVE, "eviction drops, but too little"),
    (cache_numbers(regression_gaps=(0.15, 0.4)), INCONCLUSIVE, "the state is near, not within"),
    (cache_numbers(recall_drops=(0.5, 0.1)), INCONCLUSIVE, "the state holds up on recall"),
    (cache_seeds({}, {}, {}), REPRODUCED, "three recall seeds agree"),
    (
        cache_seeds({}, {"full": (cache.SOLVES - UP, 0.02)}, {}),
        INCONCLUSIVE,
        "one seed's full cache did not recall",
    ),
    (
        cache_seeds({}, {"recall_drops": (0.0, 0.4)}, {}),
        INCONCLUSIVE,
        "one seed's eviction holds up: the seeds disagree",
    ),
    (
        cache_seeds({"recall_drops": (0.0, 0.4)}, {"recall_drops": (0.01, 0.4)}),
        NOT_REPRODUCED,
        "every seed's eviction holds up",
    ),
]


# --- linear-probes: R² of the least-squares estimate, untrained control, gain with depth -------


def probe_numbers(
    best: float = 0.85, control: float = 0.0, gain: float = 0.15, error: float = 0.02
) -> dict[str, float]:
    return {
        "r2_best": best,
        "untrained_r2_best": control,
        "r2_depth_gain": gain,
        "model_error_at_2d": error,
    }


PROBES = [
    (probe_numbers(), REPRODUCED, "decoded, not by the probe alone, more with depth"),
    (
        probe_numbers(probing.DECODED, probing.CONTROL - UP, probing.DEEPER, probing.LEARNED),
        REPRODUCED,
        "every threshold exactly at its boundary",
    ),
    (probe_numbers(error=probing.LEARNED + UP), INCONCLUSIVE, "the model did not learn"),
    (probe_numbers(best=0.1, error=0.9), INCONCLUSIVE, "nothing decoded from an unlearned model"),
    (probe_numbers(best=probing.DECODED - UP), INCONCLUSIVE, "decoded, but not well enough"),
    (probe_numbers(control=probing.CONTROL), INCONCLUSIVE, "the untrained model decodes some"),
    (probe_numbers(gain=probing.DEEPER - UP), INCONCLUSIVE, "barely more with depth"),
    (probe_numbers(best=probing.ABSENT - UP, gain=0.1), NOT_REPRODUCED, "not in the states"),
    (probe_numbers(gain=-UP), NOT_REPRODUCED, "shallower layers decode it better"),
    (probe_numbers(best=0.5, control=0.5), NOT_REPRODUCED, "the probe alone decodes as well"),
]


# --- induction-heads: per seed, the accuracy jump against the prefix-matching head's rise -----


def seed_dynamics(
    seed: int,
    accuracy: tuple[float, float] = (0.05, 0.99),
    induction_end: float = 0.8,
    jump: float = 300.0,
    head: float = 300.0,
) -> dict[str, float]:
    return {
        f"seed{seed}_accuracy_start": accuracy[0],
        f"seed{seed}_accuracy_end": accuracy[1],
        f"seed{seed}_head_start": 0.1,
        f"seed{seed}_head_end": induction_end,
        f"seed{seed}_jump_step": jump,
        f"seed{seed}_head_step": head,
    }


def emergence_numbers(*seeds: dict[str, float], steps: float = 600.0) -> dict[str, float]:
    numbers = {"steps": steps}
    for seed in seeds:
        numbers |= seed
    return numbers


TOGETHER_STEPS = emergence.TOGETHER * 600.0
APART_STEPS = emergence.APART * 600.0
INDUCTION = [
    (emergence_numbers(*(seed_dynamics(s) for s in range(3))), REPRODUCED, "three seeds agree"),
    (
        emergence_numbers(
            seed_dynamics(
                0,
                (emergence.LEARNED - emergence.RISE, emergence.LEARNED),
                emergence.HEAD,
                jump=300.0,
                head=300.0 + TOGETHER_STEPS,
            )
        ),
        REPRODUCED,
        "every threshold exactly at its boundary",
    ),
    (
        emergence_numbers(seed_dynamics(0), seed_dynamics(1, head=300.0 + APART_STEPS + 25)),
        INCONCLUSIVE,
        "the seeds disagree",
    ),
    (
        emergence_numbers(seed_dynamics(0, accuracy=(0.05, emergence.LEARNED - UP))),
        INCONCLUSIVE,
        "the model did not learn recall",
    ),
    (
        emergence_numbers(seed_dynamics(0, accuracy=(0.5 + UP, 1.0))),
        INCONCLUSIVE,
        "no jump to time: accuracy was already high",
    ),
    (
        emergence_numbers(seed_dynamics(0, induction_end=emergence.NO_HEAD - UP)),
        NOT_REPRODUCED,
        "learned without an induction head",
    ),
    (
        emergence_numbers(seed_dynamics(0, induction_end=emergence.HEAD - UP)),
        INCONCLUSIVE,
        "a weak head at the same time",
    ),
    (
        emergence_numbers(seed_dynamics(0, head=300.0 + TOGETHER_STEPS + 25)),
        INCONCLUSIVE,
        "just past together, not yet apart",
    ),
    (
        emergence_numbers(seed_dynamics(0, head=300.0 + APART_STEPS)),
        INCONCLUSIVE,
        "exactly at apart",
    ),
    (
        emergence_numbers(*(seed_dynamics(s, jump=100.0, head=500.0) for s in range(3))),
        NOT_REPRODUCED,
        "the head comes long after the jump, every seed",
    ),
]


# --- bursty-icl: bursty − uniform on novel classes, uniform − bursty on absent ones -----------


def bursty_numbers(
    icl: tuple[float, float] = (0.4, 0.5), iwl: tuple[float, float] = (0.01, 0.05), seed: int = 0
) -> dict[str, float]:
    return {
        f"seed{seed}_icl_difference_ci_low": icl[0],
        f"seed{seed}_icl_difference_ci_high": icl[1],
        f"seed{seed}_iwl_difference_ci_low": iwl[0],
        f"seed{seed}_iwl_difference_ci_high": iwl[1],
    }


BURSTY = [
    (bursty_numbers(), REPRODUCED, "ICL with bursts, IWL without"),
    (bursty_numbers() | bursty_numbers(seed=1), REPRODUCED, "two seeds agree"),
    (
        bursty_numbers() | bursty_numbers(icl=(0.0, 0.04), seed=1),
        INCONCLUSIVE,
        "the second seed never learned in context: the seeds disagree",
    ),
    (
        bursty_numbers(icl=(bursty.ICL_GAP, 0.5), iwl=(bursty.IWL_GAP + UP, 0.05)),
        REPRODUCED,
        "both exactly past their thresholds",
    ),
    (bursty_numbers(icl=(bursty.ICL_GAP - UP, 0.5)), INCONCLUSIVE, "ICL gap just short"),
    (bursty_numbers(iwl=(bursty.IWL_GAP, 0.05)), INCONCLUSIVE, "IWL difference may be 0"),
    (
        bursty_numbers(icl=(-0.02, bursty.NO_ICL_GAP - UP)),
        NOT_REPRODUCED,
        "burstiness brings no ICL",
    ),
    (bursty_numbers(icl=(0.0, bursty.NO_ICL_GAP)), INCONCLUSIVE, "ICL CI up to the no-effect edge"),
    (
        bursty_numbers(iwl=(-0.05, -bursty.IWL_GAP - UP)),
        NOT_REPRODUCED,
        "the bursty model is better in its weights too",
    ),
]


# --- icl-transience: ICL peak, its fade to the last checkpoint, IWL at both ---------------------


def transience_numbers(
    peak: float = 0.99,
    fade: tuple[float, float] = (0.4, 0.5),
    iwl: tuple[float, float] = (0.05, 0.8),
    seed: int = 0,
) -> dict[str, float]:
    """``fade``: (ci_low, ci_high) of peak − final ICL; ``iwl``: (at the peak, final)."""
    return {
        f"seed{seed}_icl_peak": peak,
        f"seed{seed}_icl_fade_ci_low": fade[0],
        f"seed{seed}_icl_fade_ci_high": fade[1],
        f"seed{seed}_iwl_at_peak": iwl[0],
        f"seed{seed}_iwl_final": iwl[1],
    }


TRANSIENCE = [
    (transience_numbers(), REPRODUCED, "ICL rose, then faded as IWL took over"),
    (transience_numbers() | transience_numbers(seed=1), REPRODUCED, "two seeds agree"),
    (
        transience_numbers() | transience_numbers(peak=transience.EMERGED - UP, seed=1),
        INCONCLUSIVE,
        "ICL never emerged in the second seed: the seeds disagree",
    ),
    (transience_numbers(peak=transience.EMERGED - UP), INCONCLUSIVE, "ICL peak just short"),
    (
        transience_numbers(peak=transience.EMERGED, fade=(transience.FADES, 0.5)),
        REPRODUCED,
        "peak and fade exactly at their thresholds",
    ),
    (transience_numbers(fade=(transience.FADES - UP, 0.5)), INCONCLUSIVE, "fade just short"),
    (
        transience_numbers(iwl=(0.1, 0.1 + transience.TAKES_OVER)),
        REPRODUCED,
        "IWL rose exactly by its threshold",
    ),
    (
        transience_numbers(iwl=(0.1, 0.1 + transience.TAKES_OVER - 0.01)),
        INCONCLUSIVE,
        "ICL faded but IWL did not take over",
    ),
    (
        transience_numbers(fade=(-0.03, transience.PERSISTS - UP), iwl=(0.6, 0.95)),
        NOT_REPRODUCED,
        "ICL persists beside learned IWL",
    ),
    (
        transience_numbers(fade=(-0.03, transience.PERSISTS - UP), iwl=(0.3, 0.9)),
        NOT_REPRODUCED,
        "ICL persists though IWL rose to near perfect",
    ),
    (
        transience_numbers(fade=(-0.03, transience.PERSISTS), iwl=(0.6, 0.95)),
        INCONCLUSIVE,
        "the fade's interval reaches the persistence edge",
    ),
    (
        transience_numbers(
            fade=(-0.03, transience.PERSISTS - UP),
            iwl=(0.05, transience.IWL_LEARNED - UP),
        ),
        INCONCLUSIVE,
        "ICL persists but IWL was never learned: trained too short to tell",
    ),
]


TABLES: dict[str, list[tuple[dict[str, float], Outcome, str]]] = {
    "garg-linear": GARG,
    "von-oswald-gd": VON_OSWALD,
    "boolean": BOOLEAN,
    "task-diversity": TASK_DIVERSITY,
    "mqar-state": MQAR,
    "icll-architectures": ICLL,
    "dpt-bandit": DPT,
    "cache-vs-state": CACHE,
    "linear-probes": PROBES,
    "induction-heads": INDUCTION,
    "bursty-icl": BURSTY,
    "icl-transience": TRANSIENCE,
}
CASES = [
    pytest.param(name, numbers, expected, id=f"{name}: {why}")
    for name, table in TABLES.items()
    for numbers, expected, why in table
]


@pytest.mark.parametrize(("name", "numbers", "expected"), CASES)
def test_decide_gives_the_tabled_outcome(name, numbers, expected):
    # read-only numbers: decide may not change what verdict.json records
    assert REPRODUCTIONS.get(name).decide(MappingProxyType(numbers)) == expected


@pytest.mark.parametrize("name", REPRODUCTIONS.names())
def test_every_reproduction_decides_from_numbers_alone_with_a_table_reaching_every_outcome(name):
    """A new reproduction is covered here without editing this test: it needs a table (above)
    whose cases reach each outcome, and a ``decide`` callable on the class (no instance)."""
    assert name in TABLES, f"add a decision table for {name!r} to this file"
    decide = REPRODUCTIONS.get(name).decide
    outcomes = [decide(MappingProxyType(numbers)) for numbers, _, _ in TABLES[name]]
    assert set(outcomes) <= set(OUTCOMES)
    assert set(outcomes) == set(OUTCOMES), f"{name}'s table does not reach every outcome"


def test_the_task_diversity_sides_follow_the_order_of_m_not_of_the_keys():
    numbers = diversity_numbers(M256="ridge", M4="dmmse", M16="unclear")
    assert list(diversity.sides(numbers, "seed0").items()) == [
        (4, "dmmse"),
        (16, "unclear"),
        (256, "ridge"),
    ]


@pytest.mark.parametrize(
    ("name", "numbers"),
    [
        ("task-diversity", diversity_numbers()),  # only M = ∞: no finite M
        ("icll-architectures", language_numbers()),  # no architecture besides the transformer
        ("induction-heads", {"steps": 600.0}),  # no seed
        ("mqar-state", {"softmax_state": 4608.0}),  # no seed
        ("bursty-icl", {"icl_chance_a_context_label": 0.5}),  # no seed
        ("icl-transience", {"iwl_chance": 1 / 32}),  # no seed
    ],
)
def test_a_decision_without_its_comparisons_is_an_error_not_a_verdict(name, numbers):
    with pytest.raises(ValueError):
        REPRODUCTIONS.get(name).decide(numbers)
