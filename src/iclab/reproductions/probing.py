"""Akyürek et al. 2022: a transformer trained on linear regression holds the least-squares
estimate in its hidden states, decodable by a linear probe, and more so in deeper layers."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.pyplot as plt

from iclab.config import RunConfig
from iclab.io import atomic_write_text
from iclab.models import InContextModel
from iclab.probes.linear_probes import LinearProbe, LinearProbeOptions
from iclab.probes.run_probe import table_csv
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
    curve,
    evaluated_curves,
    newer_than_checkpoints,
    register_reproduction,
    trained_all,
    trained_model,
    untrained_model,
)
from iclab.run import RunDir
from iclab.seeding import generator_for

# cpu: the quickstart task and model (d = 5, 21 points, 4 layers of width 64, GPT-2 blocks
# without the quickstart's short convolution, at softmax's swept 2e-3; Akyürek et al. probe
# d = 4 with up to 16 layers of width 512) trained 3000 steps. paper: Garg et al.'s model on
# d = 20. smoke: a tiny model a few steps.
SETTINGS: dict[Scale, PresetChanges] = {
    "smoke": PresetChanges(
        "quickstart",
        {"model": {**SMOKE_MODEL, "mixer": "softmax"}, "train": SMOKE_TRAIN, "eval": SMOKE_EVAL},
    ),
    "cpu": PresetChanges(
        "quickstart",
        {
            "model": {"mixer": "softmax"},
            "train": {"steps": 3000, "lr": 2.0e-3, "log_every": 100, "stop_at": None},
        },
    ),
    "paper": PresetChanges("garg_linear_regression", {"eval": {"algorithms": ["least_squares"]}}),
}
PROBE_PROMPTS: dict[Scale, int] = {"smoke": 64, "cpu": 2048, "paper": 4096}
FIT_STEPS: dict[Scale, int] = {"smoke": 20, "cpu": 2000, "paper": 4000}
TARGETS = ("least_squares", "xty")
POOLINGS = ("attention", "token")  # Akyürek et al.'s pooled probe decides; x_k's token is shown
# Decided before the CPU run (R² of the least-squares estimate after the prompt's last example
# but one, held out, attention-pooled probe).
LEARNED = 0.1  # the model must be in-context learning: error / E[y²] at k = 2d at most this
DECODED = 0.6  # the best layer's R² that counts as "held in the hidden states"
CONTROL = 0.2  # the same probe on the untrained model must stay below this (not the probe alone)
DEEPER = 0.05  # R² gain, first block → best of the deeper half, that counts as "more with depth"
ABSENT = 0.3  # a best R² below this (of a model that learned) means the estimate is not there


def run_config(scale: Scale) -> RunConfig:
    return SETTINGS[scale].config(name="linear-probes")


def probe_rows(
    model: InContextModel, config: RunConfig, scale: Scale, pooling: str, name: str
) -> list[dict]:
    """linear_probe's R² rows (target, layer, position, r2) at k = 2d and the last x, of the
    model called ``name`` (its probe prompts drawn from that name)."""
    n_points, d = config.task.n_points, config.task.n_dims
    options = LinearProbeOptions(
        targets=TARGETS,
        n_prompts=PROBE_PROMPTS[scale],
        positions=(min(2 * d, n_points - 1), n_points - 1),
        pooling=pooling,
        fit_steps=FIT_STEPS[scale],
    )
    generator = generator_for(config.eval.seed, "linear-probes", name)
    result = LinearProbe(options).run(model.eval(), config.task.build(), n_points, generator)
    return [{**row, "pooling": pooling, "model": name} for row in result.tables["r2"]]


def probed(run: RunDir, config: RunConfig, scale: Scale, path: Path) -> list[dict]:
    """Every probe row of the trained and the untrained model, both poolings: written to
    ``path`` and read back while it is newer than the run's checkpoints."""
    if newer_than_checkpoints(path, [run]):
        return read_probe_rows(path)
    models = {"trained": trained_model(run), "untrained": untrained_model(config, seed=0)}
    rows = [
        row
        for name, model in models.items()
        for pooling in POOLINGS
        for row in probe_rows(model, config, scale, pooling, name)
    ]
    atomic_write_text(path, table_csv(rows))
    return rows


def read_probe_rows(path: Path) -> list[dict]:
    """The rows ``probed`` wrote, with numbers as numbers."""
    with path.open() as file:
        return [
            {
                **row,
                "layer": int(row["layer"]),
                "position": int(row["position"]),
                "r2": float(row["r2"]),
            }
            for row in csv.DictReader(file)
        ]


def by_layer(rows: list[dict], model: str, pooling: str, target: str, position: int) -> list[float]:
    """R² per layer (0 = the embeddings) of one model, pooling, target and position."""
    chosen = [
        row
        for row in rows
        if (row["model"], row["pooling"], row["target"], row["position"])
        == (model, pooling, target, position)
    ]
    return [row["r2"] for row in sorted(chosen, key=lambda row: row["layer"])]


