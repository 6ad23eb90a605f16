"""Linear probes of the residual stream for the quantities an in-context learner might compute.

Akyürek et al. 2022 (arXiv 2211.15661, Section 5) fit linear read-outs from a trained
transformer's hidden states at x_i to the true weights ``w``, the least-squares estimate from the
examples before i, and the moment ``Xᵀy``: intermediate quantities that a model implementing
least squares or gradient descent would have to represent. ``linear_probe`` does this for every
layer and every x position, in one of two ways:

* ``pooling=token`` (default): ridge regression from the hidden state of x_k's token alone, the
  strength chosen on a validation split of the fit prompts;
* ``pooling=attention``: Akyürek et al.'s own probe (``iclab.probes.pooling``), a learned
  attention pooling over the states of every token up to x_k, read out linearly. A trained
  transformer spreads what it knows of the examples over their tokens: on the quickstart-style
  model at k = 40 ridge on x_k's token decodes the least-squares estimate with R² 0.04, the
  pooled probe with 0.85 (an untrained model: 0.00).

R² is always reported on held-out prompts, so a probe cannot score by memorising its fit set (a
target absent from the stream scores ≈ 0 or below).

R² here is the multivariate R² of a vector target: 1 − Σ‖ẑ − z‖² / Σ‖z − z̄‖², summed over the
target's coordinates (each coordinate weighted by its variance; a coordinate that never varies,
such as a dimension the curriculum zeroed, then cannot dominate). A target with no variance at
all (``least_squares`` and ``xty`` are 0 before the first example) has R² NaN.
"""

from __future__ import annotations

import math
from typing import Literal

import matplotlib.pyplot as plt
import torch
from pydantic import Field, model_validator
from torch import Tensor

from iclab.algorithms.linear import prefix_moments
from iclab.episode import Episode
from iclab.errors import ConfigError
from iclab.models import InContextModel
from iclab.probes.base import Probe, ProbeOptions, ProbeResult, explain, register_probe
from iclab.probes.pooling import pooled_predictions
from iclab.seeding import generator_for
from iclab.tasks.base import Task

TargetName = Literal["w", "least_squares", "xty"]
TARGETS: tuple[TargetName, ...] = ("w", "least_squares", "xty")
# Ridge strengths tried (relative to the mean eigenvalue of the feature covariance).
ALPHA_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
VALIDATION_FRACTION = 0.25  # of the fit prompts, held out to choose the strength
HIDDEN_BATCH = 256  # prompts per forward pass while collecting hidden states


class LinearProbeOptions(ProbeOptions):
    targets: tuple[TargetName, ...] = Field(
        TARGETS,
        min_length=1,
        description="what to probe for: w (the true weights), least_squares (the min-norm "
        "least-squares estimate from the examples before x_i), xty (Σ_{j<i} y_j x_j)",
    )
    n_prompts: int = Field(
        1024, ge=16, description="fresh prompts: half to fit the probes, half held out for R²"
    )
    alpha: float | None = Field(
        None,
        gt=0,
        description="token pooling's ridge strength relative to the mean eigenvalue of the "
        f"hidden states' covariance (null: the best of {list(ALPHA_GRID)} on a validation "
        "quarter of the fit prompts, per layer, position and target)",
    )
    positions: tuple[int, ...] | None = Field(
        None,
        min_length=1,
        description="example indices k whose x token is probed (null: every x position)",
    )
    pooling: Literal["token", "attention"] = Field(
        "token",
        description="token: a ridge probe of the hidden state at x_k; attention: Akyürek et "
        "al.'s probe, a learned attention pooling over the hidden states of every token up to "
        "x_k, then a linear read-out (one per layer, target and position, fitted with Adam)",
    )
    fit_steps: int = Field(
        2000, ge=1, description="Adam steps of batch 256 fitting each attention-pooled probe"
    )

    @model_validator(mode="after")
    def _alpha_is_for_ridge(self) -> LinearProbeOptions:
        if self.alpha is not None and self.pooling == "attention":
            raise ValueError(
                "alpha is the ridge strength of pooling=token; the attention-pooled probe is "
                "fitted with Adam (fit_steps)"
            )
        return self


