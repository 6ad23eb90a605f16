"""Classification task families: labelled vectors, one class index per example.

Episodes have inputs (B, n, d) float and targets (B, n) long class indices in
``[0, task.n_classes)``; learners answer with (B, n, C) scores (``iclab.metrics`` scores their
argmax). Three families: linear (halfspace) and softmax classification with a fresh classifier per
prompt, and Reddy's bursty few-shot classification with class clusters fixed for a whole run.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from iclab.episode import Episode
from iclab.errors import ConfigError
from iclab.tasks.base import (
    Task,
    TaskOptions,
    register_task,
    standard_normal_inputs,
    zero_inactive_dims,
)


class LinearClassificationOptions(TaskOptions):
    label_noise: float = Field(
        0.0, ge=0.0, le=0.5, description="probability that each label is flipped (0 to 0.5)"
    )


@register_task("linear_classification")
class LinearClassification(Task):
    """Halfspaces: x ~ N(0, I_d), w ~ N(0, I_d), y = 1[w·x > 0], each label flipped w.p. η.

    Garg et al. 2022 (arXiv 2208.01066) list this sign-of-a-linear-function task beside linear
    regression; their sizes are kept (d = 20, prompts of 41 points). Labels are class indices
    0/1 (C = 2), so P(y = 1) = 1/2 by the symmetry of w. ``meta["w"]`` holds the weights and
    ``meta["flipped"]`` (B, n) which labels the noise flipped.
    """

    kind = "classification"
    Options = LinearClassificationOptions
    paper = "Garg et al. 2022, arXiv 2208.01066"
    default_n_dims = 20
    default_n_points = 41
    yardsticks = ("logistic_regression", "knn(k=1)", "majority_label")
    options: LinearClassificationOptions
    continuous_inputs = True

    @property
    def n_classes(self) -> int:
        return 2

    def sample(
        self,
        batch_size: int,
        n_points: int,
        generator: torch.Generator,
        n_dims_active: int | None = None,
    ) -> Episode:
        device = generator.device
        inputs = standard_normal_inputs(batch_size, n_points, self.n_dims, generator, n_dims_active)
        w = torch.randn(batch_size, self.n_dims, generator=generator, device=device)
        targets, flipped = self._noisy_labels(inputs, w, generator)
        return Episode(inputs, targets, "classification", meta={"w": w, "flipped": flipped})

    def label(self, inputs: Tensor, meta: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        return self._noisy_labels(inputs, meta["w"], generator)[0]

    def _noisy_labels(
        self, inputs: Tensor, w: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Labels [w·x > 0] with each flipped with probability ``label_noise``, and the flips."""
        clean = torch.einsum("bnd,bd->bn", inputs, w) > 0
        draws = torch.rand(clean.shape, generator=generator, device=generator.device)
        flipped = draws < self.options.label_noise
        return (clean ^ flipped).long(), flipped


class SoftmaxClassificationOptions(TaskOptions):
    n_classes: int = Field(3, ge=2, description="number of classes C")
    temperature: float = Field(
        1.0, ge=0.0, description="softmax temperature; 0 takes the argmax (noise-free labels)"
    )


