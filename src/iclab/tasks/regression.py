"""Regression task families."""

from __future__ import annotations

import torch
from pydantic import Field

from iclab.episode import Episode
from iclab.tasks.base import Task, TaskOptions, register_task


class LinearRegressionOptions(TaskOptions):
    noise_std: float = Field(0.0, ge=0.0, description="std of Gaussian noise added to y")
    weight_std: float = Field(1.0, gt=0.0, description="prior std τ of each weight")


@register_task("linear_regression")
class LinearRegression(Task):
    """Noisy linear functions: x ~ N(0, I_d), w ~ N(0, τ² I_d), y = w·x + ε, ε ~ N(0, σ²).

    The setting of Garg et al. 2022 (arXiv 2208.01066) with σ = 0; Raventós et al. 2023 add
    noise. The true weights are in ``episode.meta["w"]``.
    """

    kind = "regression"
    Options = LinearRegressionOptions
    paper = "Garg et al. 2022, arXiv 2208.01066"
    default_n_dims = 20
    default_n_points = 41
    yardsticks = ("least_squares", "averaging", "knn", "ridge", "bayes_optimal")
    options: LinearRegressionOptions

    @property
    def target_scale(self) -> float:
        return self.n_dims * self.options.weight_std**2 + self.options.noise_std**2

    def sample(
        self,
        batch_size: int,
        n_points: int,
        generator: torch.Generator,
        n_dims_active: int | None = None,
    ) -> Episode:
        device = generator.device
        inputs = torch.randn(batch_size, n_points, self.n_dims, generator=generator, device=device)
        if n_dims_active is not None and n_dims_active < self.n_dims:
            inputs[:, :, n_dims_active:] = 0.0
        w = self.options.weight_std * torch.randn(
            batch_size, self.n_dims, generator=generator, device=device
        )
        targets = torch.einsum("bnd,bd->bn", inputs, w)
        if self.options.noise_std > 0:
            noise = torch.randn(batch_size, n_points, generator=generator, device=device)
            targets = targets + self.options.noise_std * noise
        return Episode(inputs=inputs, targets=targets, kind="regression", meta={"w": w})
