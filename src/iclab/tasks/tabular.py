"""A prior over real-looking tables: in-context learners for small regression and
classification datasets (``iclab.sklearn``).

A prompt is one synthetic dataset. Its rows come from one of several mechanisms, drawn per
prompt: a random structural causal model (a random MLP whose nodes are the features and the
target, as in TabPFN's prior, Hollmann et al. 2023, arXiv 2207.01848), iclab's own linear,
sparse linear, decision-tree and ReLU-network families on correlated Gaussian inputs, and
Gaussian clusters with a target per cluster. Then what
real tables have: a random number of features (the rest zero, as the estimators pad), features
independent of the target, categorical features (random quantile bins with arbitrary codes),
missing values, noise of random size, and, for classification, a random number of classes cut
at random quantiles of the target, with arbitrary class ids.

Every feature is standardized per prompt by ``robust_scaling`` / ``standardize`` (median and
inter-quartile range, clipped, missing values at 0), the same functions the estimators apply to
a user's table with the context's statistics, so a model meets real tables in the form it was
trained on. Regression targets are standardized per prompt (mean 0, variance 1).
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from torch import Tensor

from iclab.episode import Episode
from iclab.errors import ConfigError
from iclab.tasks.base import Task, TaskOptions, register_task

MECHANISMS = ("scm", "linear", "sparse_linear", "tree", "relu_network", "clusters")


def robust_scaling(reference: Tensor) -> tuple[Tensor, Tensor]:
    """Per-feature centre (median) and scale (inter-quartile range / 1.349, the standard
    deviation of a Gaussian; the standard deviation where the IQR is 0; 1 where that is 0 too)
    of ``reference`` (…, n, d), ignoring NaNs: (…, 1, d) each."""
    reference = reference.double()
    quartiles = torch.nanquantile(
        reference,
        torch.tensor([0.25, 0.5, 0.75], dtype=reference.dtype, device=reference.device),
        dim=-2,
        keepdim=True,
    )  # (3, …, 1, d)
    centre = quartiles[1]
    scale = (quartiles[2] - quartiles[0]) / 1.349
    present = ~reference.isnan()
    count = present.sum(-2, keepdim=True).clamp(min=1)
    mean = reference.nan_to_num().sum(-2, keepdim=True) / count
    deviation = ((reference - mean).nan_to_num().pow(2).sum(-2, keepdim=True) / count).sqrt()
    scale = torch.where(scale > 1e-8, scale, deviation)
    scale = torch.where(scale > 1e-8, scale, torch.ones_like(scale))
    return centre.nan_to_num(), scale


def standardize(values: Tensor, centre: Tensor, scale: Tensor, clip: float) -> Tensor:
    """(values − centre) / scale clipped to ±``clip``, missing values (NaN) at 0, float64."""
    scaled = ((values.double() - centre) / scale).clamp(-clip, clip)
    return scaled.nan_to_num(0.0)


class TabularOptions(TaskOptions):
    min_features: int = Field(
        1,
        ge=1,
        description="fewest informative columns of a table; each prompt draws its "
        "count uniformly from min_features to n_dims, the rest are zero (padding)",
    )
    mechanisms: tuple[str, ...] = Field(
        MECHANISMS,
        min_length=1,
        description=f"how tables are made, one drawn per prompt: {', '.join(MECHANISMS)}",
    )
    noise_max: float = Field(
        0.5,
        ge=0.0,
        description="largest target noise, as a fraction of the target's "
        "standard deviation (each prompt draws a fraction uniformly below it)",
    )
    irrelevant_probability: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="probability that a column is replaced by noise independent of the target",
    )
    categorical_probability: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="probability that a column is categorical (2 to max_categories codes)",
    )
    max_categories: int = Field(6, ge=2, description="most categories of a categorical column")
    missing_probability: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="probability that a table has missing values (at a rate up to missing_rate)",
    )
    missing_rate: float = Field(0.2, ge=0.0, lt=1.0, description="largest share of missing cells")
    clip: float = Field(4.0, gt=0.0, description="standardized values are clipped to ±clip")

    @model_validator(mode="after")
    def _known_mechanisms(self) -> TabularOptions:
        unknown = sorted(set(self.mechanisms) - set(MECHANISMS))
        if unknown:
            raise ValueError(
                f"unknown mechanisms {', '.join(unknown)}; allowed: {', '.join(MECHANISMS)}"
            )
        return self


class TabularClassificationOptions(TabularOptions):
    n_classes: int = Field(
        10, ge=2, description="most classes of a table (the model's output size)"
    )
    min_classes: int = Field(2, ge=2, description="fewest classes of a table")

    @model_validator(mode="after")
    def _class_range(self) -> TabularClassificationOptions:
        if self.min_classes > self.n_classes:
            raise ValueError(f"min_classes ({self.min_classes}) > n_classes ({self.n_classes})")
        return self


class TabularPrior(Task):
    """Shared sampling of the tabular families: features and a continuous latent target."""

    paper = "Hollmann et al. 2023 (TabPFN), arXiv 2207.01848"
    default_n_dims = 16
    default_n_points = 128
    options: TabularOptions

    def __init__(self, n_dims: int | None = None, options: TaskOptions | None = None) -> None:
        super().__init__(n_dims, options)
        if self.options.min_features > self.n_dims:
            raise ConfigError(
                f"task.min_features ({self.options.min_features}) is more than "
                f"task.n_dims ({self.n_dims}), the columns a table has"
            )

    def _sample_table(
        self, batch_size: int, n_points: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Standardized features (B, n, d), the latent target (B, n), noise included, and each
        table's number of columns (B,)."""
        device, options, d = generator.device, self.options, self.n_dims

        def rand(*shape: int) -> Tensor:  # uniform draws from the batch's generator
            return torch.rand(shape, generator=generator, device=device)

        n_active = uniform_integers(options.min_features, d, (batch_size,), generator)
        active = torch.arange(d, device=device) < n_active[:, None]  # (B, d)
        choice = uniform_integers(0, len(options.mechanisms) - 1, (batch_size,), generator)
        features = torch.empty(batch_size, n_points, d, device=device)
        target = torch.empty(batch_size, n_points, device=device)
        for index, mechanism in enumerate(options.mechanisms):
            rows = (choice == index).nonzero().squeeze(-1)
            if len(rows):
                x, y = MECHANISM_FUNCTIONS[mechanism](len(rows), n_points, active[rows], generator)
                features[rows], target[rows] = x, y
        target = target - target.mean(1, keepdim=True)
        spread = target.std(1, keepdim=True).clamp(min=1e-6)
        noise = rand(batch_size, 1) * options.noise_max * spread
        target = target + noise * torch.randn(target.shape, generator=generator, device=device)
        irrelevant = rand(batch_size, 1, d) < options.irrelevant_probability
        independent = torch.randn(features.shape, generator=generator, device=device)
        features = torch.where(irrelevant, independent, features)
        features = categorize(
            features,
            rand(batch_size, 1, d) < options.categorical_probability,
            options.max_categories,
            generator,
        )
        rate = rand(batch_size, 1, 1) * options.missing_rate
        rate = rate * (rand(batch_size, 1, 1) < options.missing_probability)
        features = features.masked_fill(rand(*features.shape) < rate, float("nan"))
        centre, scale = robust_scaling(features)
        features = standardize(features, centre, scale, options.clip).float()
        return features * active[:, None, :], target, n_active


