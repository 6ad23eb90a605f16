"""von Oswald et al. 2023: one trained linear self-attention layer is one step of gradient
descent."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch

from iclab.config import RunConfig, build_config, merged
from iclab.models import InContextModel
from iclab.probes.gd_alignment import GDAlignment
from iclab.report.plots import save_figure
from iclab.reproductions.base import (
    Outcome,
    Reproduction,
    Scale,
    Verdict,
    register_reproduction,
    trained_all,
    trained_model,
    untrained_model,
)
from iclab.run import RunDir
from iclab.seeding import generator_for

# Their setting: d = 10, 10 context examples and a query, one LSA layer on tokens (x, y), no MLP
# or norm. Inputs are Gaussian here (theirs are uniform on [-1, 1]^d).
SETTING = {
    "name": "von-oswald-gd",
    "task": {"name": "linear_regression", "n_dims": 10, "n_points": 11},
    "model": {
        "mixer": "linear_self_attention",
        "n_layers": 1,
        "d_model": 11,
        "n_heads": 1,
        "mlp_ratio": 0,
        "norm": "none",
        "tokens": "paired",
    },
    "train": {"lr": 2.0e-3, "schedule": "cosine", "log_every": 100, "grad_clip": 1.0},
    "eval": {"n_prompts": 1280, "algorithms": ["gd(steps=1)", "least_squares"]},
}
# The training of each scale (smoke: a few steps, the same layer).
TRAIN: dict[Scale, dict] = {
    "smoke": {"steps": 4, "batch_size": 16, "log_every": 1, "checkpoint_every": 4},
    "cpu": {"steps": 20000, "batch_size": 128},
    "paper": {"steps": 100000, "batch_size": 512},
}
# Decided before the CPU run.
ALIGNED = 0.99  # sensitivity cosine with one fitted GD step that counts as "is one GD step"
CLOSE = 0.05  # prediction difference to that step (of E[y²]) that counts as equal
IDENTITY = 0.2  # relative distance of the effective key-query matrix from a multiple of I
FAILING = 0.9  # a cosine below this is not one GD step
NOT_IDENTITY = 0.4  # a distance above this is not the construction's form


def run_config(scale: Scale) -> RunConfig:
    return build_config(merged(SETTING, {"train": TRAIN[scale]}))


def key_query_matrix(model: InContextModel) -> torch.Tensor:
    """The d × d matrix B with which the trained layer weighs x_j · B x_query in the term of its
    prediction that carries y_j: B = R_xᵀ W_Kᵀ W_Q R_x, R_x the read-in of the x coordinates.
    von Oswald et al.'s construction has B ∝ I (then the term is a GD step)."""
    mixer = model.backbone.blocks[0].mixer
    width = model.backbone.d_model
    w_q, w_k, _ = mixer.qkv.weight.detach().split(width)
    read_x = model.codec.read_in.weight.detach()[:, :-1]  # (E, d): the x columns
    return read_x.T @ w_k.T @ w_q @ read_x


def distance_from_identity(matrix: torch.Tensor) -> float:
    """‖B − c I‖ / ‖B‖ with c the mean diagonal: 0 for a multiple of the identity."""
    scale = matrix.diagonal().mean()
    eye = torch.eye(matrix.shape[0], dtype=matrix.dtype)
    return float((matrix - scale * eye).norm() / matrix.norm())


def alignment(model: InContextModel, config: RunConfig, seed: str) -> dict:
    """The gd_alignment probe's summary (one GD step, at k = d)."""
    task = config.task.build()
    generator = generator_for(config.eval.seed, "reproduction", seed)
    return GDAlignment().run(model.eval(), task, config.task.n_points, generator).summary


@register_reproduction("von-oswald-gd")
class VonOswaldGD(Reproduction):
    """One linear self-attention layer trained on linear regression implements a GD step."""

    paper = "von Oswald et al. 2023, arXiv 2212.07677, Figure 2 and Proposition 1"
    claim = (
        "A single linear self-attention layer trained on linear regression, with tokens "
        "(x_i, y_i), converges to one step of gradient descent: its predictions and input "
        "sensitivities match one GD step, and its key-query weights take the construction's "
        "form (a multiple of I)."
    )
    cpu_minutes = 1.0

    @staticmethod
    def decide(numbers: dict[str, float]) -> Outcome:
        cosine, difference = numbers["sensitivity_cosine"], numbers["prediction_difference"]
        distance = numbers["distance_from_identity"]
        if cosine >= ALIGNED and difference <= CLOSE and distance <= IDENTITY:
            return "reproduced"
        if cosine < FAILING or distance > NOT_IDENTITY:
            return "not reproduced"
        return "inconclusive"

    @staticmethod
    def trainings(scale: Scale) -> dict[str, RunConfig]:
        return {"run": run_config(scale)}

    def run(self, out: Path, scale: Scale, show_progress: bool = True) -> Verdict:
        config = run_config(scale)
        run = trained_all(self.trainings(scale), out, show_progress)["run"]
        model = trained_model(run)
        untrained = untrained_model(config, seed=0)
        after, before = alignment(model, config, "trained"), alignment(untrained, config, "init")
        matrix = key_query_matrix(model)
        save_figure(self.figure(run, matrix, after, before), out / "figure.png")
        numbers = {
            "sensitivity_cosine": after["sensitivity_cosine"],
            "prediction_difference": after["prediction_difference"],
            "fitted_step_size": after["eta"],
            "distance_from_identity": distance_from_identity(matrix),
            "untrained_sensitivity_cosine": before["sensitivity_cosine"],
            "steps": config.train.steps,
        }
        return self.judged(
            numbers,
            scale,
            quantity="at k = d: sensitivity cosine and prediction difference to one GD step with "
            "a fitted step size (gd_alignment probe); relative distance of the effective "
            "key-query matrix R_xᵀ W_Kᵀ W_Q R_x from a multiple of the identity",
            threshold=f"reproduced when cosine ≥ {ALIGNED}, difference ≤ {CLOSE} and distance ≤ "
            f"{IDENTITY}; not reproduced when cosine < {FAILING} or distance > {NOT_IDENTITY}; "
            "inconclusive otherwise",
        )

    @staticmethod
    def figure(run: RunDir, matrix: torch.Tensor, after: dict, before: dict) -> plt.Figure:
        """Training loss, and the effective key-query matrix (a multiple of I when it is GD)."""
        metrics = run.read_metrics()
        figure, (loss_axes, matrix_axes) = plt.subplots(1, 2, figsize=(10, 4))
        loss_axes.plot([row["step"] for row in metrics], [row["loss"] for row in metrics])
        loss_axes.set_yscale("log")
        loss_axes.set_xlabel("step")
        loss_axes.set_ylabel("training loss")
        loss_axes.set_title(
            f"cosine with one GD step: {before['sensitivity_cosine']:.2f} at init → "
            f"{after['sensitivity_cosine']:.3f} trained",
            fontsize=10,
        )
        limit = float(matrix.abs().max())
        image = matrix_axes.imshow(matrix.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
        matrix_axes.set_title("trained R_xᵀ W_Kᵀ W_Q R_x (d × d)", fontsize=10)
        figure.colorbar(image, ax=matrix_axes)
        figure.suptitle("von Oswald et al.: one linear self-attention layer vs one GD step")
        return figure
