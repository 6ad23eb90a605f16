"""Regression task families: linear functions of Gaussian inputs, and mixtures of families.

Every linear family here draws ``x ~ N(0, Σ)`` and ``y = w · φ(x) + ε`` with ``ε ~ N(0, σ²)``; the
families differ in how ``w`` is drawn (dense Gaussian, sparse, from a finite pool) and in the
feature map ``φ`` (identity, or a fixed random ReLU network). ``Σ`` is the identity unless
``input_decay > 0``; it is the task attribute ``input_covariance`` so that algorithms (e.g.
preconditioned gradient descent) can read it.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor

from iclab.episode import Episode
from iclab.errors import ConfigError
from iclab.seeding import generator_for
from iclab.tasks.base import TASKS, Task, TaskOptions, make_task, register_task


class LinearRegressionOptions(TaskOptions):
    noise_std: float = Field(0.0, ge=0.0, description="std σ of Gaussian noise added to y")
    weight_std: float = Field(1.0, gt=0.0, description="prior std τ of each weight")
    input_decay: float = Field(
        0.0,
        ge=0.0,
        description="anisotropic inputs: eigenvalues of Cov(x) ∝ i^(-decay), trace d, in a fixed "
        "random eigenbasis (0: x ~ N(0, I))",
    )
    structure_seed: int = Field(
        0, description="seed of the parameters fixed for a run (input eigenbasis, pool, network)"
    )


def random_rotations(
    batch_size: int, n_dims: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> Tensor:
    """(B, d, d) Haar-distributed orthogonal matrices on the generator's device: QR of Gaussian
    matrices, column signs fixed so the distribution is uniform (Mezzadri 2007)."""
    shape = (batch_size, n_dims, n_dims)
    gaussian = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    q, r = torch.linalg.qr(gaussian)
    return q * r.diagonal(dim1=-2, dim2=-1).sign()[:, None, :]


def power_law_covariance(n_dims: int, decay: float, generator: torch.Generator) -> Tensor:
    """``Q diag(λ) Qᵀ`` with ``λ_i ∝ i^(-decay)`` scaled to trace ``n_dims`` (so E‖x‖² = d, as
    for isotropic inputs) and ``Q`` a random rotation: Garg et al.'s "skewed covariance" shift
    as a training distribution (their code scales x by a matrix with eigenvalues 1/i, so their
    decay is 2). Float64, (d, d)."""
    eigenvalues = torch.arange(1, n_dims + 1, dtype=torch.float64).pow(-decay)
    eigenvalues = eigenvalues * n_dims / eigenvalues.sum()
    rotation = random_rotations(1, n_dims, generator, torch.float64)[0]
    return (rotation * eigenvalues) @ rotation.T


class GaussianLinearFamily(Task):
    """Shared machinery of the linear families: ``x ~ N(0, Σ)``, ``y = w · φ(x) + ε``.

    Subclasses say how ``w`` is drawn (``sample_weights``), may change the feature map
    (``features``, identity here) and draw further fixed structure in ``draw_structure``. The
    random draws of a batch come in a fixed order: inputs, weights, noise. Fixed structure comes
    from ``structure_generator(structure_seed)``: the input eigenbasis first (only when
    ``input_decay > 0``), then whatever ``draw_structure`` draws.

    Attributes
    ----------
    input_covariance:
        ``Σ = E[x xᵀ]``, (d, d) float32 on CPU (the identity for isotropic inputs).
    """

    kind = "regression"
    Options = LinearRegressionOptions
    options: LinearRegressionOptions
    continuous_inputs = True

    def __init__(self, n_dims: int | None = None, options: TaskOptions | None = None) -> None:
        super().__init__(n_dims, options)
        structure = self.structure_generator(self.options.structure_seed)
        self.input_sqrt_covariance: Tensor | None = None  # None: isotropic, x = z
        covariance = torch.eye(self.n_dims, dtype=torch.float64)
        if self.options.input_decay > 0:
            covariance = power_law_covariance(self.n_dims, self.options.input_decay, structure)
            eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
            sqrt = (eigenvectors * eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T
            self.input_sqrt_covariance = sqrt.float()
        self.input_covariance = covariance.float()
        self.draw_structure(structure)

    def draw_structure(self, generator: torch.Generator) -> None:
        """Draw the parameters fixed for a run (none here)."""

    def sample_weights(
        self, batch_size: int, generator: torch.Generator, n_dims_active: int
    ) -> dict[str, Tensor]:
        """The meta of a batch: ``w`` (B, feature dim) plus anything else the family records."""
        raise NotImplementedError

    def features(self, inputs: Tensor) -> Tensor:
        """``φ(x)``: what ``w`` multiplies (the inputs themselves here)."""
        return inputs

    def sample_inputs(
        self, batch_size: int, n_points: int, generator: torch.Generator, n_dims_active: int
    ) -> Tensor:
        device = generator.device
        inputs = torch.randn(batch_size, n_points, self.n_dims, generator=generator, device=device)
        if self.input_sqrt_covariance is not None:
            inputs = inputs @ self.input_sqrt_covariance.to(device)  # symmetric square root
        if n_dims_active < self.n_dims:
            inputs[:, :, n_dims_active:] = 0.0
        return inputs

    def sample(
        self,
        batch_size: int,
        n_points: int,
        generator: torch.Generator,
        n_dims_active: int | None = None,
    ) -> Episode:
        active = self.n_dims if n_dims_active is None else min(n_dims_active, self.n_dims)
        inputs = self.sample_inputs(batch_size, n_points, generator, active)
        meta = self.sample_weights(batch_size, generator, active)
        targets = self.label(inputs, meta, generator)
        return Episode(inputs=inputs, targets=targets, kind="regression", meta=meta)

    def label(self, inputs: Tensor, meta: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        targets = torch.einsum("bnf,bf->bn", self.features(inputs), meta["w"])
        if self.options.noise_std > 0:
            noise = torch.randn(targets.shape, generator=generator, device=generator.device)
            targets = targets + self.options.noise_std * noise
        return targets

    def gaussian_weights(self, batch_size: int, size: int, generator: torch.Generator) -> Tensor:
        """``w ~ N(0, τ² I)``, (B, size), on the generator's device."""
        return self.options.weight_std * torch.randn(
            batch_size, size, generator=generator, device=generator.device
        )