@register_task("softmax_classification")
class SoftmaxClassification(Task):
    """Multinomial logistic labels: W ~ N(0, I) per prompt, y ~ Categorical(softmax(W x / T)).

    The multi-class analogue of Garg et al. 2022's (arXiv 2208.01066) function classes, with
    x ~ N(0, I_d) and the rows of W ∈ R^{C×d} i.i.d. N(0, I_d); ``temperature = 0`` labels each
    point with argmax W x. No paper fixes the sizes: d = 10, C = 3 keep the C·d = 30 unknowns
    below the 40 examples of a 41-point prompt, so prefix learners rise well above chance within
    a prompt. Classes are equally frequent by symmetry. ``meta["W"]`` is (B, C, d).
    """

    kind = "classification"
    Options = SoftmaxClassificationOptions
    paper = "Garg et al. 2022, arXiv 2208.01066 (multi-class variant)"
    default_n_dims = 10
    default_n_points = 41
    yardsticks = ("logistic_regression", "nearest_class_mean", "knn", "majority_label")
    options: SoftmaxClassificationOptions
    continuous_inputs = True

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
        device = generator.device
        inputs = standard_normal_inputs(batch_size, n_points, self.n_dims, generator, n_dims_active)
        weights = torch.randn(
            batch_size, self.n_classes, self.n_dims, generator=generator, device=device
        )
        meta = {"W": weights}
        return Episode(inputs, self.label(inputs, meta, generator), "classification", meta=meta)

    def label(self, inputs: Tensor, meta: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        logits = torch.einsum("bnd,bcd->bnc", inputs, meta["W"])
        if self.options.temperature > 0:
            # Gumbel-max: argmax(logits / T + Gumbel noise) ~ Categorical(softmax(logits / T)).
            uniform = torch.rand(logits.shape, generator=generator, device=generator.device)
            gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(uniform.dtype).tiny)))
            logits = logits / self.options.temperature + gumbel
        return logits.argmax(-1)


class BurstyClassificationOptions(TaskOptions):
    n_clusters: int = Field(512, ge=2, description="number of classes K (Gaussian clusters)")
    n_labels: int = Field(32, ge=2, description="number of labels L; class k has label k mod L")
    within_class_noise: float = Field(
        0.1, ge=0.0, description="within-class noise ε (relative to the centres' norm)"
    )
    zipf_exponent: float = Field(
        0.0, ge=0.0, description="class k (from 0) is drawn with probability ∝ (k + 1)^-α"
    )
    burstiness: int = Field(
        2, ge=1, description="copies B of each class in a bursty context; divides n_points - 1"
    )
    p_bursty: float = Field(
        1.0, ge=0.0, le=1.0, description="probability that a training prompt is bursty"
    )
    mode: Literal["train", "icl", "iwl"] = Field(
        "train",
        description="train: the training distribution; icl: novel classes with labels assigned "
        "at random within the prompt (only the context tells); iwl: the query's class is "
        "absent from the context (only the weights tell)",
    )
    structure_seed: int = Field(0, description="seed of the class centres fixed for a run")

    @model_validator(mode="after")
    def _labels_do_not_outnumber_classes(self) -> BurstyClassificationOptions:
        if self.n_labels > self.n_clusters:
            raise ValueError(
                f"n_labels ({self.n_labels}) must not exceed n_clusters ({self.n_clusters})"
            )
        return self


