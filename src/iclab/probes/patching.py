"""Activation patching: where in depth and position a prompt's answer is carried.

For pairs of prompts (A, B) of one task, B is run with the residual stream of layer l replaced
by A's at a set of positions, and the prediction at B's last query moves from B's toward A's
(Guo et al. 2023 paste lower layers of one prompt into another the same way; this is the
standard activation-patching experiment). Layer 0 is the embedded prompt (the input of the first
block), layer l ≥ 1 the output of block l − 1, as in ``InContextModel.hidden_states``. Position
sets: ``context`` (every token before the query token), ``query`` (the token the last
prediction is read at: x_n for vector tasks, the last scored token for token tasks) and ``all``.

Pairs: when the task can label new inputs (``Task.label``: the regression families), B keeps
its own function but takes A's inputs, so A and B differ only in the function (e.g. w); then
what a patch moves is information about the function, never about the query x (patching the
query's embedding changes nothing). Other tasks use two independent prompts.

Effect, per layer and position set: Σ (ŷ_patched − ŷ_B)(ŷ_A − ŷ_B) / Σ (ŷ_A − ŷ_B)² over
pairs, the least-squares slope of the patched prediction's move on the full move, i.e. the
average of the per-pair ratios (ŷ_patched − ŷ_B)/(ŷ_A − ŷ_B) weighted by (ŷ_A − ŷ_B)², so
pairs whose predictions nearly agree cannot blow it up. 1: the patch carries A's answer, 0: it
does not. For classifiers ŷ is the logit difference z[a] − z[b] between the classes A and B
predict (pairs predicting the same class weigh nothing; NaN when no pair differs, as for an
untrained model that ignores the labels), and ``follows_a`` is the share of
pairs (with a ≠ b) whose patched prediction is A's class.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from pydantic import Field
from torch import Tensor

from iclab.episode import Episode
from iclab.models import InContextModel
from iclab.probes.base import Probe, ProbeOptions, ProbeResult, explain, register_probe
from iclab.tasks.base import Task

POSITION_SETS = ("context", "query", "all")
PROMPTS_PER_PASS = 64  # pairs per forward pass: every layer's stream of A is kept


class ActivationPatchingOptions(ProbeOptions):
    n_prompts: int = Field(256, ge=1, description="prompt pairs (A, B) the effects average over")


def paired_prompts(
    task: Task, batch: int, n_points: int, generator: torch.Generator
) -> tuple[Episode, Episode, str]:
    """Prompts A and B and how they pair: B takes A's inputs under its own function where the
    task can label new inputs, else A and B are independent."""
    a, b = task.sample(batch, n_points, generator), task.sample(batch, n_points, generator)
    try:
        targets = task.label(a.inputs, b.meta, generator)
    except NotImplementedError:
        return a, b, "independent prompts"
    b = Episode(inputs=a.inputs, targets=targets, kind=b.kind, meta=b.meta, loss_mask=b.loss_mask)
    return a, b, "shared inputs, different functions"


def query_examples(episode: Episode) -> Tensor:
    """(B,) index of each prompt's last scored example (the last one without a loss_mask)."""
    if episode.loss_mask is None:
        return torch.full((episode.batch_size,), episode.n_points - 1, device=episode.device)
    positions = torch.arange(episode.n_points, device=episode.device)
    return torch.where(episode.loss_mask, positions, -1).amax(1)


def position_masks(query_tokens: Tensor, length: int) -> dict[str, Tensor]:
    """(B, T) bool masks of each position set, from the query token of every prompt (B,)."""
    positions = torch.arange(length, device=query_tokens.device)[None]  # (1, T)
    return {
        "context": positions < query_tokens[:, None],
        "query": positions == query_tokens[:, None],
        "all": torch.ones(len(query_tokens), length, dtype=torch.bool, device=query_tokens.device),
    }


@contextmanager
def patched(model: InContextModel, layer: int, source: Tensor, mask: Tensor) -> Iterator[None]:
    """Within the block, the residual stream of ``layer`` (0: the input of block 0; l: the
    output of block l − 1) is ``source`` (B, T, E) where ``mask`` (B, T) is set: forward hooks,
    so it works whatever the mixer."""
    blocks = model.backbone.blocks

    def replace(stream: Tensor) -> Tensor:
        return torch.where(mask[..., None], source, stream)

    if layer == 0:
        handle = blocks[0].register_forward_pre_hook(lambda _, args: (replace(args[0]), *args[1:]))
    else:
        handle = blocks[layer - 1].register_forward_hook(lambda _, args, out: replace(out))
    try:
        yield
    finally:
        handle.remove()


def read_at(prediction: Tensor, examples: Tensor) -> Tensor:
    """The prediction of each prompt's example ``examples`` (B,): (B,) values or (B, C) scores."""
    rows = torch.arange(len(examples), device=examples.device)
    return prediction[rows, examples]


