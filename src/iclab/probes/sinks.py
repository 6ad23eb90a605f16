"""Attention sinks: how much of each softmax head's attention goes to the first tokens.

Xiao et al. 2023 (StreamingLLM, arXiv 2309.17453) found that language models put a large share
of attention on the first tokens whatever their content, and that keeping those tokens is what
lets a sliding-window KV cache work; a cache policy that evicts them (a plain window) breaks
such a model. ``attention_sink`` measures the share per layer and head on fresh prompts, next to
what uniform causal attention would give, so a run can be checked before choosing a policy.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from pydantic import Field
from torch import Tensor

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

PROMPTS_PER_PASS = 64


class AttentionSinkOptions(ProbeOptions):
    first: int = Field(1, ge=1, description="how many leading tokens count as the sink")
    n_prompts: int = Field(256, ge=1, description="fresh prompts the shares are averaged over")


def sink_shares(maps: Tensor, first: int) -> Tensor:
    """Per head, the attention weight on the first ``first`` tokens averaged over the queries
    that can see past them (positions ≥ ``first``) and the prompts: (H,) from maps (B, H, T, T)."""
    return maps[:, :, first:, :first].sum(-1).double().mean((0, 2))


def uniform_share(length: int, first: int) -> float:
    """What uniform causal attention puts on the first ``first`` of ``length`` tokens: the mean
    over the queries t ≥ first of first / (t + 1)."""
    queries = torch.arange(first, length, dtype=torch.float64)
    return (first / (queries + 1)).mean().item()


@register_probe("attention_sink")
class AttentionSink(Probe):
    """Share of every softmax head's attention on the first tokens (StreamingLLM's attention
    sinks), against uniform causal attention."""

    Options = AttentionSinkOptions
    options: AttentionSinkOptions
    paper = "Xiao et al. 2023 (StreamingLLM), arXiv 2309.17453"

    def check_applies(self, model: InContextModel, task: Task) -> None:
        require_softmax_attention(model, "attention_sink")

    def run(
        self, model: InContextModel, task: Task, n_points: int, generator: torch.Generator
    ) -> ProbeResult:
        first = self.options.first
        length = n_points * model.codec.tokens_per_example
        if first >= length:
            raise ConfigError(
                f"attention_sink option first={first}: prompts have {length} tokens, so no "
                "query could look past the sink"
            )
        totals: dict[int, Tensor] = {}
        starts = range(0, self.options.n_prompts, PROMPTS_PER_PASS)
        for done, start in enumerate(starts, start=1):
            batch = min(PROMPTS_PER_PASS, self.options.n_prompts - start)
            with torch.no_grad():
                maps = model.attention_maps(task.sample(batch, n_points, generator))
            for layer, layer_maps in maps.items():
                shares = sink_shares(layer_maps.float(), first).cpu()
                totals[layer] = totals.get(layer, 0) + shares * batch
            self.report(done, len(starts))
        shares = {layer: total / self.options.n_prompts for layer, total in totals.items()}
        uniform = uniform_share(length, first)
        rows = [
            {"layer": layer, "head": head, "sink_share": float(value), "uniform": uniform}
            for layer, values in sorted(shares.items())
            for head, value in enumerate(values.tolist())
        ]
        top = max(rows, key=lambda row: row["sink_share"])
        summary = {
            "first_tokens": first,
            "max_sink_share": top["sink_share"],
            "max_layer": top["layer"],
            "max_head": top["head"],
            "mean_sink_share": sum(row["sink_share"] for row in rows) / len(rows),
            "uniform_share": uniform,
        }
        return ProbeResult(
            summary=summary,
            tables={"sinks": rows},
            figures={"sinks": sinks_figure(shares, uniform, first)},
        )


def sinks_figure(shares: dict[int, Tensor], uniform: float, first: int) -> Figure:
    """Heat map of the sink share per (layer, head)."""
    layers = sorted(shares)
    values = torch.stack([shares[layer] for layer in layers]).numpy()
    figure, axes = plt.subplots(figsize=(1.2 + 0.6 * values.shape[1], 1.2 + 0.5 * len(layers)))
    image = axes.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axes.set_xticks(range(values.shape[1]))
    axes.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    axes.set_xlabel("head")
    axes.set_ylabel("layer")
    axes.set_title(f"attention on the first {first} token(s)")
    figure.colorbar(image, ax=axes)
    return explain(
        figure,
        f"Share of each head's attention that lands on the first {first} token(s), averaged "
        f"over the queries after them; uniform causal attention would give {uniform:.3f}.",
    )
