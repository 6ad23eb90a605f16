"""Does the model's in-context prediction follow gradient descent? (von Oswald et al. 2023)

For every layer's read-out and every context size k, the model's prediction of the query
``ŷ_M(x_k | x_{<k}, y_{<k})`` is compared with ``steps`` steps of GD from ``w = 0`` on the
context (``iclab.algorithms.linear.gradient_descent_weights``), its step size η fitted to that
layer's predictions as von Oswald et al. fit it to the model's. Two numbers per (layer, k), the
paper's: the prediction difference ``E(ŷ_M − ŷ_GD)² / E[y²]`` and the cosine between the
sensitivities to the query ``∂ŷ_M/∂x_k`` (autograd) and ``∂ŷ_GD/∂x_k``. GD's prediction is
``w_k · x_k`` with weights ``w_k`` fitted on the context alone, so its sensitivity is ``w_k``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from matplotlib.figure import Figure
from pydantic import Field
from torch import Tensor

from iclab.algorithms.linear import gradient_descent_weights, prefix_moments
from iclab.episode import Episode
from iclab.errors import ConfigError
from iclab.models import InContextModel
from iclab.probes.base import Probe, ProbeOptions, ProbeResult, explain, register_probe
from iclab.tasks.base import Task

# Step sizes tried when fitting η to several GD steps (von Oswald et al. fit η to the model).
ETA_GRID = torch.logspace(-3, 1, 40, dtype=torch.float64)
# Prompts per forward pass when differentiating: bounds the autograd graph held at once.
_GRADIENT_CHUNK = 256
# check_applies: the targets must be this close to x · meta["w"] (a fraction of E[y²]).
_LINEARITY_TOLERANCE = 0.5


class GDAlignmentOptions(ProbeOptions):
    steps: int = Field(1, ge=1, description="gradient-descent steps from w = 0 to compare with")
    n_prompts: int = Field(512, ge=1, description="fresh prompts the numbers are averaged over")
    k: int | None = Field(
        None,
        ge=1,
        description="context size of the summary; null: the task's n_dims, capped at n_points − 1",
    )


@register_probe("gd_alignment")
class GDAlignment(Probe):
    """Alignment of every layer's prediction with k-step gradient descent on the context.

    Applies to regression tasks whose targets are linear in x (``meta["w"]``, (B, d)). Table
    ``alignment``: layer (1..L, the read-out of each block's residual stream; L is the model's
    own prediction), k, the fitted η, prediction_difference and sensitivity_cosine. A model
    that implements GD scores cosine 1 and difference 0 at every k.
    """

    Options = GDAlignmentOptions
    options: GDAlignmentOptions
    paper = "von Oswald et al. 2023, arXiv 2212.07677"

    def check_applies(self, model: InContextModel, task: Task) -> None:
        if task.kind != "regression":
            raise ConfigError(
                f"probe gd_alignment needs a regression task (GD on squared loss), not "
                f"{task.name!r} of kind {task.kind!r}"
            )
        episode = task.sample(64, 4, torch.Generator().manual_seed(0))
        weights = episode.meta.get("w")
        if weights is None or weights.shape != (64, task.n_dims):
            raise ConfigError(
                f"probe gd_alignment needs a task with linear weights meta['w'] of shape (B, "
                f"n_dims={task.n_dims}); task {task.name!r} has "
                f"{'none' if weights is None else tuple(weights.shape)}"
            )
        linear = torch.einsum("bnd,bd->bn", episode.inputs, weights)
        residual = (episode.targets - linear).pow(2).mean() / episode.targets.pow(2).mean()
        if residual > _LINEARITY_TOLERANCE:
            raise ConfigError(
                f"probe gd_alignment needs targets linear in x; task {task.name!r} has weights "
                f"meta['w'] but its targets are not x · w (residual {residual:.2f} of E[y²])"
            )

    def run(
        self, model: InContextModel, task: Task, n_points: int, generator: torch.Generator
    ) -> ProbeResult:
        summary_k = self.summary_k(task, n_points)
        episode = task.sample(self.options.n_prompts, n_points, generator)
        predictions, sensitivities = query_sensitivities(model, episode, self.report)
        gram, moment, n_seen = prefix_moments(episode.inputs, episode.targets)
        x = episode.inputs.double()
        rows = []
        for layer, (prediction, sensitivity) in enumerate(
            zip(predictions, sensitivities, strict=True), start=1
        ):
            eta = fit_step_sizes(prediction.double(), gram, moment, n_seen, x, self.options.steps)
            weights = gradient_descent_weights(gram, moment, n_seen, self.options.steps, eta)
            gd_prediction = (weights * x).sum(-1)  # (B, n)
            difference = (prediction.double() - gd_prediction).pow(2).mean(0) / task.target_scale
            cosine = torch.cosine_similarity(sensitivity.double(), weights, dim=-1).mean(0)
            rows += [
                {
                    "layer": layer,
                    "k": k,
                    "eta": eta[k].item(),
                    "prediction_difference": difference[k].item(),
                    "sensitivity_cosine": cosine[k].item(),
                }
                for k in range(1, n_points)  # k = 0: GD predicts 0, no sensitivity to compare
            ]
        return ProbeResult(
            summary=summarise(rows, summary_k),
            tables={"alignment": rows},
            figures={"alignment": alignment_figure(rows, summary_k, self.options.steps)},
        )

    def summary_k(self, task: Task, n_points: int) -> int:
        if n_points < 2:
            raise ConfigError(f"probe gd_alignment needs n_points >= 2 (a context), got {n_points}")
        if self.options.k is None:
            return min(task.n_dims, n_points - 1)
        if self.options.k > n_points - 1:
            raise ConfigError(
                f"probe gd_alignment: option k={self.options.k} must be at most n_points − 1 = "
                f"{n_points - 1} (the run's prompts have {n_points} points)"
            )
        return self.options.k


def query_sensitivities(
    model: InContextModel, episode: Episode, report: Callable[[int, int], None] = lambda *_: None
) -> tuple[list[Tensor], list[Tensor]]:
    """Per layer 1..L, the read-out predictions (B, n) and their gradients with respect to the
    query, ``∂ŷ_k/∂x_k`` (B, n, d). One backward pass per (layer, k): the later predictions
    ŷ_j (j > k) depend on x_k too, as context, so a gradient of their sum would mix them in.
    ``report(done, total)`` hears of each chunk of prompts finished."""
    predictions: list[list[Tensor]] = []
    gradients: list[list[Tensor]] = []
    starts = range(0, episode.batch_size, _GRADIENT_CHUNK)
    for done, start in enumerate(starts, start=1):
        inputs = episode.inputs[start : start + _GRADIENT_CHUNK].detach().requires_grad_(True)
        chunk = Episode(inputs, episode.targets[start : start + _GRADIENT_CHUNK], episode.kind)
        with torch.enable_grad():
            hidden = model.hidden_states(chunk)[1:]  # skip the stream before the first block
            for layer, stream in enumerate(hidden):
                prediction = model.read_out(stream)  # (b, n)
                per_query = [
                    torch.autograd.grad(prediction[:, k].sum(), inputs, retain_graph=True)[0][:, k]
                    for k in range(inputs.shape[1])
                ]
                if start == 0:
                    predictions.append([])
                    gradients.append([])
                predictions[layer].append(prediction.detach())
                gradients[layer].append(torch.stack(per_query, 1))  # (b, n, d)
        report(done, len(starts))
    return [torch.cat(p) for p in predictions], [torch.cat(g) for g in gradients]


def fit_step_sizes(
    prediction: Tensor, gram: Tensor, moment: Tensor, n_seen: Tensor, x: Tensor, steps: int
) -> Tensor:
    """The step size η (n,) per prefix length whose GD predictions are nearest (least squares
    over prompts) to ``prediction`` (B, n). One step's prediction is linear in η, so its best η
    is closed-form (clipped to the grid's range, which keeps η a positive step size); for more
    steps, the best of ``ETA_GRID``."""
    if steps == 1:
        unit = (gradient_descent_weights(gram, moment, n_seen, 1, 1.0) * x).sum(-1)  # (B, n)
        eta = (prediction * unit).sum(0) / unit.pow(2).sum(0).clamp(min=1e-300)
        return eta.clamp(ETA_GRID[0].item(), ETA_GRID[-1].item())
    errors = []
    for eta in ETA_GRID.tolist():
        gd_prediction = (gradient_descent_weights(gram, moment, n_seen, steps, eta) * x).sum(-1)
        error = (prediction - gd_prediction).pow(2).mean(0)  # (n,)
        errors.append(error.nan_to_num(math.inf, math.inf, math.inf))
    return ETA_GRID.to(x.device)[torch.stack(errors).argmin(0)]


def summarise(rows: list[dict], summary_k: int) -> dict[str, float | int | str]:
    """The last layer's numbers at ``summary_k`` and the layer whose sensitivities align best
    there."""
    at_k = [row for row in rows if row["k"] == summary_k]
    last = max(at_k, key=lambda row: row["layer"])
    best = max(at_k, key=lambda row: row["sensitivity_cosine"])
    return {
        "k": summary_k,
        "eta": last["eta"],
        "prediction_difference": last["prediction_difference"],
        "sensitivity_cosine": last["sensitivity_cosine"],
        "best_layer": best["layer"],
        "best_layer_sensitivity_cosine": best["sensitivity_cosine"],
        "best_layer_prediction_difference": best["prediction_difference"],
    }


def alignment_figure(rows: list[dict], summary_k: int, steps: int) -> Figure:
    """Sensitivity cosine and prediction difference vs k, one line per layer."""
    figure = Figure(figsize=(11, 4.2))  # no pyplot: nothing to close, any backend
    cosine_axes, difference_axes = figure.subplots(1, 2)
    layers = sorted({row["layer"] for row in rows})
    for layer in layers:
        layer_rows = sorted((row for row in rows if row["layer"] == layer), key=lambda r: r["k"])
        ks = [row["k"] for row in layer_rows]
        style = {"linewidth": 2.4} if layer == layers[-1] else {"linewidth": 1.2, "alpha": 0.8}
        label = f"layer {layer}"
        cosine_axes.plot(ks, [r["sensitivity_cosine"] for r in layer_rows], label=label, **style)
        difference_axes.plot(
            ks, [r["prediction_difference"] for r in layer_rows], label=label, **style
        )
    for axes in (cosine_axes, difference_axes):
        axes.axvline(summary_k, color="grey", linestyle=":", linewidth=1)
        axes.set_xlabel("in-context examples k")
        axes.grid(alpha=0.3)
    cosine_axes.set_ylabel("cos(∂ŷ_model/∂x_query, ∂ŷ_GD/∂x_query)")
    difference_axes.set_ylabel("(ŷ_model − ŷ_GD)² / E[y²]")
    difference_axes.set_yscale("log")
    cosine_axes.legend(fontsize=8)
    figure.suptitle(f"Alignment with {steps}-step gradient descent (η fitted per layer and k)")
    figure.tight_layout()
    return explain(
        figure,
        "Left: cosine between how the prediction at k (read out at each layer) changes with "
        f"the query and how {steps}-step GD's does (1: the same direction). Right: their squared "
        "difference over E[y²] (0: the same predictions). The dotted line is the k of the "
        "summary.",
    )