@register_task("linear_regression")
class LinearRegression(GaussianLinearFamily):
    """Noisy linear functions: x ~ N(0, Σ), w ~ N(0, τ² I_d), y = w·x + ε, ε ~ N(0, σ²).

    The setting of Garg et al. 2022 (arXiv 2208.01066) with σ = 0 and Σ = I; Raventós et al. 2023
    add noise (``noisy_linear_regression``). ``input_decay > 0`` trains on Garg et al.'s
    "skewed covariance" inputs. The true weights are in ``episode.meta["w"]``.
    """

    paper = "Garg et al. 2022, arXiv 2208.01066"
    default_n_dims = 20
    default_n_points = 41
    yardsticks = ("least_squares", "averaging", "knn", "ridge", "bayes_optimal")

    @property
    def target_scale(self) -> float:
        # E[y²] = τ² tr(Σ) + σ², and tr(Σ) = d for every input_decay.
        return self.n_dims * self.options.weight_std**2 + self.options.noise_std**2

    def sample_weights(
        self, batch_size: int, generator: torch.Generator, n_dims_active: int
    ) -> dict[str, Tensor]:
        return {"w": self.gaussian_weights(batch_size, self.n_dims, generator)}


class NoisyLinearRegressionOptions(LinearRegressionOptions):
    noise_std: float = Field(0.5, ge=0.0, description="std σ of Gaussian noise added to y")


@register_task("noisy_linear_regression")
class NoisyLinearRegression(LinearRegression):
    """Linear regression with label noise σ = 0.5 in d = 8 with 16 points (Raventós et al.).

    Raventós, Paul, Chen, Ganguli 2023 (arXiv 2306.15063): x ~ N(0, I_8), w ~ N(0, I_8),
    σ² = 0.25, 16 examples per prompt. The Bayes-optimal learner is ridge with λ = σ²/τ²
    (``bayes_optimal``); least squares overfits the noise near k = d.
    """

    Options = NoisyLinearRegressionOptions
    paper = "Raventós et al. 2023, arXiv 2306.15063"
    default_n_dims = 8
    default_n_points = 16
    yardsticks = ("bayes_optimal", "least_squares", "gd(steps=1)", "averaging")


class SparseLinearRegressionOptions(LinearRegressionOptions):
    sparsity: int = Field(3, ge=1, description="number s of non-zero weights (at most n_dims)")


