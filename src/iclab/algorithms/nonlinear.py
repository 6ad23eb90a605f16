"""Nonlinear regression learners fitted afresh to every prefix: Garg et al. 2022's yardsticks for
decision trees (greedy trees, gradient boosting) and for two-layer ReLU networks (a network
trained by Adam on the in-context examples).

Settings follow the paper's code (dtsip/in-context-learning, ``src/models.py``:
``DecisionTreeModel``, ``XGBoostModel``, ``GDModel`` with ``base_models.NeuralNetwork``, as
listed by ``get_relevant_baselines``). Prediction ``i`` uses ``inputs[:, : i + 1]`` and
``targets[:, :i]`` only; with no example it is 0, as in their code.

Trees and boosting have no batched form: each prefix of each prompt is one sklearn / LightGBM
fit, run in joblib worker threads over blocks of prompts. The network is batched in torch:
one set of weights per (prompt, prefix), all trained together.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Annotated

import numpy as np
import torch
from pydantic import AfterValidator, Field
from torch import Tensor

from iclab.algorithms.base import Algorithm, AlgorithmOptions, register_algorithm
from iclab.episode import Episode
from iclab.optim import Adam
from iclab.progress import progress

# A prediction function fitted on (train_x (i, d), train_y (i,)) and evaluated at query_x (1, d).
PrefixFit = Callable[[np.ndarray, np.ndarray, np.ndarray, np.random.RandomState], float]

# Prompts per joblib task: enough to amortise sending them to a worker, few enough for a
# progress bar that moves and for load balancing.
_PROMPTS_PER_BLOCK = 8
# Show a progress bar from this many per-prefix fits (trees: ~0.5 ms each; boosting: ~45 ms).
_FITS_FOR_PROGRESS = 20_000


def _check_n_jobs(n_jobs: int) -> int:
    if n_jobs == 0:
        raise ValueError("must not be 0 (-1: all cores, 1: no worker threads)")
    return n_jobs


# joblib's worker threads over blocks of prompts, an option of the learners that fit each prefix.
NJobs = Annotated[
    int,
    AfterValidator(_check_n_jobs),
    Field(description="joblib worker threads over blocks of prompts; -1: all cores, 1: none"),
]


def _check_episode(episode: Episode) -> None:
    if episode.kind != "regression" or episode.inputs.ndim != 3:
        raise ValueError(
            f"nonlinear regression learners need a regression episode with inputs (B, n, d), got "
            f"a {episode.kind} episode with inputs {tuple(episode.inputs.shape)}"
        )


def _predict_prompts(
    inputs: np.ndarray, targets: np.ndarray, fit: PrefixFit, seed: int
) -> np.ndarray:
    """Every prefix of every prompt of a block: (b, n, d), (b, n) → (b, n), 0 at prefix 0.

    One ``RandomState`` is re-seeded with ``seed`` before each fit, so every fit is a pure
    function of its prefix and ``seed`` (and re-seeding costs far less than creating one).
    """
    import sklearn  # on first use: importing the algorithm registry stays light

    predictions = np.zeros(targets.shape)
    state = np.random.RandomState(seed)
    with sklearn.config_context(skip_parameter_validation=True):
        for prompt in range(targets.shape[0]):
            x, y = inputs[prompt], targets[prompt]
            for i in range(1, targets.shape[1]):
                state.seed(seed)
                predictions[prompt, i] = fit(x[:i], y[:i], x[i : i + 1], state)
    return predictions


def predict_every_prefix(
    episode: Episode, fit: PrefixFit, seed: int, n_jobs: int, description: str
) -> Tensor:
    """``fit`` on every prefix of every prompt, in joblib worker threads over blocks of prompts;
    a progress bar when there are many fits.

    Threads, not processes: sklearn builds trees and LightGBM trains with the GIL released, and
    a worker process would first have to import torch (seconds each, half a minute on a busy
    machine), which is more than a whole batch of tree fits costs.
    """
    import joblib  # here, not at the top: training imports this module and never needs it

    _check_episode(episode)
    inputs = episode.inputs.detach().cpu().numpy().astype(np.float32)  # sklearn's split dtype
    targets = episode.targets.detach().cpu().numpy().astype(np.float64)
    blocks = [
        slice(start, start + _PROMPTS_PER_BLOCK)
        for start in range(0, episode.batch_size, _PROMPTS_PER_BLOCK)
    ]
    n_workers = max(1, min(joblib.effective_n_jobs(n_jobs), len(blocks)))
    jobs = (
        joblib.delayed(_predict_prompts)(inputs[block], targets[block], fit, seed)
        for block in blocks
    )
    n_fits = episode.batch_size * (episode.n_points - 1)
    results = []
    enabled = n_fits >= _FITS_FOR_PROGRESS
    with progress(description, len(blocks), enabled=enabled, transient=True) as tracker:
        parallel = joblib.Parallel(n_jobs=n_workers, prefer="threads", return_as="generator")
        for block_predictions in parallel(jobs):
            results.append(block_predictions)
            tracker.advance()
    predictions = np.concatenate(results) if results else np.zeros(targets.shape)
    return torch.from_numpy(predictions).to(episode.targets.dtype).to(episode.device)


def fit_tree(
    train_x: np.ndarray,
    train_y: np.ndarray,
    query_x: np.ndarray,
    state: np.random.RandomState,
    max_depth: int | None,
) -> float:
    """CART regression tree (sklearn, squared error) on one prefix, evaluated at the query."""
    from sklearn.tree import DecisionTreeRegressor  # cached after the first fit

    tree = DecisionTreeRegressor(max_depth=max_depth, random_state=state)
    tree.fit(train_x, train_y, check_input=False)
    return float(tree.predict(query_x, check_input=False)[0])


class DecisionTreeOptions(AlgorithmOptions):
    max_depth: int | None = Field(
        4, ge=1, description="depth limit of each fitted tree; null: grow until leaves are pure"
    )
    seed: int = Field(
        0, ge=0, description="random state of every fit (tie-breaking between splits)"
    )
    n_jobs: NJobs = -1


@register_algorithm("decision_tree")
class GreedyDecisionTree(Algorithm):
    """Greedy regression tree (sklearn CART) fitted to every prefix (Garg et al. 2022).

    Garg et al. compare ``DecisionTreeRegressor(max_depth=4)`` and ``max_depth=None`` (their
    ``get_relevant_baselines``); the default is 4, the depth of the planted trees. Their trees
    were unseeded; here every fit uses ``random_state`` = ``seed``, which only decides ties
    between equally good splits (common on tiny prefixes), so predictions are reproducible.

    Cost: about 0.5-0.7 ms per fit, so 1280 prompts of 101 points (128,000 fits) take about
    85 CPU-seconds (measured: 2.1 s for 32 prompts on this project's busy 2-core machine);
    ``n_jobs`` worker threads divide that.
    """

    Options = DecisionTreeOptions
    options: DecisionTreeOptions

    def predict(self, episode: Episode) -> Tensor:
        fit = functools.partial(fit_tree, max_depth=self.options.max_depth)
        seed, n_jobs = self.options.seed, self.options.n_jobs
        return predict_every_prefix(episode, fit, seed, n_jobs, "decision trees")


def lightgbm_params(learning_rate: float, max_depth: int, seed: int) -> dict:
    """LightGBM parameters equivalent to ``xgboost.XGBRegressor()``'s, which Garg et al. used
    (defaults: learning rate 0.3, depth 6): squared error; depth-limited trees (LightGBM grows
    leaf-wise, but with ``num_leaves = 2**max_depth`` the depth limit is the binding one, as in
    XGBoost's depth-wise growth); L2 leaf penalty 1, minimum hessian 1 per leaf, no minimum
    gain, no subsampling; LightGBM's 255 histogram bins (XGBoost's 256; either way every
    distinct value of a prompt's at most 100 points gets its own bin). LightGBM's defaults for
    large data (20 points per leaf, 3 per bin) would forbid any split on a prompt's few points,
    hence the minimums of 1."""
    return {
        "objective": "regression",
        "learning_rate": learning_rate,
        "max_depth": max_depth,
        "num_leaves": 2**max_depth,
        "lambda_l2": 1.0,
        "min_sum_hessian_in_leaf": 1.0,
        "min_gain_to_split": 0.0,
        "min_data_in_leaf": 1,
        "min_data_in_bin": 1,
        "max_bin": 255,
        "num_threads": 1,  # one per joblib worker
        "deterministic": True,
        "force_col_wise": True,
        "seed": seed,
        "verbose": -1,
    }


def fit_boosting(
    train_x: np.ndarray,
    train_y: np.ndarray,
    query_x: np.ndarray,
    state: np.random.RandomState,
    params: dict,
    n_rounds: int,
) -> float:
    """Gradient-boosted trees (LightGBM) on one prefix, evaluated at the query."""
    import lightgbm  # on first use, so that importing the algorithm registry stays light

    dataset = lightgbm.Dataset(train_x, train_y, params=params, free_raw_data=True)
    booster = lightgbm.train(params, dataset, num_boost_round=n_rounds)
    return float(booster.predict(query_x, num_threads=1)[0])


class GradientBoostingOptions(AlgorithmOptions):
    n_rounds: int = Field(100, ge=1, description="boosting rounds (trees)")
    learning_rate: float = Field(0.3, gt=0, description="shrinkage of each tree")
    max_depth: int = Field(
        6, ge=1, le=16, description="depth of each tree (num_leaves is 2**max_depth)"
    )
    seed: int = Field(
        0, ge=0, description="LightGBM's seed (it draws nothing random with these settings)"
    )
    n_jobs: NJobs = -1


@register_algorithm("gradient_boosting")
class GradientBoosting(Algorithm):
    """Gradient-boosted trees (LightGBM, XGBoost's default settings) fitted to every prefix.

    Garg et al. 2022 use ``xgboost.XGBRegressor()`` with its defaults (``XGBoostModel``); XGBoost
    is not a dependency here, so LightGBM runs with the equivalent settings of
    ``lightgbm_params``: 100 rounds, learning rate 0.3, depth 6, L2 penalty 1, minimum
    leaf hessian 1. Differences that remain: LightGBM starts from the mean target (XGBoost 1.x,
    which they used, from 0.5; after 100 rounds at rate 0.3 the start is forgotten) and bins
    each feature's distinct values (at most 100 here, so every split XGBoost's exact method
    considers is available).

    Cost: about 45 ms per fit, so 1280 prompts of 101 points take about 1.6 core-hours
    (measured on this project's 2-core machine): it is not in any family's default yardsticks.
    Every prefix is fitted (skipping some would leave gaps in the error curve).
    """

    Options = GradientBoostingOptions
    options: GradientBoostingOptions

    def predict(self, episode: Episode) -> Tensor:
        options = self.options
        params = lightgbm_params(options.learning_rate, options.max_depth, options.seed)
        fit = functools.partial(fit_boosting, params=params, n_rounds=options.n_rounds)
        return predict_every_prefix(episode, fit, options.seed, options.n_jobs, "gradient boosting")


def prefix_models(batch_size: int, n_points: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The (prompt, prefix length) of every network to train, shortest prefixes first, so that a
    chunk of consecutive models needs only the points up to its longest prefix. Prefix 0 has no
    examples and no network."""
    prefix = torch.arange(1, n_points, device=device).repeat_interleave(batch_size)
    prompt = torch.arange(batch_size, device=device).repeat(n_points - 1)
    return prompt, prefix


class BatchedNetworks:
    """``M`` independent two-layer ReLU networks ``x → relu(x W1 + b1) w2 + b2``, stored as
    batched tensors, initialised like ``torch.nn.Linear`` (weights and biases uniform in
    ±1/sqrt(fan_in)), as Garg et al.'s ``NeuralNetwork``.

    Each network draws its four tensors from ``generator`` in turn, so the networks of a batch
    start from the same weights however they are split into chunks.
    """

    def __init__(self, n_models: int, n_dims: int, hidden: int, generator: torch.Generator) -> None:
        def uniform(*shape: int, fan_in: int) -> Tensor:
            bound = 1 / math.sqrt(fan_in)
            return (2 * torch.rand(shape, generator=generator) - 1) * bound

        weights = [
            (
                uniform(n_dims, hidden, fan_in=n_dims),
                uniform(1, hidden, fan_in=n_dims),
                uniform(hidden, 1, fan_in=hidden),
                uniform(1, 1, fan_in=hidden),
            )
            for _ in range(n_models)
        ]
        self.w1, self.b1, self.w2, self.b2 = (
            torch.stack(group) for group in zip(*weights, strict=True)
        )

    @property
    def parameters(self) -> list[Tensor]:
        return [self.w1, self.b1, self.w2, self.b2]

    def to(self, device: torch.device) -> BatchedNetworks:
        for name in ("w1", "b1", "w2", "b2"):
            setattr(self, name, getattr(self, name).to(device).requires_grad_())
        return self

    def __call__(self, x: Tensor) -> Tensor:  # x: (M, L, d) → (M, L)
        hidden = torch.relu(torch.baddbmm(self.b1, x, self.w1))  # (M, L, h)
        return torch.baddbmm(self.b2, hidden, self.w2).squeeze(-1)


def train_networks(
    networks: BatchedNetworks, x: Tensor, y: Tensor, is_example: Tensor, steps: int, lr: float
) -> None:
    """Full-batch Adam on each network's mean squared error over its own examples.

    ``x`` (M, L, d), ``y`` (M, L), ``is_example`` (M, L) bool. The losses are summed over the
    networks: their parameters are disjoint and Adam is elementwise, so this is M independent
    trainings. Non-examples get weight exactly 0, so their values never reach the parameters.
    """
    weight = is_example.to(x.dtype) / is_example.sum(1, keepdim=True).clamp(min=1)
    optimizer = Adam(networks.parameters, lr=lr)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = ((networks(x) - y).pow(2) * weight).sum()
        loss.backward()
        optimizer.step()


class TwoLayerNetworkOptions(AlgorithmOptions):
    hidden: int = Field(100, ge=1, description="hidden units")
    steps: int = Field(100, ge=1, description="Adam steps")
    lr: float = Field(5e-3, gt=0, description="Adam's learning rate")
    seed: int = Field(0, ge=0, description="seed of the initial weights")
    chunk_size: int = Field(512, ge=1, description="networks trained together")


@register_algorithm("two_layer_nn")
class TwoLayerNetwork(Algorithm):
    """Two-layer ReLU network trained by Adam on each prefix's examples (Garg et al. 2022).

    Garg et al.'s baseline for ReLU-network regression (``GDModel`` with
    ``NeuralNetwork(in_size=20, hidden_size=100)``): ``torch.nn.Linear`` initialisation, Adam
    with learning rate 5e-3, 100 steps on the mean squared error, mini-batches of 100 examples,
    which with at most 100 examples (prompts of 101 points) is the full batch; full batches are
    used here at every length. Each network minimises its own mean error (theirs averaged over
    the batch of prompts too, which Adam's scale invariance makes the same up to its epsilon).

    Batched: one network per (prompt, prefix), trained together in chunks of ``chunk_size``
    networks (bounding memory: well under 0.1 GB at the default with 101 points), each chunk on
    the points up to its longest prefix with the later ones masked out. Initial weights come
    from a CPU generator seeded with ``seed``, network after network (by prefix, then prompt),
    so predictions are a deterministic function of the episode's shape and contents, ``seed``
    and the training options, whatever ``chunk_size`` is.

    Cost: about 0.15 ms per network and Adam step with d = 20 and h = 100 on one CPU core
    (chunks of the shortest prefixes first roughly halve the points trained on): 1280 prompts
    of 101 points (128,000 networks, 100 steps) take about 30 CPU-minutes (measured: 24 s for
    16 prompts on this project's busy 2-core machine). It is the paper's yardstick for ReLU
    networks, so ``relu_network`` lists it anyway; on a GPU it is a matter of seconds.
    """

    Options = TwoLayerNetworkOptions
    options: TwoLayerNetworkOptions

    def predict(self, episode: Episode) -> Tensor:
        _check_episode(episode)
        x, y = episode.inputs.float(), episode.targets.float()
        batch, n, d = x.shape
        predictions = torch.zeros(batch, n, device=x.device)
        prompt, prefix = prefix_models(batch, n, x.device)
        hidden, chunk_size = self.options.hidden, self.options.chunk_size
        generator = torch.Generator().manual_seed(self.options.seed)
        starts = range(0, prompt.numel(), chunk_size)
        enabled = len(starts) > 1
        with progress("two-layer networks", len(starts), enabled=enabled, transient=True) as bar:
            for start in starts:
                chunk = slice(start, start + chunk_size)
                networks = BatchedNetworks(prompt[chunk].numel(), d, hidden, generator)
                predictions[prompt[chunk], prefix[chunk]] = self._fit_chunk(
                    networks.to(x.device), x, y, prompt[chunk], prefix[chunk]
                )
                bar.advance()
        return predictions.to(episode.targets.dtype)

    def _fit_chunk(
        self, networks: BatchedNetworks, x: Tensor, y: Tensor, prompt: Tensor, prefix: Tensor
    ) -> Tensor:
        """Train the networks of (prompt[m], prefix[m]) on their examples; (M,) predictions at
        their queries ``x[prompt[m], prefix[m]]``."""
        length = int(prefix.max()) + 1
        positions = torch.arange(length, device=x.device)
        is_example = positions < prefix[:, None]  # (M, L)
        with torch.enable_grad():
            train_networks(
                networks,
                x[prompt, :length],
                y[prompt, :length],
                is_example,
                self.options.steps,
                self.options.lr,
            )
        with torch.no_grad():
            return networks(x[prompt, prefix][:, None, :]).squeeze(1)