@register_task("bursty_classification")
class BurstyClassification(Task):
    """Bursty few-shot classification of Gaussian clusters: in-context vs in-weights learning.

    Chan et al. 2022 (arXiv 2205.05055) in Reddy 2023's (arXiv 2312.03002) minimal form. K class
    centres μ_k ~ N(0, I_d / d) are fixed for a run (``structure_seed``); an exemplar of class k
    is x = (μ_k + ε η) / √(1 + ε²) with η ~ N(0, I_d / d); class k carries label k mod L. A
    prompt is N = n_points - 1 exemplar-label pairs and a query; only the query is scored
    (``loss_mask``), as Reddy trains. With probability ``p_bursty`` the context is bursty: N/B
    classes drawn from the Zipf law, B copies each, shuffled, and the query's class is one of
    them; otherwise the N context classes and the query's class are i.i.d. Zipf draws.

    Evaluation modes tell the two kinds of learning apart (Reddy's Fig. 1b): ``icl`` uses N/B
    novel centres drawn per prompt, given distinct random labels within the prompt, with the
    query's class in context (only the context can tell its label); ``iwl`` draws the query's
    class from the Zipf law and the context from it without that class (only the weights can
    tell).

    Settings from Reddy's public code (found with the search tool, "code" corpus: the data
    generator that builds ``mus_class`` and ``labels_class = tile(arange(L), K/L)``): N = 8,
    d = D = 63, L = 32, ε = 0.1, centres and noise scaled by 1/√D, label k mod L, classes drawn
    with replacement, the query index uniform over the N/B distinct draws. B = 2 and K = 512
    are the setting of Reddy's Fig. 1 (caption: "Here, B = 2, K = 512"), in which at least one
    context item shares the query's class (p_bursty = 1); α = 0 (uniform classes) is the code's
    default. Chan et al. train with p_bursty = 0.9.

    ``meta``: ``classes`` (B, n) class of every exemplar and of the query (novel classes of an
    ``icl`` prompt are numbered K, K+1, ...), ``label_map`` (B, K) the fixed class → label map,
    ``bursty`` (B,) and ``query_in_context`` (B,); in ``icl`` mode also ``novel_centres``
    (B, N/B, d) and ``novel_labels`` (B, N/B).
    """

    kind = "classification"
    Options = BurstyClassificationOptions
    paper = "Chan et al. 2022, arXiv 2205.05055; Reddy 2023, arXiv 2312.03002"
    default_n_dims = 63
    default_n_points = 9
    yardsticks = ("copy_exemplar", "majority_label", "nearest_class_mean")
    options: BurstyClassificationOptions

    def __init__(self, n_dims: int | None = None, options: TaskOptions | None = None) -> None:
        super().__init__(n_dims, options)
        options = self.options
        self.check_structure_size(options.n_clusters * self.n_dims, "n_clusters × n_dims")
        structure = self.structure_generator(options.structure_seed)
        self.centres = torch.randn(options.n_clusters, self.n_dims, generator=structure)
        self.centres /= math.sqrt(self.n_dims)  # (K, d)
        self.label_map = torch.arange(options.n_clusters) % options.n_labels  # (K,)
        ranks = torch.arange(1, options.n_clusters + 1, dtype=torch.float64)
        weights = ranks.pow(-options.zipf_exponent)
        self.class_probabilities = weights / weights.sum()  # (K,) Zipf law, float64

    @property
    def n_classes(self) -> int:
        return self.options.n_labels

    def _check_context_size(self, n_context: int) -> int:
        """The number N/B of distinct draws of a bursty context; a clear error if B ∤ N."""
        burstiness = self.options.burstiness
        if n_context < 1 or n_context % burstiness:
            raise ConfigError(
                f"bursty_classification: burstiness ({burstiness}) must divide the context size "
                f"n_points - 1 = {n_context}"
            )
        n_draws = n_context // burstiness
        if self.options.mode == "icl" and n_draws > self.options.n_labels:
            raise ConfigError(
                f"bursty_classification mode icl gives the {n_draws} novel classes of a prompt "
                f"distinct labels, so (n_points - 1) / burstiness must be <= n_labels "
                f"({self.options.n_labels})"
            )
        return n_draws

    def _exemplars(self, centres: Tensor, generator: torch.Generator) -> Tensor:
        """x = (μ + ε η) / √(1 + ε²), η ~ N(0, I/d): unit expected norm whatever ε."""
        eps = self.options.within_class_noise
        noise = torch.randn(centres.shape, generator=generator, device=generator.device)
        return (centres + eps * noise / math.sqrt(self.n_dims)) / math.sqrt(1 + eps**2)

    def sample(
        self,
        batch_size: int,
        n_points: int,
        generator: torch.Generator,
        n_dims_active: int | None = None,
    ) -> Episode:
        n_draws = self._check_context_size(n_points - 1)
        sample_classes = self._novel_classes if self.options.mode == "icl" else self._classes
        classes, bursty, meta = sample_classes(batch_size, n_points - 1, n_draws, generator)
        device = generator.device
        if self.options.mode == "icl":
            centres = meta["novel_centres"].gather(
                1, (classes - self.options.n_clusters)[..., None].expand(-1, -1, self.n_dims)
            )
            targets = meta["novel_labels"].gather(1, classes - self.options.n_clusters)
        else:
            centres = self.centres.to(device)[classes]
            targets = self.label_map.to(device)[classes]
        inputs = zero_inactive_dims(self._exemplars(centres, generator), n_dims_active)
        loss_mask = torch.zeros(batch_size, n_points, dtype=torch.bool, device=device)
        loss_mask[:, -1] = True
        in_context = (classes[:, :-1] == classes[:, -1:]).any(dim=1)
        meta |= {
            "classes": classes,
            "label_map": self.label_map.to(device).expand(batch_size, -1),
            "bursty": bursty,
            "query_in_context": in_context,
        }
        return Episode(inputs, targets, "classification", meta=meta, loss_mask=loss_mask)

    def _classes(
        self, batch_size: int, n_context: int, n_draws: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Classes (B, N + 1) of the fixed clusters for ``train`` and ``iwl`` prompts."""
        device = generator.device
        probabilities = self.class_probabilities.to(device).expand(batch_size, -1)
        bursty = torch.rand(batch_size, generator=generator, device=device) < self.options.p_bursty
        if self.options.mode == "iwl":
            query = _draw(probabilities, 1, generator)  # (B, 1)
            probabilities = probabilities.scatter(1, query, 0.0)  # the query's class excluded
            context = self._context(probabilities, bursty, n_context, n_draws, generator)
        else:
            context = self._context(probabilities, bursty, n_context, n_draws, generator)
            iid_query = _draw(probabilities, 1, generator)
            context_query = context.gather(1, _uniform_index(batch_size, 1, n_context, generator))
            query = torch.where(bursty[:, None], context_query, iid_query)
        return torch.cat([context, query], dim=1), bursty, {}

    def _context(
        self,
        probabilities: Tensor,
        bursty: Tensor,
        n_context: int,
        n_draws: int,
        generator: torch.Generator,
    ) -> Tensor:
        """(B, N) context classes: bursty rows are N/B draws tiled B times and shuffled, the
        others N i.i.d. draws, all from the rows of ``probabilities``."""
        repeated = _draw(probabilities, n_draws, generator).repeat(1, self.options.burstiness)
        repeated = _shuffle(repeated, generator)
        independent = _draw(probabilities, n_context, generator)
        return torch.where(bursty[:, None], repeated, independent)

    def _novel_classes(
        self, batch_size: int, n_context: int, n_draws: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``icl`` prompts: N/B fresh centres with distinct random labels, B copies each, and
        the query one of them; classes numbered from K."""
        device = generator.device
        novel_centres = torch.randn(
            batch_size, n_draws, self.n_dims, generator=generator, device=device
        ) / math.sqrt(self.n_dims)
        label_order = torch.rand(
            batch_size, self.options.n_labels, generator=generator, device=device
        )
        novel_labels = label_order.argsort(dim=1)[:, :n_draws]  # distinct labels per prompt
        novel = self.options.n_clusters + torch.arange(n_draws, device=device)
        context = _shuffle(novel.repeat(self.options.burstiness).expand(batch_size, -1), generator)
        query = novel[_uniform_index(batch_size, 1, n_draws, generator)]
        bursty = torch.ones(batch_size, dtype=torch.bool, device=device)
        meta = {"novel_centres": novel_centres, "novel_labels": novel_labels}
        return torch.cat([context, query], dim=1), bursty, meta


def _draw(probabilities: Tensor, n_samples: int, generator: torch.Generator) -> Tensor:
    """(B, n_samples) i.i.d. class indices from each row of ``probabilities`` (B, K), by
    inverting the cumulative distribution (vectorised; zero-probability classes never occur)."""
    cdf = probabilities.cumsum(dim=1)
    cdf = cdf / cdf[:, -1:]
    uniform = torch.rand(
        probabilities.shape[0],
        n_samples,
        generator=generator,
        device=probabilities.device,
        dtype=cdf.dtype,
    )
    classes = torch.searchsorted(cdf, uniform, right=True)
    return classes.clamp_max(probabilities.shape[1] - 1)


def _shuffle(values: Tensor, generator: torch.Generator) -> Tensor:
    """Each row of ``values`` (B, N) in a random order."""
    keys = torch.rand(values.shape, generator=generator, device=values.device)
    return values.gather(1, keys.argsort(dim=1))


def _uniform_index(batch_size: int, n_samples: int, high: int, generator: torch.Generator):
    return torch.randint(
        high, (batch_size, n_samples), generator=generator, device=generator.device
    )