@register_task("tabular_regression")
class TabularRegression(TabularPrior):
    """Regression on synthetic tables: targets standardized per prompt (E[y²] = 1)."""

    kind = "regression"
    Options = TabularOptions
    yardsticks = ("ridge", "knn(k=5)", "decision_tree(max_depth=4)", "zero")

    @property
    def target_scale(self) -> float:
        return 1.0

    def sample(
        self,
        batch_size: int,
        n_points: int,
        generator: torch.Generator,
        n_dims_active: int | None = None,
    ) -> Episode:
        features, target, n_features = self._sample_table(batch_size, n_points, generator)
        target = (target - target.mean(1, keepdim=True)) / target.std(1, keepdim=True).clamp(
            min=1e-6
        )
        return Episode(features, target, "regression", meta={"n_features": n_features})


@register_task("tabular_classification")
class TabularClassification(TabularPrior):
    """Classification on synthetic tables: 2 to n_classes classes per table, cut at random
    quantiles of the latent target (so classes are unbalanced), with arbitrary class ids."""

    kind = "classification"
    Options = TabularClassificationOptions
    options: TabularClassificationOptions
    yardsticks = ("logistic_regression", "knn(k=5)", "majority_label")

    @property
    def n_classes(self) -> int:
        return self.options.n_classes

    def sample(
        self,
        batch_size: int,
        n_points: int,
        generator: torch.Generator,
        n_dims_active: int | None = None,
    ) -> Episode:
        device, options = generator.device, self.options
        features, target, n_features = self._sample_table(batch_size, n_points, generator)
        classes = uniform_integers(
            options.min_classes, options.n_classes, (batch_size,), generator
        )  # (B,)
        cuts = torch.rand(batch_size, options.n_classes - 1, generator=generator, device=device)
        unused = torch.arange(options.n_classes - 1, device=device) >= classes[:, None] - 1
        cuts = cuts.masked_fill(unused, 2.0).sort(-1).values  # C − 1 levels in (0, 1)
        ordered = target.sort(1).values
        index = (cuts.clamp(max=1.0) * (n_points - 1)).round().long()
        thresholds = ordered.gather(1, index).masked_fill(unused.sort(-1).values, float("inf"))
        labels = (target[:, :, None] > thresholds[:, None, :]).sum(-1)  # (B, n) in [0, C)
        keys = torch.rand(batch_size, options.n_classes, generator=generator, device=device)
        keys = keys.masked_fill(
            torch.arange(options.n_classes, device=device) >= classes[:, None], 2.0
        )
        permutation = keys.argsort(-1)  # its first C entries permute 0..C−1
        return Episode(
            features,
            permutation.gather(1, labels),
            "classification",
            meta={"n_classes": classes, "n_features": n_features},
        )


