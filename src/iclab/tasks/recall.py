"""Associative recall: key-value pairs in the context, then queries of the keys."""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from torch import Tensor

from iclab.episode import Episode
from iclab.errors import ConfigError
from iclab.tasks.base import Task, TaskOptions, register_task


class MultiQueryRecallOptions(TaskOptions):
    vocab_size: int = Field(
        128, ge=4, description="tokens: keys from the lower half, values from the upper half"
    )
    n_pairs: int = Field(8, ge=1, description="key-value pairs per prompt (distinct keys)")
    n_queries: int = Field(8, ge=1, description="queried keys per prompt (distinct, <= n_pairs)")
    gap_power: float = Field(
        0.01,
        gt=0.0,
        description="query slots drawn with weight i^(gap_power - 1); 1 is uniform",
    )

    @model_validator(mode="after")
    def _fits_the_vocabulary(self) -> MultiQueryRecallOptions:
        if self.n_queries > self.n_pairs:
            raise ValueError(
                f"n_queries ({self.n_queries}) must not exceed n_pairs ({self.n_pairs}): "
                "each query asks a different stored key"
            )
        if self.n_pairs > self.vocab_size // 2:
            raise ValueError(
                f"n_pairs ({self.n_pairs}) must be at most vocab_size // 2 "
                f"({self.vocab_size // 2}): keys, and values, are distinct tokens of one half"
            )
        return self


@register_task("mqar")
class MultiQueryRecall(Task):
    """Multi-query associative recall: key-value pairs, then queried keys followed by their values.

    Arora, Eyuboglu, Timalsina, Johnson, Poli, Zou, Rudra, Ré 2023, *Zoology: measuring and
    improving recall in efficient language models* (arXiv 2312.04927). The layout follows the
    Zoology generator (``multiquery_ar``): ``k1 v1 k2 v2 … kN vN``, then a query region where the
    queries sit at two-token slots drawn without replacement with weights ``i^(a-1)``
    (``power_a = 0.01``: early slots favoured), with random tokens elsewhere. Departures, so that
    next-token prediction at a query scores the recall and recall is exact:

    * each query is followed by its answer (Zoology puts the answer only in the labels), so
      ``targets`` at a query position is the value stored for that key, and only those
      positions are in ``loss_mask``;
    * ``n_queries`` distinct keys are queried (Zoology queries every key once: ``n_queries =
      n_pairs``);
    * filler tokens come from the value half (Zoology draws them from the whole vocabulary), so a
      key occurs only where it is stored or queried.

    Keys are distinct tokens of ``[0, V/2)``, values distinct tokens of ``[V/2, V)``. The
    defaults are a CPU-sized setting: vocabulary 128, 8 pairs, 8 queries, 64 tokens. The paper
    uses vocabulary 8192 and (sequence length, pairs) = (64, 4), (128, 8), (256, 16) (e.g.
    ``--set task.vocab_size=8192 --set task.n_pairs=4 --set task.n_queries=4 --set
    task.n_points=64``). An in-context bigram model, ``ngram(n=2)``, is exact here too: a key is
    always followed by its value.

    ``meta``: ``keys`` and ``values`` (B, n_pairs), ``query_positions`` (B, n_queries) and
    ``answers`` (B, n_queries), the value stored for each queried key.
    """

    kind = "tokens"
    Options = MultiQueryRecallOptions
    paper = "Arora et al. 2023 (Zoology), arXiv 2312.04927"
    default_n_points = 64
    yardsticks = ("mqar_lookup", "ngram(n=2)")
    options: MultiQueryRecallOptions

    @property
    def n_classes(self) -> int:
        return self.options.vocab_size

    def sample(
        self,
        batch_size: int,
        n_points: int,
        generator: torch.Generator,
        n_dims_active: int | None = None,
    ) -> Episode:
        opts, device = self.options, generator.device
        context = 2 * opts.n_pairs
        n_slots = (n_points - context) // 2
        if n_slots < opts.n_queries:
            raise ConfigError(
                f"mqar needs n_points >= 2 * (n_pairs + n_queries) = "
                f"{2 * (opts.n_pairs + opts.n_queries)} tokens, got n_points={n_points}"
            )
        half = opts.vocab_size // 2
        keys = _distinct_tokens(0, half, opts.n_pairs, batch_size, generator)
        values = _distinct_tokens(half, opts.vocab_size, opts.n_pairs, batch_size, generator)
        queried = _distinct_tokens(0, opts.n_pairs, opts.n_queries, batch_size, generator)
        slot_weights = torch.arange(1, n_slots + 1, device=device) ** (opts.gap_power - 1)
        slots = torch.multinomial(
            slot_weights.expand(batch_size, -1), opts.n_queries, generator=generator
        )
        query_positions = context + 2 * slots  # (B, n_queries)
        answers = values.gather(1, queried)
        stream = torch.randint(  # filler; one token beyond n_points for the last target
            half, opts.vocab_size, (batch_size, n_points + 1), generator=generator, device=device
        )
        stream[:, 0:context:2], stream[:, 1:context:2] = keys, values
        stream.scatter_(1, query_positions, keys.gather(1, queried))
        stream.scatter_(1, query_positions + 1, answers)
        loss_mask = torch.zeros(batch_size, n_points, dtype=torch.bool, device=device)
        loss_mask.scatter_(1, query_positions, True)
        return Episode(
            inputs=stream[:, :-1],
            targets=stream[:, 1:],
            kind="tokens",
            meta={
                "keys": keys,
                "values": values,
                "query_positions": query_positions,
                "answers": answers,
            },
            loss_mask=loss_mask,
        )


def _distinct_tokens(
    low: int, high: int, count: int, batch_size: int, generator: torch.Generator
) -> Tensor:
    """(B, count) distinct integers from ``[low, high)`` per row, uniformly at random."""
    keys = torch.rand(batch_size, high - low, generator=generator, device=generator.device)
    return low + keys.argsort(dim=-1)[:, :count]