@register_task("sparse_linear_regression")
class SparseLinearRegression(GaussianLinearFamily):
    """Sparse linear functions: w has exactly s non-zero N(0, τ²) coordinates at random places.

    Garg et al. 2022 (arXiv 2208.01066), d = 20, 41 points, s = 3: their code draws w ~ N(0, I)
    and zeroes all but s coordinates chosen uniformly; during the dimension curriculum the support
    is drawn among the active coordinates, as here. E[y²] = s τ² + σ² (Garg et al. divide by s).
    """

    Options = SparseLinearRegressionOptions
    options: SparseLinearRegressionOptions
    paper = "Garg et al. 2022, arXiv 2208.01066"
    default_n_dims = 20
    default_n_points = 41
    yardsticks = ("least_squares", "lasso", "omp", "averaging")

    def __init__(self, n_dims: int | None = None, options: TaskOptions | None = None) -> None:
        super().__init__(n_dims, options)
        if self.options.sparsity > self.n_dims:
            raise ConfigError(
                f"sparse_linear_regression option sparsity ({self.options.sparsity}) must be at "
                f"most n_dims ({self.n_dims})"
            )

    @property
    def sparsity(self) -> int:
        return self.options.sparsity

    @property
    def target_scale(self) -> float:
        # The support is uniform, so E[Σ_{i∈S} Σ_ii] = s tr(Σ)/d = s for every input_decay.
        return self.options.sparsity * self.options.weight_std**2 + self.options.noise_std**2

    def sample_weights(
        self, batch_size: int, generator: torch.Generator, n_dims_active: int
    ) -> dict[str, Tensor]:
        w = self.gaussian_weights(batch_size, self.n_dims, generator)
        ranks = torch.rand(batch_size, n_dims_active, generator=generator, device=w.device)
        support = ranks.argsort(dim=1)[:, : self.options.sparsity]  # s random active coordinates
        mask = torch.zeros_like(w, dtype=torch.bool).scatter_(1, support, True)
        return {"w": w * mask}


class FinitePoolRegressionOptions(LinearRegressionOptions):
    noise_std: float = Field(0.5, ge=0.0, description="std σ of Gaussian noise added to y")
    pool_size: int | None = Field(
        64,
        ge=1,
        description="number M of weight vectors in the task pool (null: infinite, i.e. a fresh "
        "w ~ N(0, τ² I) per prompt)",
    )
    sample_from: Literal["pool", "prior"] = Field(
        "pool", description="pool: prompts use pool members; prior: unseen w ~ N(0, τ² I)"
    )


@register_task("finite_pool_regression")
class FinitePoolRegression(GaussianLinearFamily):
    """Noisy linear regression whose weights come from a finite pool of M tasks fixed per run.

    Raventós, Paul, Chen, Ganguli 2023 (arXiv 2306.15063): d = 8, 16 points, σ² = 0.25, a pool of
    M = 2^k vectors w ~ N(0, I) drawn once, each prompt using one uniformly. Below a task
    diversity threshold (M ≈ 2^13 in their runs) the model behaves like dMMSE, the posterior mean
    over the pool; above it like ridge, the Bayes estimator for the Gaussian prior, also on
    unseen tasks (``sample_from: prior``). The default M = 64 is in the dMMSE regime.
    ``meta`` holds ``w`` and ``pool_index`` (-1 for a weight drawn from the prior). The error
    scale is E[y²] under the Gaussian prior the pool is drawn from, dτ² + σ², so that errors on
    pool and unseen tasks share a scale.
    """

    Options = FinitePoolRegressionOptions
    options: FinitePoolRegressionOptions
    paper = "Raventós et al. 2023, arXiv 2306.15063"
    default_n_dims = 8
    default_n_points = 16
    # ridge(alpha=0.25) is Raventós et al.'s Ridge yardstick, λ = σ²/τ², at the default noise.
    yardsticks = ("dmmse", "ridge(alpha=0.25)", "least_squares")

    def draw_structure(self, generator: torch.Generator) -> None:
        self.pool: Tensor | None = None  # (M, d) float32 on CPU
        if self.options.pool_size is not None:
            self.check_structure_size(self.options.pool_size * self.n_dims, "pool_size × n_dims")
            pool = torch.randn(self.options.pool_size, self.n_dims, generator=generator)
            self.pool = self.options.weight_std * pool

    @property
    def target_scale(self) -> float:
        return self.n_dims * self.options.weight_std**2 + self.options.noise_std**2

    def sample_weights(
        self, batch_size: int, generator: torch.Generator, n_dims_active: int
    ) -> dict[str, Tensor]:
        device = generator.device
        if self.pool is None or self.options.sample_from == "prior":
            w = self.gaussian_weights(batch_size, self.n_dims, generator)
            return {"w": w, "pool_index": torch.full((batch_size,), -1, device=device)}
        index = torch.randint(len(self.pool), (batch_size,), generator=generator, device=device)
        return {"w": self.pool.to(device)[index], "pool_index": index}