@register_reproduction("linear-probes")
class LinearProbes(Reproduction):
    """The least-squares estimate is linearly decodable from the hidden states, more so deeper."""

    paper = "Akyürek et al. 2022, arXiv 2211.15661, Section 5 and Figure 4"
    claim = (
        "A transformer trained on linear regression holds the least-squares estimate of the "
        "examples it has read in its hidden states: a linear probe (attention-pooled over the "
        "tokens so far) decodes it from the trained model, increasingly with depth, and not "
        "from the same model untrained."
    )
    cpu_minutes = 5

    @staticmethod
    def decide(numbers: dict[str, float]) -> Outcome:
        if numbers["model_error_at_2d"] > LEARNED:
            return "inconclusive"
        best, control = numbers["r2_best"], numbers["untrained_r2_best"]
        gain = numbers["r2_depth_gain"]
        if best >= DECODED and control < CONTROL and gain >= DEEPER:
            return "reproduced"
        if best < ABSENT or gain < 0.0 or control >= best:
            return "not reproduced"
        return "inconclusive"

    @staticmethod
    def trainings(scale: Scale) -> dict[str, RunConfig]:
        return {"run": run_config(scale)}

    def run(self, out: Path, scale: Scale, show_progress: bool = True) -> Verdict:
        config = run_config(scale)
        run = trained_all(self.trainings(scale), out, show_progress)["run"]
        d, last = config.task.n_dims, config.task.n_points - 1
        model_curve = curve(evaluated_curves(run), "model")
        rows = probed(run, config, scale, out / "probes.csv")
        trained_r2 = by_layer(rows, "trained", "attention", "least_squares", last)
        untrained_r2 = by_layer(rows, "untrained", "attention", "least_squares", last)
        token_r2 = by_layer(rows, "trained", "token", "least_squares", last)
        deeper = trained_r2[1 + len(trained_r2) // 2 :] or trained_r2[-1:]
        save_figure(self.figure(rows, config, scale), out / "figure.png")
        numbers = {f"r2_layer{layer}": r2 for layer, r2 in enumerate(trained_r2)}
        numbers |= {
            "r2_best": max(trained_r2),
            "r2_best_layer": float(trained_r2.index(max(trained_r2))),
            "r2_depth_gain": max(deeper) - trained_r2[1],
            "untrained_r2_best": max(untrained_r2),
            "token_probe_r2_best": max(token_r2),
            "xty_r2_best": max(by_layer(rows, "trained", "attention", "xty", last)),
            "model_error_at_2d": model_curve[min(2 * d, last)].mean,
            "steps": config.train.steps,
        }
        return self.judged(
            numbers,
            scale,
            quantity=f"held-out R² of an attention-pooled linear probe from each layer to the "
            f"least-squares estimate of the first {last} examples (layer 0 = embeddings), for "
            "the trained model and the same model untrained; depth gain = best R² of the "
            "deeper half of the layers − R² after the first block",
            threshold=f"inconclusive when the model's error at k = 2d > {LEARNED} (it has not "
            f"learned in context); reproduced when the best R² ≥ {DECODED}, the untrained "
            f"model's < {CONTROL} and the depth gain ≥ {DEEPER}; not reproduced when the best "
            f"R² < {ABSENT}, the gain < 0 or the untrained model decodes as well; inconclusive "
            "otherwise",
        )

    @staticmethod
    def figure(rows: list[dict], config: RunConfig, scale: Scale) -> plt.Figure:
        """R² by layer for each target: trained (pooled and x_k's token) and untrained."""
        last = config.task.n_points - 1
        figure, axes = plt.subplots(1, len(TARGETS), figsize=(5 * len(TARGETS), 3.8))
        lines = (
            ("trained", "attention", "trained, attention-pooled", "-o"),
            ("trained", "token", "trained, x_k's token only", "--s"),
            ("untrained", "attention", "untrained, attention-pooled", ":^"),
        )
        for axis, target in zip(axes, TARGETS, strict=True):
            for model, pooling, label, style in lines:
                values = by_layer(rows, model, pooling, target, last)
                axis.plot(range(len(values)), values, style, label=label)
            axis.set_ylim(-0.1, 1.0)
            axis.set_xticks(range(config.model.n_layers + 1))
            axis.set_xlabel("layer (0 = embeddings)")
            axis.set_ylabel("held-out R²")
            axis.set_title(f"{target} of the first {last} examples", fontsize=10)
            axis.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        figure.suptitle(
            f"Akyürek et al.: probing a linear-regression transformer ({scale} scale, "
            f"d = {config.task.n_dims})"
        )
        figure.tight_layout()
        return figure
