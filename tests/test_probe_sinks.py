"""The attention_sink probe's measure on planted attention maps (the probe contract, run on a
trained run, is in test_probe_contract.py)."""

from __future__ import annotations

import pytest
import torch

from iclab.probes.sinks import sink_shares, uniform_share


def causal_uniform(batch: int, heads: int, length: int) -> torch.Tensor:
    weights = torch.ones(length, length).tril()
    return (weights / weights.sum(-1, keepdim=True)).expand(batch, heads, length, length)


def test_a_head_that_always_attends_to_the_first_token_scores_one_and_others_their_share():
    length = 6
    maps = causal_uniform(2, 3, length).clone()
    maps[:, 1] = 0.0
    maps[:, 1, :, 0] = 1.0  # head 1: every query on token 0
    maps[:, 2] = torch.eye(length)  # head 2: every query on itself
    shares = sink_shares(maps, first=1)
    assert shares[1] == 1.0 and shares[2] == 0.0
    assert shares[0].item() == pytest.approx(uniform_share(length, 1))


@pytest.mark.parametrize("first", [1, 2, 3])
def test_uniform_causal_attention_gives_the_uniform_share(first):
    length = 8
    shares = sink_shares(causal_uniform(1, 2, length), first)
    expected = sum(first / (t + 1) for t in range(first, length)) / (length - first)
    assert uniform_share(length, first) == pytest.approx(expected)
    torch.testing.assert_close(shares, torch.full((2,), expected, dtype=torch.float64))
