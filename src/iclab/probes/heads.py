"""Attention-head scores of softmax layers: previous-token, prefix-matching, induction and
n-gram heads.

Every score is the share of a head's attention, from a query position, that lands on the keys a
mechanism would attend to (its *targets*), averaged over the queries that have a target and
over prompts: 1 for a head that attends only there, about 1/(number of keys) for a uniform one.

* ``previous_token``: the key t − 1 (every t ≥ 1).
* ``prefix_matching`` (Olsson et al. 2022), on fresh prompts of the task. Token tasks: from t to
  every key j + 1 with token j == token t, j < t (the token after an earlier copy of the current
  one). Vector tasks (token 2i is x_i, 2i+1 is y_i): from x_i's token 2i (i ≥ 1) to the y
  token 2j+1 of the context example j < i whose x_j is nearest x_i (Euclidean; the earliest of
  equally near ones, as with boolean inputs): the vector analogue, where the label of the most
  similar stored example is what a copying head would read.
  Queries are restricted to the positions the task scores (``loss_mask``), when it has one.
* ``induction``: the same targets on prompts whose second half repeats the first, from queries
  in the second half only: for token tasks Olsson et al.'s test, a random sequence of the
  task's vocabulary followed by itself; for vector tasks the prompt's first n/2 examples twice
  (x and y), so the nearest earlier example of each repeated x is its exact copy.
* ``ngram<n>`` (Akyürek et al. 2024's n-gram heads, higher-order induction heads; token tasks
  only): from t to every key k whose previous n − 1 tokens x_{k−n+1..k−1} equal the n − 1
  tokens ending at t, x_{t−n+2..t}: the keys an in-context n-gram model of the next token reads.
  With n = 2 this is prefix matching, hence the default n = 3.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from pydantic import Field
from torch import Tensor

from iclab.episode import Episode
from iclab.errors import ConfigError
from iclab.models import InContextModel
from iclab.probes.base import (
    Probe,
    ProbeOptions,
    ProbeResult,
    explain,
    register_probe,
    require_softmax_attention,
)
from iclab.tasks.base import Task

PROMPTS_PER_PASS = 8  # attention maps are (B, H, T, T) per layer, twice: keep B small


class AttentionHeadsOptions(ProbeOptions):
    n_prompts: int = Field(64, ge=1, description="fresh prompts the scores are averaged over")
    n: int = Field(
        3,
        ge=2,
        description="n of the n-gram head score (token tasks): keys after an earlier occurrence "
        "of the last n − 1 tokens (n = 2 is the prefix-matching score)",
    )


def score_totals(maps: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Attention on target keys summed over the queries that have one (H,), and their count.

    ``maps`` (B, H, T, T) softmax weights [query, key]; ``targets`` (B, T, T) bool, the keys that
    count for each query."""
    on_target = (maps * targets[:, None].to(maps.dtype)).sum(-1)  # (B, H, T), 0 off target
    return on_target.sum((0, 2)), targets.any(-1).sum()


def previous_token_targets(batch: int, length: int, device: torch.device) -> Tensor:
    """(B, T, T): key t − 1 for every query t ≥ 1."""
    below_diagonal = torch.ones(length - 1, dtype=torch.bool, device=device).diag(-1)  # (T, T)
    return below_diagonal.expand(batch, -1, -1)


def ngram_targets(tokens: Tensor, n: int) -> Tensor:
    """(B, T, T) from token ids (B, T): key k counts for query t when the n − 1 tokens before k
    equal the n − 1 tokens ending at t (k ≤ t); n = 2 is prefix matching."""
    length = tokens.shape[1]
    same = tokens[:, :, None] == tokens[:, None, :]  # [b, t, j]: x_t == x_j
    match = torch.ones_like(same)  # [b, t, j]: x_{t−m} == x_{j−m} for m < n − 1
    for m in range(n - 1):
        shifted = torch.zeros_like(same)
        shifted[:, m:, m:] = same[:, : length - m, : length - m]
        match &= shifted
    match &= torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril(-1)  # j < t
    targets = torch.zeros_like(match)
    targets[:, :, 1:] = match[:, :, :-1]  # the key after the match: k = j + 1
    return targets


def prefix_matching_targets(tokens: Tensor) -> Tensor:
    """(B, T, T): from t to every key j + 1 with x_j == x_t, j < t (Olsson et al. 2022)."""
    return ngram_targets(tokens, 2)


