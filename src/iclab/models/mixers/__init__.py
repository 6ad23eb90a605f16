"""Sequence mixers: the one part of a block that differs between architectures."""

from iclab.models.mixers import attention  # noqa: F401  (registers the attention mixers)
from iclab.models.mixers.base import MIXERS, register_mixer

__all__ = ["MIXERS", "register_mixer"]
