"""Lee et al. 2023: a transformer pretrained to name the best arm acts like Thompson sampling."""

from __future__ import annotations

from pathlib import Path

from iclab.config import RunConfig
from iclab.evaluation.curves import read_curves_csv, read_differences_csv
from iclab.kinds.decisions import ONLINE_METRICS
from iclab.report.plots import plot_curves
from iclab.reproductions.base import (
    SMOKE_EVAL,
    SMOKE_MODEL,
    SMOKE_TRAIN,
    Outcome,
    PresetChanges,
    Reproduction,
    Scale,
    Verdict,
    curve,
    evaluated,
    register_reproduction,
    trained_all,
)

# cpu: the bandit preset (5 Gaussian arms, noise 0.3, horizon 50 instead of the paper's 500);
# paper: DPT's horizon of 500 and its depth, heads and lr (4 layers, 4 heads, 1e-4) at width 128
# on a GPU: 0.70 TFLOP per step, 70 PFLOP in all, about 10-20 minutes of one H100 in bfloat16
# (an estimate from iclab's FLOP count at 6-12% utilisation; not run); smoke: a tiny model a few
# steps on 10-step histories.
SETTINGS: dict[Scale, PresetChanges] = {
    "smoke": PresetChanges(
        "bandit",
        {
            "task": {"n_points": 10},
            "model": SMOKE_MODEL,
            "train": SMOKE_TRAIN,
            "eval": SMOKE_EVAL,
        },
    ),
    "cpu": PresetChanges("bandit", {"train": {"steps": 4000, "log_every": 100}}),
    "paper": PresetChanges(
        "bandit",
        {
            "task": {"n_points": 500},
            "model": {"n_layers": 4, "d_model": 128, "n_heads": 4},
            "train": {
                "steps": 100_000,
                "lr": 1.0e-4,
                "precision": "auto",
                "checkpoint_every": 5000,
            },
            "eval": {"n_prompts": 1024, "batch_size": 256},
        },
    ),
}
ONLINE = "online"
# Decided before the CPU run.
MARGIN = 0.2  # the model matches Thompson sampling within 20% of its cumulative regret
LEARNED = 0.5  # precondition: offline, the model's regret after the whole history is at most
# half its regret with no history (it reads the history at all)


def run_config(scale: Scale) -> RunConfig:
    return SETTINGS[scale].config(name="dpt-bandit")


@register_reproduction("dpt-bandit")
class DPTBandit(Reproduction):
    """Online regret of a Decision-Pretrained Transformer against Thompson sampling and UCB."""

    paper = "Lee et al. 2023 (DPT), arXiv 2306.14892, Figure 3 (online bandits)"
    claim = (
        "A transformer pretrained only to name the best arm from random bandit histories, "
        "then run online on unseen bandits (sampling its actions from its own predictions), "
        "has cumulative regret close to Thompson sampling with the true prior and below UCB's."
    )
    cpu_minutes = 10.3

    @staticmethod
    def decide(numbers: dict[str, float]) -> Outcome:
        if numbers["model_offline_final"] > LEARNED * numbers["model_offline_start"]:
            return "inconclusive"  # the model does not read the history: nothing to judge
        margin = MARGIN * numbers["thompson_final"]
        below_ucb = numbers["model_final_ci_high"] < numbers["ucb_final_ci_low"]
        above_ucb = numbers["model_final_ci_low"] > numbers["ucb_final_ci_high"]
        if numbers["model_minus_thompson_ci_high"] <= margin and below_ucb:
            return "reproduced"
        if numbers["model_minus_thompson_ci_low"] > margin or above_ucb:
            return "not reproduced"
        return "inconclusive"

    @staticmethod
    def trainings(scale: Scale) -> dict[str, RunConfig]:
        return {"run": run_config(scale)}

    def run(self, out: Path, scale: Scale, show_progress: bool = True) -> Verdict:
        config = run_config(scale)
        run = trained_all(self.trainings(scale), out, show_progress)["run"]
        directory = evaluated(run)
        points = read_curves_csv(directory / "curves.csv")
        differences = read_differences_csv(directory / "differences.csv")
        last = config.task.n_points - 1
        final = {name: curve(points, name, ONLINE)[last] for name in ("model", "thompson", "ucb")}
        offline = curve(points, "model")
        versus_thompson = next(
            row
            for row in differences
            if row.learner == "model" and row.shift == ONLINE and row.k == last
        )
        plot_curves(
            [
                p
                for p in points
                if p.shift == ONLINE and p.learner in ("model", "thompson", "ucb", "greedy")
            ],
            out / "figure.png",
            f"{config.name} ({scale} scale): {config.task.n_arms}-armed Gaussian bandits, online",
            ONLINE_METRICS[ONLINE].label,
            xlabel="steps k",
        )
        numbers = {
            "model_final": final["model"].mean,
            "model_final_ci_low": final["model"].ci_low,
            "model_final_ci_high": final["model"].ci_high,
            "thompson_final": final["thompson"].mean,
            "ucb_final": final["ucb"].mean,
            "ucb_final_ci_low": final["ucb"].ci_low,
            "ucb_final_ci_high": final["ucb"].ci_high,
            "model_minus_thompson": versus_thompson.mean,
            "model_minus_thompson_ci_low": versus_thompson.ci_low,
            "model_minus_thompson_ci_high": versus_thompson.ci_high,
            "model_offline_start": offline[0].mean,
            "model_offline_final": offline[last].mean,
            "horizon": config.task.n_points,
            "steps": config.train.steps,
        }
        return self.judged(
            numbers,
            scale,
            quantity=f"cumulative regret after {config.task.n_points} online steps: model − "
            "Thompson sampling (paired on the same bandits and reward noise, 95% CI), and the "
            "model's and UCB1's 95% CIs",
            threshold=f"reproduced when the CI of model − Thompson stays ≤ {MARGIN} × Thompson's "
            "regret and the model's CI lies below UCB's; not reproduced when that CI lies above "
            f"the margin or the model's CI above UCB's; inconclusive otherwise, or when offline "
            f"the model's regret after the whole history is above {LEARNED} × its regret with no "
            "history (it has not learned to read histories)",
        )
