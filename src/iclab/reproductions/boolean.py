"""Bhattamishra et al. 2023: transformers learn conjunctions in context, not sparse parities."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from iclab.config import load_config
from iclab.evaluation.curves import CurvePoint, PairedDifference, read_differences_csv
from iclab.report.plots import save_figure
from iclab.reproductions.base import (
    Reproduction,
    Scale,
    Verdict,
    curve,
    evaluated,
    late_average,
    register_reproduction,
    trained,
)

# Both presets trained longer on CPU (conjunction 4x, parity 3x: the parity model gets more than
# its preset's chance to learn); the paper's sizes on a GPU (conjunctions: n = 28, 70 examples;
# sparse parities: n = 10, k = 2, 140 examples; 12 layers of width 256). The paper's number of
# training steps is not in REFERENCES.md; 20k steps is our choice.
PAPER_MODEL = ["model.n_layers=12", "model.d_model=256", "model.n_heads=8", "train.steps=20000"]
CONFIGS = {
    "cpu": {
        "conjunction": ("conjunction", ["train.steps=2000", "train.checkpoint_every=500"]),
        "sparse_parity": ("sparse_parity", ["train.steps=1000", "train.checkpoint_every=500"]),
    },
    "paper": {
        "conjunction": (
            "conjunction",
            ["task.n_dims=28", "task.n_points=70", "train.curriculum.points.end=70", *PAPER_MODEL],
        ),
        "sparse_parity": (
            "sparse_parity",
            ["task.n_points=140", "train.curriculum.points.end=140", *PAPER_MODEL],
        ),
    },
}
# Decided before the CPU run. "Late k": k ≥ 2n for conjunctions (elimination is near exact there),
# k ≥ 1.5n for parities (GF(2) elimination is exact once the examples span the support).
CONJUNCTION_GAP = 0.05  # elimination − model accuracy at late k that still counts as near-optimal
PARITY_MARGIN = 0.10  # model accuracy at late k within this of chance (0.5) counts as not learned
GF2_FLOOR = 0.95  # the yardstick must show that parities are learnable from these prompts


def differences(run_path: Path, learner: str) -> dict[int, PairedDifference]:
    """``learner`` − the run's reference algorithm, by k, on the training distribution."""
    rows = read_differences_csv(run_path / "eval" / "differences.csv")
    return {d.k: d for d in rows if d.learner == learner and d.shift == "none"}


def decide(holds: bool, fails: bool) -> str:
    return "holds" if holds else "fails" if fails else "unclear"


