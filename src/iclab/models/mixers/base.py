"""Registry of sequence mixers. A mixer maps (B, T, E) → (B, T, E) causally."""

from __future__ import annotations

from torch import nn

from iclab.registry import Registry

MIXERS: Registry[type[nn.Module]] = Registry("mixer")
register_mixer = MIXERS.register