class RepresentationRegressionOptions(LinearRegressionOptions):
    noise_std: float = Field(0.1, ge=0.0, description="std σ of Gaussian noise added to y")
    feature_dim: int = Field(20, ge=1, description="dimension D of the representation Φ(x)")
    hidden_width: int = Field(20, ge=1, description="width of the hidden layers of Φ")
    depth: int = Field(2, ge=1, description="number of ReLU layers of Φ (1: Φ(x) = relu(Bx))")


# Monte-Carlo sample size for E‖Φ(x)‖²: its relative standard error is below 1% for any Φ here.
_FEATURE_MOMENT_SAMPLES = 1 << 14


@register_task("representation_regression")
class RepresentationRegression(GaussianLinearFamily):
    """Linear functions of a fixed random representation: y = w·Φ(x) + ε, Φ a ReLU network.

    Guo, Hu, Mei, Wang, Xiong, Savarese, Bai 2023 (arXiv 2310.10616): Φ is shared by every prompt
    (drawn from ``structure_seed``), w ~ N(0, τ² I_D) is fresh per prompt, so the Bayes-optimal
    learner is ridge on Φ(x) with λ = σ²/τ² (``ridge_features``). Φ is an MLP whose layers are
    ``relu(B h) · √2`` with ``B_ij ~ N(0, 1/fan_in)``, which keeps E‖h‖²/width ≈ 1 through depth.
    The search tool did not return the paper's experimental section; the defaults (d = D = 20,
    depth 2, σ = 0.1, 41 points as in Garg et al.) follow the paper's description of a fixed
    MLP representation in Garg et al.'s sizes and are not verified against its Section 5.
    ``meta["w"]`` is (B, D); ``target_scale`` uses a Monte-Carlo estimate of E‖Φ(x)‖².
    """

    Options = RepresentationRegressionOptions
    options: RepresentationRegressionOptions
    paper = "Guo et al. 2023, arXiv 2310.10616"
    default_n_dims = 20
    default_n_points = 41
    yardsticks = ("ridge_features", "least_squares", "knn")

    def draw_structure(self, generator: torch.Generator) -> None:
        options = self.options
        hidden = options.hidden_width
        weights = (self.n_dims + (options.depth - 2) * hidden + options.feature_dim) * hidden
        if options.depth == 1:
            weights = self.n_dims * options.feature_dim
        self.check_structure_size(weights, "the feature map's weights")
        widths = [self.n_dims] + [hidden] * (options.depth - 1)
        widths.append(options.feature_dim)
        self.layers = [  # (out, in) float32 on CPU
            torch.randn(fan_out, fan_in, generator=generator) / math.sqrt(fan_in)
            for fan_in, fan_out in itertools.pairwise(widths)
        ]
        probe = self.sample_inputs(
            _FEATURE_MOMENT_SAMPLES, 1, generator_for(0, "feature-moment"), self.n_dims
        )
        self.feature_second_moment = self.features(probe).pow(2).sum(-1).mean().item()

    def features(self, inputs: Tensor) -> Tensor:
        """``Φ(x)``: (..., d) → (..., D)."""
        hidden = inputs
        for layer in self.layers:
            hidden = math.sqrt(2.0) * torch.relu(hidden @ layer.to(hidden).T)
        return hidden

    @property
    def target_scale(self) -> float:
        return self.feature_second_moment * self.options.weight_std**2 + self.options.noise_std**2

    def sample_weights(
        self, batch_size: int, generator: torch.Generator, n_dims_active: int
    ) -> dict[str, Tensor]:
        return {"w": self.gaussian_weights(batch_size, self.options.feature_dim, generator)}