@register_reproduction("boolean")
class Boolean(Reproduction):
    """Conjunctions are learned in context about as well as elimination; sparse parities are not
    learned at all, though GF(2) elimination solves them from the same prompts."""

    paper = "Bhattamishra et al. 2023, arXiv 2310.03016, Figure 2 and Table 1"
    claim = (
        "A transformer meta-trained on Boolean functions learns conjunctions in context nearly "
        "as well as the elimination algorithm, but stays near chance on sparse parities, which "
        "Gaussian elimination over GF(2) learns exactly from the same examples."
    )
    cpu_minutes = 11.0  # wall time on the shared 2-core machine; 4.4 minutes of one core

    def run(self, out: Path, scale: Scale, show_progress: bool = True) -> Verdict:
        runs, points = {}, {}
        for family, (preset, overrides) in CONFIGS[scale].items():
            config = load_config(preset, [f"name=boolean-{family}", *overrides])
            runs[family] = (config, trained(config, out / family, show_progress))
            points[family] = evaluated(runs[family][1])

        conjunction_config, conjunction_run = runs["conjunction"]
        conjunction_k = 2 * conjunction_config.task.n_dims
        # The differences are model − elimination (the run's reference, its first yardstick);
        # negated, elimination − model, with the interval's ends swapped.
        lag, lag_low, lag_high = late_average(
            differences(conjunction_run.path, "model").values(), conjunction_k
        )
        gap, gap_low, gap_high = -lag, -lag_high, -lag_low
        conjunction = decide(gap_high <= CONJUNCTION_GAP, gap_low > CONJUNCTION_GAP)

        parity_config, _ = runs["sparse_parity"]
        parity_k = (3 * parity_config.task.n_dims) // 2
        parity_model = late_average(curve(points["sparse_parity"], "model").values(), parity_k)
        gf2 = late_average(curve(points["sparse_parity"], "gf2_elimination").values(), parity_k)[0]
        if gf2 < GF2_FLOOR:
            parity = "unclear"  # the prompts do not pin the parity down: nothing to conclude
        else:
            low, high = parity_model[1], parity_model[2]
            parity = decide(
                low >= 0.5 - PARITY_MARGIN and high <= 0.5 + PARITY_MARGIN,
                low > 0.5 + PARITY_MARGIN or high < 0.5 - PARITY_MARGIN,
            )

        self.draw(points, conjunction_k, parity_k, out / "figure.png", scale)
        halves = (conjunction, parity)
        if all(half == "holds" for half in halves):
            outcome = "reproduced"
        elif "fails" in halves:
            outcome = "not reproduced"
        else:
            outcome = "inconclusive"
        conjunction_points = points["conjunction"]
        return Verdict(
            reproduction=self.name,
            paper=self.paper,
            claim=self.claim,
            quantity="late-k mean accuracy: conjunctions (k ≥ 2n), elimination − model from the "
            "paired differences; sparse parities (k ≥ 1.5n), model and gf2_elimination",
            threshold=f"conjunction half holds when the gap's 95% CI is ≤ {CONJUNCTION_GAP} "
            f"(fails when it is > {CONJUNCTION_GAP}); parity half holds when the model's CI lies "
            f"within {PARITY_MARGIN} of 0.5 and gf2_elimination ≥ {GF2_FLOOR} (fails when the CI "
            f"lies beyond {PARITY_MARGIN} of 0.5); reproduced only when both halves hold, not "
            "reproduced when one fails",
            verdict=outcome,
            numbers={
                **{
                    f"conjunction_{name}": round(
                        late_average(curve(conjunction_points, name).values(), conjunction_k)[0], 4
                    )
                    for name in ("model", "elimination")
                },
                "conjunction_gap": round(gap, 4),
                "conjunction_gap_ci_low": round(gap_low, 4),
                "conjunction_gap_ci_high": round(gap_high, 4),
                "conjunction_half_holds": float(conjunction == "holds"),
                "parity_model": round(parity_model[0], 4),
                "parity_model_ci_low": round(parity_model[1], 4),
                "parity_model_ci_high": round(parity_model[2], 4),
                "parity_gf2_elimination": round(gf2, 4),
                "parity_half_holds": float(parity == "holds"),
                "conjunction_steps": conjunction_config.train.steps,
                "parity_steps": parity_config.train.steps,
            },
            scale=scale,
        )

    def draw(
        self,
        points: dict[str, list[CurvePoint]],
        conjunction_k: int,
        parity_k: int,
        path: Path,
        scale: Scale,
    ) -> None:
        """Two panels like the paper's: accuracy vs k, the model against the yardsticks."""
        figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
        panels = [
            (
                "conjunction",
                "Conjunctions",
                ("model", "elimination", "knn(k=1)", "majority_label"),
                conjunction_k,
            ),
            (
                "sparse_parity",
                "Sparse parities",
                ("model", "gf2_elimination", "knn(k=1)", "majority_label"),
                parity_k,
            ),
        ]
        for ax, (family, title, learners, first_k) in zip(axes, panels, strict=True):
            for learner in learners:
                rows = sorted(curve(points[family], learner).values(), key=lambda p: p.k)
                style = (
                    {"linewidth": 2.4, "zorder": 3} if learner == "model" else {"linewidth": 1.4}
                )
                ks = [p.k for p in rows]
                ax.plot(ks, [p.mean for p in rows], label=learner, **style)
                ax.fill_between(ks, [p.ci_low for p in rows], [p.ci_high for p in rows], alpha=0.2)
            ax.axvline(first_k, color="grey", linestyle=":", linewidth=1, label="late k from here")
            ax.axhline(0.5, color="black", linewidth=0.8, alpha=0.4)
            ax.set_title(f"{title} ({scale} scale)")
            ax.set_xlabel("in-context examples k")
            ax.set_ylim(0.3, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(loc="best", framealpha=0.9)
        axes[0].set_ylabel("accuracy")
        save_figure(figure, path)