def uniform_integers(
    low: int, high: int, shape: tuple[int, ...], generator: torch.Generator
) -> Tensor:
    """Integers uniform on ``low``..``high`` (both included) from ``generator``."""
    span = high - low + 1
    draws = torch.rand(shape, generator=generator, device=generator.device)
    return low + (draws * span).long().clamp(max=span - 1)  # a draw may round up to span


def categorize(
    features: Tensor, chosen: Tensor, max_categories: int, generator: torch.Generator
) -> Tensor:
    """Columns marked in ``chosen`` (B, 1, d) cut into 2..max_categories bins at random
    quantiles, each bin an arbitrary integer code (what ordinal encoding gives a category)."""
    batch, n_points, d = features.shape
    device = features.device
    counts = uniform_integers(2, max_categories, (batch, 1, d), generator)
    levels = torch.rand(batch, max_categories - 1, d, generator=generator, device=device)
    ordered = features.sort(1).values
    thresholds = ordered.gather(1, (levels * (n_points - 1)).round().long())  # (B, K, d)
    used = torch.arange(max_categories - 1, device=device)[None, :, None] < counts - 1
    thresholds = thresholds.masked_fill(~used, float("inf")).sort(1).values
    codes = (features[:, :, None, :] > thresholds[:, None]).sum(2)  # (B, n, d)
    keys = torch.rand(batch, max_categories, d, generator=generator, device=device)
    relabel = keys.argsort(1)  # an arbitrary code per bin
    codes = relabel.gather(1, codes).float()
    return torch.where(chosen, codes, features)


def correlated_gaussian(
    batch_size: int, n_points: int, n_dims: int, generator: torch.Generator
) -> Tensor:
    """x = z A with z ~ N(0, I) and a random mixing A = I + N(0, 1/d) per prompt."""
    device = generator.device
    z = torch.randn(batch_size, n_points, n_dims, generator=generator, device=device)
    mixing = torch.randn(batch_size, n_dims, n_dims, generator=generator, device=device)
    return z @ (torch.eye(n_dims, device=device) + mixing / n_dims**0.5)


def linear(batch: int, n: int, active: Tensor, generator: torch.Generator, sparse: bool = False):
    """y = w · x on correlated Gaussian inputs, w ~ N(0, I) on the active features (on 1 to 3
    of them when ``sparse``)."""
    device = generator.device
    x = correlated_gaussian(batch, n, active.shape[1], generator)
    w = torch.randn(active.shape, generator=generator, device=device) * active
    if sparse:
        keys = torch.rand(active.shape, generator=generator, device=device) * active
        n_kept = uniform_integers(1, 3, (batch,), generator)
        ranked = keys.sort(-1, descending=True).values
        threshold = ranked.gather(1, (n_kept - 1)[:, None])
        w = w * ((keys >= threshold) & active)
    return x, (x * w[:, None, :]).sum(-1)


def sparse_linear(batch: int, n: int, active: Tensor, generator: torch.Generator):
    return linear(batch, n, active, generator, sparse=True)


