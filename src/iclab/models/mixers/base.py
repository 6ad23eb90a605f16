"""What every sequence mixer provides, and the registry that names them.

A mixer maps (B, T, E) → (B, T, E) causally: output t depends on inputs 1..t only. It is built
from ``(d_model, n_heads, options)``, where ``options`` is an instance of the mixer's own
pydantic ``Options`` (named in configs by a spec such as ``linear_attention(form=chunked)``).

Streaming: ``init_state(batch, device, dtype)`` gives the state before any token, and
``step(x, state)`` consumes one token (B, E) and returns its output and the next state. A state is
a tuple of tensors plus, where a mixer needs it, an int position; ``state_size(t)`` is the number
of floats it holds per sequence after t tokens (``state_numel`` counts them), so architectures can
be compared on state size as well as parameter count.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from iclab.registry import Registry
from iclab.specs import Spec, resolve_spec, spec_type

MixerState = tuple[Any, ...]


class MixerOptions(BaseModel):
    """Options of a mixer; subclass per mixer and give every field a ``description``
    (``iclab models`` shows it)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class Mixer(nn.Module):
    """Base class of sequence mixers. Subclasses set the class attributes and implement
    ``forward``, ``init_state``, ``step`` and ``state_size``.

    ``forms`` lists the computations ``Options.form`` can choose between (all give the same
    outputs; tests check it); ``state_formula`` shows ``state_size`` in listings, in terms of E
    (d_model), H (n_heads) and t (tokens so far); ``uses_learned_positions`` asks the backbone
    for a learned position table at its input; ``width_multiple(n_heads)`` is what d_model must
    be a multiple of.
    """

    name: ClassVar[str] = "unregistered"  # set by @register_mixer
    Options: ClassVar[type[MixerOptions]] = MixerOptions
    forms: ClassVar[tuple[str, ...]] = ("parallel",)
    state_formula: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    # What ``train.lr: auto`` uses: of 1e-3, 2e-3 and 5e-3, the smallest Adam rate within 10% of
    # the best error on the quickstart task after 1000 steps (configs/sweeps/mixer_lr.yaml,
    # benchmarks/RESULTS.md). 1e-3 for a mixer the sweep has not reached (none of the zoo now).
    learning_rate: ClassVar[float] = 1e-3
    # Whether the streaming state is a KV cache a cache policy can manage (iclab.models.caches);
    # such a mixer makes its empty caches: ``new_cache(policy, batch, device, dtype, layer,
    # n_layers, group)``.
    has_kv_cache: ClassVar[bool] = False

    @classmethod
    def tuned_learning_rate(cls, options: MixerOptions) -> float:
        """``train.lr: auto``'s rate for this mixer with ``options``: ``learning_rate``, unless
        an option changes how fast the mixer learns."""
        return cls.learning_rate

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        options: MixerOptions | None = None,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.n_heads = n_heads
        self.options = options if options is not None else self.Options()

    @property
    def uses_learned_positions(self) -> bool:
        return False

    @classmethod
    def width_multiple(cls, n_heads: int, options: MixerOptions) -> int:
        return n_heads

    @classmethod
    def supports_private_tokens(cls, options: MixerOptions) -> bool:
        """Whether ``forward(x, visible=...)`` can hide tokens from later ones and whether a
        token's output is free of its position, as set-style prompts need
        (``model.tokens: set``)."""
        return False

    def reset_special_parameters(self) -> None:
        """Initialise what GPT-2's init of linear maps does not fit (decays, SSM dynamics); the
        backbone calls it after that init."""

    def forward(self, x: Tensor) -> Tensor:  # (B, T, E) → (B, T, E)
        raise NotImplementedError

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> MixerState:
        raise NotImplementedError

    def step(self, x: Tensor, state: MixerState) -> tuple[Tensor, MixerState]:  # x: (B, E)
        raise NotImplementedError

    def state_size(self, length: int) -> int:
        """Floats carried per sequence after ``length`` tokens."""
        raise NotImplementedError

    def sequence_flops(self, length: int) -> float:
        """Training FLOPs per token (forward and backward) beyond the matmuls of the mixer's
        weights, in sequences of ``length`` tokens: what mixing the positions costs where it
        grows with the length (attention scores); 0 for mixers whose state update is O(state)
        per token, small against their weights' 6 FLOPs per parameter and token."""
        return 0.0


def balanced_chunks(length: int, chunk_size: int) -> tuple[int, int]:
    """(number of chunks, steps per chunk) of a chunked form: as few chunks as ``chunk_size``
    allows, of equal size, so that 82 steps are two chunks of 41 rather than two of 64 with
    the second one half padding."""
    n_chunks = -(-length // chunk_size)
    return n_chunks, -(-length // n_chunks)


def state_numel(state: Any) -> int:
    """Floats in a (nested) state, per the whole batch; ints such as positions are not state."""
    if isinstance(state, Tensor):
        return state.numel()
    if isinstance(state, (tuple, list)):
        return sum(state_numel(item) for item in state)
    return 0


MIXERS: Registry[type[Mixer]] = Registry("mixer")

register_mixer = MIXERS.register  # sets the subclass's ``name`` too


def resolve_mixer(spec: str | Spec) -> Spec:
    """``"linear_attention(form=chunked)"`` → ``Spec`` (class, validated options); errors name
    the spec, the option and what is allowed."""
    return resolve_spec(spec, MIXERS, what="mixer")


MIXER_SPEC = spec_type(MIXERS, "mixer")  # a config field holding a mixer spec
