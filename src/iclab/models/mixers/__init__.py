"""Sequence mixers: the one part of a block that differs between architectures."""

from iclab.models.mixers import (  # noqa: F401  (each module registers its mixers)
    attention,
    deltanet,
    linear_attention,
    rnn,
    ssm,
)
from iclab.models.mixers.base import (
    MIXER_SPEC,
    MIXERS,
    Mixer,
    MixerOptions,
    register_mixer,
    resolve_mixer,
)

__all__ = ["MIXERS", "MIXER_SPEC", "Mixer", "MixerOptions", "register_mixer", "resolve_mixer"]
