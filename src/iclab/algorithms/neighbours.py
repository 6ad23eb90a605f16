"""Nearest earlier neighbours of every position, shared by the kNN learners of every kind."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def earlier_neighbours(inputs: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``min(k, n)`` nearest earlier points of every position (Euclidean), nearest first.

    Returns their indices (B, n, k') and whether each is a real earlier point (B, n, k'): masked
    later points sort after every earlier one, so row i's valid neighbours are those with j < i.
    Ties go to the earlier point (stable sort), so the result does not depend on the sorting
    kernel, and distances are computed entry by entry, so identical points get identical ones.
    """
    x = inputs.double()
    n = x.shape[1]
    distance = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")  # (B, n, n)
    not_earlier = torch.ones(n, n, dtype=torch.bool, device=x.device).triu()  # j >= i
    distance = distance.masked_fill(not_earlier, math.inf)
    nearest = distance.argsort(dim=-1, stable=True)[..., : min(k, n)]
    is_earlier = nearest < torch.arange(n, device=x.device)[:, None]
    return nearest, is_earlier