def nearest_example_targets(inputs: Tensor) -> Tensor:
    """(B, 2n, 2n) from vector inputs (B, n, d): from x_i's token 2i to the token 2j+1 of y_j,
    j < i the context example whose x_j is nearest x_i (queries i ≥ 1)."""
    batch, n_points, _ = inputs.shape
    distances = torch.cdist(inputs.float(), inputs.float())  # (B, n, n)
    later = torch.ones(n_points, n_points, dtype=torch.bool, device=inputs.device).triu()
    nearest = distances.masked_fill(later, torch.inf)[:, 1:].argmin(-1)  # (B, n − 1)
    targets = torch.zeros(batch, 2 * n_points, 2 * n_points, dtype=torch.bool, device=inputs.device)
    rows = torch.arange(batch, device=inputs.device)[:, None]
    queries = 2 * torch.arange(1, n_points, device=inputs.device)
    targets[rows, queries, 2 * nearest + 1] = True
    return targets


def query_mask(episode: Episode, tokens_per_example: int) -> Tensor:
    """(B, T) the token positions whose prediction the task scores (all when no loss_mask)."""
    length = episode.n_points * tokens_per_example
    if episode.loss_mask is None:
        return torch.ones(episode.batch_size, length, dtype=torch.bool, device=episode.device)
    return episode.loss_mask.repeat_interleave(tokens_per_example, dim=1)


def matching_targets(episode: Episode) -> Tensor:
    """Prefix-matching targets of a prompt: token matches or nearest examples."""
    if episode.kind == "tokens":
        return prefix_matching_targets(episode.inputs)
    return nearest_example_targets(episode.inputs)


def repeated_prompts(episode: Episode, task: Task, generator: torch.Generator) -> Episode:
    """Prompts whose second half repeats the first: random tokens of the task's vocabulary
    (token tasks), or each prompt's first n/2 examples twice (vector tasks)."""
    half = episode.n_points // 2
    if episode.kind == "tokens":
        sequence = torch.randint(
            task.n_classes, (episode.batch_size, half), generator=generator, device=episode.device
        )
        inputs = torch.cat((sequence, sequence), dim=1)
        return Episode(inputs=inputs, targets=inputs.roll(-1, dims=1), kind="tokens")
    inputs, targets = episode.inputs[:, :half], episode.targets[:, :half]
    return Episode(
        inputs=torch.cat((inputs, inputs), dim=1),
        targets=torch.cat((targets, targets), dim=1),
        kind=episode.kind,
    )