@register_probe("linear_probe")
class LinearProbe(Probe):
    """Linear probes from every layer's residual stream at x_k (or pooled up to x_k) to w, the
    least-squares estimate and Xᵀy of the examples before k; held-out R² per (target, layer,
    position)."""

    Options = LinearProbeOptions
    options: LinearProbeOptions
    paper = "Akyürek et al. 2022, arXiv 2211.15661"

    def check_applies(self, model: InContextModel, task: Task) -> None:
        if task.kind != "regression":
            raise ConfigError(
                f"linear_probe needs a vector regression task with true weights meta['w'] "
                f"(e.g. linear_regression); task {task.name} is a {task.kind} task"
            )
        episode = task.sample(2, 2, generator_for(0, "linear-probe-check"))
        if "w" not in episode.meta:
            raise ConfigError(
                f"linear_probe needs true weights meta['w'] (linear regression families); "
                f"task {task.name} records {sorted(episode.meta) or 'none'}"
            )
        n_features = task_features(task, episode.inputs).shape[-1]
        if episode.meta["w"].shape[-1] != n_features:
            raise ConfigError(
                f"linear_probe: task {task.name}'s weights have {episode.meta['w'].shape[-1]} "
                f"coordinates but its features have {n_features}"
            )

    def run(
        self, model: InContextModel, task: Task, n_points: int, generator: torch.Generator
    ) -> ProbeResult:
        options = self.options
        positions = list(options.positions or range(n_points))
        bad = [k for k in positions if not 0 <= k < n_points]
        if bad:
            raise ConfigError(
                f"linear_probe option positions: {bad} outside the prompt's examples "
                f"0..{n_points - 1}"
            )
        episode = task.sample(options.n_prompts, n_points, generator)
        features = task_features(task, episode.inputs)
        targets = probe_targets(features, episode.targets, episode.meta["w"], options.targets)
        x_tokens = torch.tensor(positions) * model.codec.tokens_per_example
        if options.pooling == "token":
            hidden = hidden_states_at(model, episode, x_tokens)  # L+1 × (N, P, E)
        else:
            hidden = hidden_states_at(model, episode, torch.arange(int(x_tokens.max()) + 1))
        rows, total = [], len(targets) * len(hidden)
        for index, (name, target) in enumerate(targets.items()):
            target = target[:, positions]  # (N, P, t)
            for layer, states in enumerate(hidden):
                self.report(index * len(hidden) + layer, total)
                if options.pooling == "token":
                    scores = held_out_r2(
                        states.transpose(0, 1), target.transpose(0, 1), options.alpha
                    )
                else:
                    predictions = pooled_predictions(
                        states, target, x_tokens + 1, options.fit_steps, generator
                    )
                    held_out = target[target.shape[0] // 2 :].transpose(0, 1)
                    scores = r2_score(predictions, held_out)  # (P,)
                rows += [
                    {"target": name, "layer": layer, "position": k, "r2": float(r2)}
                    for k, r2 in zip(positions, scores.tolist(), strict=True)
                ]
        return ProbeResult(
            summary=summarise(rows, options.n_prompts - options.n_prompts // 2),
            tables={"r2": rows},
            figures={"r2": r2_figure(rows, list(targets), options.pooling)},
        )


def task_features(task: Task, inputs: Tensor) -> Tensor:
    """What ``w`` multiplies: ``task.features(x)`` for families with a representation, else x."""
    features = getattr(task, "features", None)
    return inputs if features is None else features(inputs)


def probe_targets(
    features: Tensor, targets: Tensor, w: Tensor, names: tuple[str, ...]
) -> dict[str, Tensor]:
    """Each named target at every example index i, (B, n, D), in float64, from the features
    φ (B, n, D) that ``w`` multiplies: ``w`` repeated, ``least_squares`` = pinv(Σ_{j<i} φ_j φ_jᵀ)
    Σ_{j<i} y_j φ_j (= pinv(Φ_{<i}) y_{<i}, the min-norm solution), ``xty`` = Σ_{j<i} y_j φ_j."""
    gram, moment, _ = prefix_moments(features, targets)  # (B, n, D, D), (B, n, D)
    values = {}
    for name in names:
        if name == "w":
            values[name] = w.double()[:, None, :].expand_as(moment)
        elif name == "least_squares":
            values[name] = (torch.linalg.pinv(gram, hermitian=True) @ moment[..., None])[..., 0]
        else:
            values[name] = moment
    return values


def hidden_states_at(
    model: InContextModel, episode: Episode, tokens: Tensor, batch_size: int = HIDDEN_BATCH
) -> list[Tensor]:
    """The residual stream of every layer at the token indices ``tokens`` (P,): L+1 tensors
    (N, P, E) in float64, collected a batch of prompts at a time (the full stream of every
    token of every prompt would not fit for large models)."""
    tokens = tokens.to(episode.inputs.device)
    chunks = []
    with torch.no_grad():
        for start in range(0, episode.batch_size, batch_size):
            states = model.hidden_states(episode.rows(start, start + batch_size))
            chunks.append([state[:, tokens].double() for state in states])
    return [torch.cat(layer) for layer in zip(*chunks, strict=True)]


def held_out_r2(features: Tensor, targets: Tensor, alpha: float | None) -> Tensor:
    """Ridge probes from ``features`` (P, N, E) to ``targets`` (P, N, t), one per leading index:
    fit on the first half of the N prompts (strength ``alpha``, or the best of ``ALPHA_GRID`` on
    the last quarter of that half), R² on the second half. Returns (P,)."""
    n_fit = features.shape[1] // 2
    fit_x, fit_z = features[:, :n_fit], targets[:, :n_fit]
    if alpha is None:
        n_train = n_fit - max(1, int(n_fit * VALIDATION_FRACTION))
        ridge = RidgePath(fit_x[:, :n_train], fit_z[:, :n_train])
        validation = torch.stack(
            [r2_score(ridge.predict(fit_x[:, n_train:], a), fit_z[:, n_train:]) for a in ALPHA_GRID]
        )  # (A, P); NaN for a target that never varies
        best = validation.nan_to_num(-torch.inf).argmax(0)
        alphas = torch.tensor(ALPHA_GRID, dtype=features.dtype, device=features.device)[best]
    else:
        alphas = torch.full(features.shape[:1], alpha, dtype=features.dtype, device=features.device)
    ridge = RidgePath(fit_x, fit_z)
    return r2_score(ridge.predict(features[:, n_fit:], alphas), targets[:, n_fit:])


class RidgePath:
    """Ridge regressions with an intercept for any strength from one eigendecomposition:
    ``W(α) = (C + α m I)⁻¹ Hᵀz / N`` with C the centred feature covariance and m its mean
    eigenvalue, so α is free of the hidden states' scale."""

    def __init__(self, features: Tensor, targets: Tensor) -> None:  # (P, N, E), (P, N, t)
        self.feature_mean, self.target_mean = features.mean(1, keepdim=True), targets.mean(1)
        centred = features - self.feature_mean
        covariance = centred.mT @ centred / features.shape[1]  # (P, E, E)
        self.eigenvalues, self.eigenvectors = torch.linalg.eigh(covariance)  # (P, E), (P, E, E)
        self.scale = self.eigenvalues.mean(-1).clamp(min=torch.finfo(features.dtype).tiny)
        cross = centred.mT @ (targets - self.target_mean[:, None]) / features.shape[1]
        self.projected = self.eigenvectors.mT @ cross  # (P, E, t)

    def predict(self, features: Tensor, alpha: float | Tensor) -> Tensor:
        """Predictions (P, M, t) for features (P, M, E) at strength ``alpha`` (a number or (P,))."""
        alpha = torch.as_tensor(alpha, dtype=features.dtype, device=features.device)
        shrink = 1.0 / (self.eigenvalues + (alpha * self.scale)[..., None])  # (P, E)
        weights = self.eigenvectors @ (shrink[..., None] * self.projected)  # (P, E, t)
        return (features - self.feature_mean) @ weights + self.target_mean[:, None]


def r2_score(predictions: Tensor, targets: Tensor) -> Tensor:
    """Multivariate R² over the prompt axis: (P, M, t) pairs → (P,); NaN where z is constant."""
    residual = (predictions - targets).pow(2).sum((1, 2))
    total = (targets - targets.mean(1, keepdim=True)).pow(2).sum((1, 2))
    scale = targets.pow(2).sum((1, 2)).clamp(min=torch.finfo(targets.dtype).tiny)
    constant = total <= 1e-12 * scale
    return torch.where(constant, torch.nan, 1.0 - residual / total.clamp(min=1e-300))


def summarise(rows: list[dict], n_held_out: int) -> dict[str, float | int | str]:
    """Per target, the layer with the best held-out R² at the last probed position."""
    last = max(row["position"] for row in rows)
    summary: dict[str, float | int | str] = {"held_out_prompts": n_held_out, "position": last}
    for target in dict.fromkeys(row["target"] for row in rows):
        at_last = [r for r in rows if r["target"] == target and r["position"] == last]
        best = max(at_last, key=lambda r: -math.inf if math.isnan(r["r2"]) else r["r2"])
        summary[f"best_layer_{target}"] = best["layer"]
        summary[f"r2_{target}"] = best["r2"]
    return summary


def r2_figure(rows: list[dict], targets: list[str], pooling: str = "token") -> plt.Figure:
    """One heatmap of held-out R²(layer, position) per target."""
    layers = sorted({row["layer"] for row in rows})
    positions = sorted({row["position"] for row in rows})
    figure, axes = plt.subplots(
        1, len(targets), figsize=(4.2 * len(targets), 3.4), squeeze=False, layout="constrained"
    )
    for axis, target in zip(axes[0], targets, strict=True):
        grid = torch.full((len(layers), len(positions)), torch.nan)
        for row in rows:
            if row["target"] == target:
                grid[layers.index(row["layer"]), positions.index(row["position"])] = row["r2"]
        image = axis.imshow(
            grid.numpy(), origin="lower", aspect="auto", vmin=0.0, vmax=1.0, cmap="viridis"
        )
        axis.set_title(f"R² of {target} (held out)")
        axis.set_xlabel("position k (examples before x_k)")
        axis.set_ylabel("layer")
        every = max(1, len(positions) // 10)  # at most about ten labels
        axis.set_xticks(range(0, len(positions), every), [str(k) for k in positions[::every]])
        axis.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    figure.colorbar(image, ax=axes[0].tolist(), shrink=0.9)
    return explain(
        figure,
        "Held-out R² of a linear probe from each layer's hidden state at x_k's token "
        + ("" if pooling == "token" else "(attention-pooled over every token up to x_k) ")
        + "to a quantity of the prompt's first k examples: w (the true weights), least_squares "
        "(their estimate from the k examples) or xty (the moment Σ y_j x_j). 1: the layer holds it "
        "linearly; 0: no better than its mean.",
    )