class MixtureComponent(BaseModel):
    """One family of a mixture, its weight and its options."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    name: str = Field(description="a registered task family (not mixture)")
    weight: float = Field(1.0, gt=0.0, description="relative probability of this component")
    options: dict = Field(default_factory=dict, description="the family's options")

    @field_validator("name")
    @classmethod
    def _registered_family(cls, name: str) -> str:
        if name == "mixture":
            raise ValueError("a mixture cannot contain a mixture; list its components instead")
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r}; registered: {', '.join(TASKS.names())}")
        return name


class MixtureOptions(TaskOptions):
    components: tuple[MixtureComponent, ...] = Field(
        (
            MixtureComponent(name="linear_regression", weight=0.5),
            MixtureComponent(name="noisy_linear_regression", weight=0.5),
        ),
        min_length=1,
        description="list of {name, weight, options}: the families mixed, each prompt drawn from "
        "one with probability ∝ weight; all of one kind",
    )

    @field_validator("components")
    @classmethod
    def _one_kind(cls, components: tuple[MixtureComponent, ...]):
        kinds = {TASKS.get(component.name).kind for component in components}
        if len(kinds) > 1:
            listing = ", ".join(f"{c.name} ({TASKS.get(c.name).kind})" for c in components)
            raise ValueError(f"components must all have the same kind; got {listing}")
        return components


@register_task("mixture")
class Mixture(Task):
    """A mixture of task families: each prompt comes from one component, drawn by weight.

    Panwar, Ahuja, Goyal 2023 (arXiv 2306.04891) train on mixtures of function classes (dense and
    sparse regression, regressions with different priors) and compare the model with the Bayes
    posterior over the mixture (``mixture_posterior`` for Gaussian linear components). The
    default mixes noiseless and σ = 0.5 linear regression in d = 8 with 16 points. Every component
    is built with the mixture's ``n_dims``. ``meta["component"]`` is the component index; meta
    entries every component has with the same shape (e.g. ``w``) are kept too.
    """

    kind = "regression"  # the class default; an instance takes its components' kind
    Options = MixtureOptions
    options: MixtureOptions
    paper = "Panwar et al. 2023, arXiv 2306.04891"
    default_n_dims = 8
    default_n_points = 16
    yardsticks = ("mixture_posterior", "least_squares", "averaging")

    def __init__(self, n_dims: int | None = None, options: TaskOptions | None = None) -> None:
        super().__init__(n_dims, options)
        self.components = [
            make_task(component.name, self.n_dims, component.options)
            for component in self.options.components
        ]
        weights = torch.tensor([component.weight for component in self.options.components])
        self.probabilities = (weights / weights.sum()).double()
        self.kind = self.components[0].kind
        classes = {component.n_classes for component in self.components}
        if len(classes) > 1:
            raise ConfigError(f"mixture components must share n_classes; got {sorted(classes)}")
        self.shared_meta = self._shared_meta_keys()

    def _shared_meta_keys(self) -> list[str]:
        """Meta keys every component records with the same dtype and per-prompt shape (probed on
        one prompt of each component)."""
        probes = [
            component.sample(1, 2, generator_for(0, "mixture-probe")).meta
            for component in self.components
        ]
        return [
            key
            for key, value in probes[0].items()
            if all(
                key in probe
                and probe[key].dtype == value.dtype
                and probe[key].shape[1:] == value.shape[1:]
                for probe in probes
            )
        ]

    @property
    def n_classes(self) -> int | None:
        return self.components[0].n_classes

    @property
    def target_scale(self) -> float:
        """E[y²] of the mixture: the components' E[y²] weighted by their probabilities."""
        scales = torch.tensor([component.target_scale for component in self.components])
        return float((self.probabilities * scales.double()).sum())

    @property
    def input_covariance(self) -> Tensor:
        """E[x xᵀ] of the mixture (components without ``input_covariance`` count as isotropic)."""
        identity = torch.eye(self.n_dims)
        covariances = [getattr(c, "input_covariance", identity) for c in self.components]
        return sum(p * s for p, s in zip(self.probabilities.tolist(), covariances, strict=True))

    def sample(
        self,
        batch_size: int,
        n_points: int,
        generator: torch.Generator,
        n_dims_active: int | None = None,
    ) -> Episode:
        device = generator.device
        component = torch.multinomial(
            self.probabilities.to(device), batch_size, replacement=True, generator=generator
        )
        rows, episodes = [], []
        for index, family in enumerate(self.components):  # a loop over components, not prompts
            where = (component == index).nonzero().squeeze(1)
            if where.numel() > 0:
                rows.append(where)
                episodes.append(family.sample(where.numel(), n_points, generator, n_dims_active))
        order = torch.cat(rows).argsort()  # batch row → position in the concatenation

        def stitch(parts: list[Tensor]) -> Tensor:
            return torch.cat(parts)[order]

        meta = {key: stitch([e.meta[key] for e in episodes]) for key in self.shared_meta}
        meta["component"] = component
        loss_mask = None
        if any(e.loss_mask is not None for e in episodes):
            loss_mask = stitch(
                [
                    torch.ones_like(e.targets, dtype=torch.bool)
                    if e.loss_mask is None
                    else e.loss_mask
                    for e in episodes
                ]
            )
        return Episode(
            inputs=stitch([e.inputs for e in episodes]),
            targets=stitch([e.targets for e in episodes]),
            kind=self.kind,
            meta=meta,
            loss_mask=loss_mask,
        )