def second_half_only(targets: Tensor) -> Tensor:
    """Targets of the queries in the second half of the prompt (the repeat) only."""
    targets = targets.clone()
    targets[:, : targets.shape[1] // 2] = False
    return targets


@register_probe("attention_heads")
class AttentionHeads(Probe):
    """Previous-token, prefix-matching, induction and n-gram scores of every softmax head."""

    Options = AttentionHeadsOptions
    options: AttentionHeadsOptions
    paper = "Olsson et al. 2022 (arXiv 2209.11895); Akyürek et al. 2024 (arXiv 2401.12973)"

    def check_applies(self, model: InContextModel, task: Task) -> None:
        if task.kind == "decisions":
            raise ConfigError(
                f"attention_heads scores heads against matching tokens or examples; task "
                f"{task.name} is a decisions task, whose steps have no content to match (a "
                "bandit's observations are all the same)"
            )
        require_softmax_attention(model, "attention_heads")

    def score_names(self, task: Task) -> list[str]:
        names = ["previous_token", "prefix_matching", "induction"]
        return [*names, f"ngram{self.options.n}"] if task.kind == "tokens" else names

    def run(
        self, model: InContextModel, task: Task, n_points: int, generator: torch.Generator
    ) -> ProbeResult:
        totals: dict[tuple[int, str], Tensor] = {}  # (layer, score) → (H,) summed attention
        counts: dict[tuple[int, str], Tensor] = {}  # (layer, score) → queries with a target
        first_maps: dict[int, Tensor] = {}
        starts = range(0, self.options.n_prompts, PROMPTS_PER_PASS)
        for done, start in enumerate(starts, start=1):
            batch = min(PROMPTS_PER_PASS, self.options.n_prompts - start)
            episode = task.sample(batch, n_points, generator)
            with torch.no_grad():
                maps = model.attention_maps(episode)
                scored = self.scored_maps(model, task, episode, maps, generator)
            for layer, layer_maps in maps.items():
                first_maps.setdefault(layer, layer_maps[0].float().cpu())
            for layer, name, layer_maps, targets in scored:
                total, count = score_totals(layer_maps.float(), targets)
                totals[layer, name] = totals.get((layer, name), 0) + total.cpu()
                counts[layer, name] = counts.get((layer, name), 0) + count.cpu()
            self.report(done, len(starts))
        scores = {key: totals[key] / counts[key] for key in totals}  # 0/0: NaN, no query
        names = self.score_names(task)
        figures = {
            f"attention_layer{layer}": maps_figure(m, layer) for layer, m in first_maps.items()
        }
        figures |= {f"{name}_scores": score_heatmap(scores, name) for name in names}
        return ProbeResult(
            summary=best_heads(scores, names),
            tables={"heads": score_rows(scores, names)},
            figures=figures,
        )

    def scored_maps(
        self,
        model: InContextModel,
        task: Task,
        episode: Episode,
        maps: dict[int, Tensor],
        generator: torch.Generator,
    ) -> list[tuple[int, str, Tensor, Tensor]]:
        """(layer, score, attention maps, targets) of every score of every softmax layer:
        the fresh prompts' maps, and the maps of repeated prompts for the induction score."""
        per_example = model.codec.tokens_per_example
        scored = query_mask(episode, per_example)[:, :, None]
        length = episode.n_points * per_example
        targets = {
            "previous_token": previous_token_targets(episode.batch_size, length, episode.device),
            "prefix_matching": matching_targets(episode) & scored,
        }
        if episode.kind == "tokens":
            targets[f"ngram{self.options.n}"] = (
                ngram_targets(episode.inputs, self.options.n) & scored
            )
        repeated = repeated_prompts(episode, task, generator)
        repeated_maps = model.attention_maps(repeated)
        induction = second_half_only(matching_targets(repeated))
        return [
            (layer, name, layer_maps, target)
            for layer, layer_maps in maps.items()
            for name, target in targets.items()
        ] + [
            (layer, "induction", layer_maps, induction)
            for layer, layer_maps in repeated_maps.items()
        ]


def score_rows(scores: dict[tuple[int, str], Tensor], names: list[str]) -> list[dict]:
    """Table rows: layer (block index), head, score, value."""
    layers = sorted({layer for layer, _ in scores})
    return [
        {"layer": layer, "head": head, "score": name, "value": float(value)}
        for layer in layers
        for name in names
        for head, value in enumerate(scores[layer, name].tolist())
    ]


def best_heads(scores: dict[tuple[int, str], Tensor], names: list[str]) -> dict:
    """Per score: the highest head value and which head has it."""
    summary: dict[str, float | str] = {}
    for name in names:
        layer, head, value = max(
            (
                (layer, head, value)
                for (layer, score), values in scores.items()
                if score == name
                for head, value in enumerate(values.tolist())
            ),
            key=lambda item: -math.inf if math.isnan(item[2]) else item[2],
        )
        summary[f"{name}_max"] = value
        summary[f"{name}_head"] = f"layer {layer} head {head}"
    return summary


def maps_figure(maps: Tensor, layer: int) -> Figure:
    """One prompt's attention maps (H, T, T) of one layer, a panel per head."""
    n_heads = maps.shape[0]
    figure, axes = plt.subplots(1, n_heads, figsize=(3 * n_heads, 3.2), squeeze=False)
    for head, axis in enumerate(axes[0]):
        axis.imshow(maps[head].numpy(), cmap="viridis", vmin=0.0)
        axis.set_title(f"head {head}")
        axis.set_xlabel("key")
        axis.set_ylabel("query")
    figure.suptitle(f"attention of layer {layer} (one prompt)")
    return figure


SCORE_MEANINGS = {
    "previous_token": "Mean attention from each token to the one just before it (1: a head that "
    "always looks one token back).",
    "prefix_matching": "Mean attention from a token to the token after an earlier occurrence of "
    "the same input (what an induction head attends to).",
    "induction": "On a prompt repeated twice, mean attention from a token of the second copy to "
    "the token after its first occurrence (1: a perfect induction head).",
    "ngram": "Mean attention to the token after an earlier match of the last n − 1 tokens (an "
    "n-gram head, Akyürek et al. 2024).",
}


def score_heatmap(scores: dict[tuple[int, str], Tensor], name: str) -> Figure:
    """A (layer × head) heatmap of one score, values written in the cells."""
    layers = sorted(layer for layer, score in scores if score == name)
    grid = torch.stack([scores[layer, name] for layer in layers]).numpy()  # (L, H)
    figure, axis = plt.subplots(figsize=(1 + 0.8 * grid.shape[1], 1 + 0.6 * grid.shape[0]))
    image = axis.imshow(grid, cmap="magma", vmin=0.0, vmax=1.0)
    for row in range(grid.shape[0]):
        for column in range(grid.shape[1]):
            text = f"{grid[row, column]:.2f}"
            axis.text(column, row, text, ha="center", va="center", color="tab:cyan")
    axis.set_xticks(range(grid.shape[1]))
    axis.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    axis.set_xlabel("head")
    axis.set_ylabel("layer")
    axis.set_title(f"{name.replace('_', ' ')} score")
    figure.colorbar(image, ax=axis)
    return explain(figure, SCORE_MEANINGS.get(name.rstrip("0123456789"), ""))