def tree(batch: int, n: int, active: Tensor, generator: torch.Generator, depth: int = 4):
    """A random axis-aligned tree of ``depth`` levels on the active features, splitting at a
    random row's value, with N(0, 1) leaves."""
    device, d = generator.device, active.shape[1]
    x = correlated_gaussian(batch, n, d, generator)
    n_internal = 2**depth - 1
    weights = active.float()[:, None, :].expand(-1, n_internal, -1).reshape(-1, d)
    split_feature = torch.multinomial(weights, 1, generator=generator).view(batch, n_internal)
    split_row = uniform_integers(0, n - 1, (batch, n_internal), generator)
    threshold = x[torch.arange(batch, device=device)[:, None], split_row, split_feature]
    leaves = torch.randn(batch, 2**depth, generator=generator, device=device)
    node = torch.zeros(batch, n, dtype=torch.long, device=device)
    for _ in range(depth):
        feature = split_feature.gather(1, node)
        value = x.gather(2, feature[..., None]).squeeze(-1)
        right = value > threshold.gather(1, node)
        node = 2 * node + 1 + right.long()
    return x, leaves.gather(1, node - n_internal)


def relu_network(batch: int, n: int, active: Tensor, generator: torch.Generator, hidden: int = 32):
    """y = Σ v_j relu(w_j · x) with N(0, 1) weights (Garg et al.'s two-layer ReLU family)."""
    device, d = generator.device, active.shape[1]
    x = correlated_gaussian(batch, n, d, generator)
    first = torch.randn(batch, d, hidden, generator=generator, device=device) * active[..., None]
    second = torch.randn(batch, hidden, generator=generator, device=device)
    return x, (torch.relu((x * active[:, None]) @ first) * second[:, None]).sum(-1)


def scm(batch: int, n: int, active: Tensor, generator: torch.Generator, layers: int = 2):
    """A random structural causal model: causes z ~ N(0, I_d) pushed through ``layers`` random
    tanh/ReLU layers with noise; the features are random nodes of the graph (causes and
    effects) and the target another node, so features correlate with each other and with the
    target in non-linear ways."""
    device, d = generator.device, active.shape[1]
    nodes = [torch.randn(batch, n, d, generator=generator, device=device)]
    for _ in range(layers):
        weight = torch.randn(batch, d, d, generator=generator, device=device) / d**0.5
        bias = torch.randn(batch, 1, d, generator=generator, device=device)
        linear_part = nodes[-1] @ weight + bias
        use_tanh = torch.rand(batch, 1, 1, generator=generator, device=device) < 0.5
        activated = torch.where(use_tanh, torch.tanh(linear_part), torch.relu(linear_part))
        noise = torch.randn(activated.shape, generator=generator, device=device)
        nodes.append(activated + 0.1 * noise)
    graph = torch.cat(nodes, dim=-1)  # (B, n, (layers + 1)·d)
    order = torch.rand(batch, graph.shape[-1], generator=generator, device=device).argsort(-1)
    target_node = order[:, -1]
    features = graph.gather(2, order[:, None, :d].expand(-1, n, -1))
    target = graph.gather(2, target_node[:, None, None].expand(-1, n, 1)).squeeze(-1)
    return features, target


def clusters(batch: int, n: int, active: Tensor, generator: torch.Generator, most: int = 8):
    """Rows from 2 to ``most`` Gaussian clusters of random sizes, spreads and shapes, and a
    target drawn per cluster (group effects; classes that are unions of clusters, as for
    species or diagnoses)."""
    device, d = generator.device, active.shape[1]
    counts = uniform_integers(2, most, (batch,), generator)
    weights = torch.rand(batch, most, generator=generator, device=device) + 0.2
    weights = weights.masked_fill(torch.arange(most, device=device) >= counts[:, None], 0.0)
    member = torch.multinomial(weights, n, replacement=True, generator=generator)  # (B, n)
    spread = 1.0 + 2.0 * torch.rand(batch, 1, 1, generator=generator, device=device)
    centres = spread * torch.randn(batch, most, d, generator=generator, device=device)
    noise = correlated_gaussian(batch, n, d, generator)
    x = centres.gather(1, member[..., None].expand(-1, -1, d)) + noise
    values = torch.randn(batch, most, generator=generator, device=device)
    return x, values.gather(1, member)


MECHANISM_FUNCTIONS = {
    "scm": scm,
    "linear": linear,
    "sparse_linear": sparse_linear,
    "tree": tree,
    "relu_network": relu_network,
    "clusters": clusters,
}