def patching_effect(patched: Tensor, source: Tensor, base: Tensor) -> tuple[Tensor, Tensor]:
    """Numerator and denominator of the slope Σ (p − b)(a − b) / Σ (a − b)² over pairs."""
    move = source - base
    return ((patched - base) * move).sum(), move.pow(2).sum()


@register_probe("activation_patching")
class ActivationPatching(Probe):
    """Patch every layer's residual stream from prompt A into B at the context, the query or
    all positions; the share of the move from B's prediction to A's that each patch causes."""

    Options = ActivationPatchingOptions
    options: ActivationPatchingOptions
    paper = "Guo et al. 2023 (arXiv 2310.10616), layer pasting; activation patching"

    def run(
        self, model: InContextModel, task: Task, n_points: int, generator: torch.Generator
    ) -> ProbeResult:
        n_layers = len(model.backbone.blocks)
        keys = [(layer, name) for layer in range(n_layers + 1) for name in POSITION_SETS]
        sums = {key: torch.zeros(4, dtype=torch.float64) for key in keys}  # num, den, hits, n
        pairing = ""
        starts = range(0, self.options.n_prompts, PROMPTS_PER_PASS)
        for done, start in enumerate(starts, start=1):
            batch = min(PROMPTS_PER_PASS, self.options.n_prompts - start)
            a, b, pairing = paired_prompts(task, batch, n_points, generator)
            with torch.no_grad():
                for key, totals in patch_totals(model, a, b).items():
                    sums[key] += totals
            self.report(done, len(starts))
        rows = []
        for layer, name in keys:
            numerator, denominator, hits, count = sums[layer, name].tolist()
            effect = numerator / denominator if denominator > 0 else float("nan")
            row = {"layer": layer, "positions": name, "effect": effect}
            if task.kind != "regression":
                row["follows_a"] = hits / count if count else float("nan")
            rows.append(row)
        return ProbeResult(
            summary={"pairs": pairing, "n_prompts": self.options.n_prompts, **headline(rows)},
            tables={"patching": rows},
            figures={"patching": effect_figure(rows, pairing)},
        )


def patch_totals(model: InContextModel, a: Episode, b: Episode) -> dict[tuple[int, str], Tensor]:
    """(layer, position set) → [Σ (p − b)(a − b), Σ (a − b)², pairs whose patched class is A's,
    pairs whose classes differ] for one batch of pairs (the last two 0 for regression)."""
    per_example = model.codec.tokens_per_example
    examples = query_examples(b)
    masks = position_masks(per_example * examples, b.n_points * per_example)
    source_hidden = model.hidden_states(a)
    score_a, score_b = read_at(model(a), examples), read_at(model(b), examples)
    regression = score_a.ndim == 1
    class_a, class_b = (None, None) if regression else (score_a.argmax(-1), score_b.argmax(-1))

    def value(scores: Tensor) -> Tensor:  # (B,): the prediction, or the logit difference
        if regression:
            return scores
        return (scores.gather(1, class_a[:, None]) - scores.gather(1, class_b[:, None]))[:, 0]

    totals = {}
    for layer, stream in enumerate(source_hidden):
        for name, mask in masks.items():
            with patched(model, layer, stream, mask):
                score = read_at(model(b), examples)
            numerator, denominator = patching_effect(value(score), value(score_a), value(score_b))
            if regression:
                hits = count = torch.zeros((), device=score.device)
            else:
                differ = class_a != class_b
                hits, count = ((score.argmax(-1) == class_a) & differ).sum(), differ.sum()
            totals[layer, name] = torch.stack([numerator, denominator, hits, count]).double().cpu()
    return totals


def headline(rows: list[dict]) -> dict[str, int | str]:
    """The first layer from which the query token alone carries half of A's answer, and the
    last layer at which the context alone still does."""
    query = [row["layer"] for row in rows if row["positions"] == "query" and row["effect"] >= 0.5]
    context = [
        row["layer"] for row in rows if row["positions"] == "context" and row["effect"] >= 0.5
    ]
    return {
        "query_carries_answer_from_layer": min(query) if query else "never",
        "context_carries_answer_until_layer": max(context) if context else "never",
    }


def effect_figure(rows: list[dict], pairing: str) -> Figure:
    """Effect against layer, a line per position set."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for name in POSITION_SETS:
        chosen = [row for row in rows if row["positions"] == name]
        axis.plot(
            [row["layer"] for row in chosen], [row["effect"] for row in chosen], "o-", label=name
        )
    axis.axhline(0.0, color="grey", linewidth=0.8)
    axis.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    axis.set_xlabel("layer patched (0: embedding)")
    axis.set_ylabel("effect: share of the move from B's prediction to A's")
    axis.set_title(f"activation patching ({pairing})")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.legend(title="positions patched")
    return explain(
        figure,
        "Prompt A's residual stream at one layer is pasted into prompt B's at the positions "
        "named: context (every token before the query), query (the query token) or all. An "
        "effect of 1 means B then predicts what A predicts (that layer and those positions carry "
        "the answer), 0 that B's prediction does not move.",
    )
