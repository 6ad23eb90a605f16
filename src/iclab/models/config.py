"""The options of a sequence model: a stack of blocks around sequence mixers named by specs."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from iclab.errors import limit_note, within_size_limit
from iclab.models.mixers import MIXER_SPEC
from iclab.specs import Spec, split_specs

# Sizes refused at load unless ICLAB_NO_SIZE_LIMITS=1 (``iclab.errors.within_size_limit``).
MODEL_LIMITS = {
    "n_layers": 256,
    "d_model": 65_536,
    "n_heads": 4096,
    "mlp_ratio": 64,
    "target_params": 10_000_000_000,
}


class ModelConfig(BaseModel):
    """A sequence model: codec + a stack of blocks around sequence mixers.

    ``mixer`` names the mixer of every block by a spec (``linear_attention(form=chunked)``);
    ``layers`` names one per block instead, for hybrids (``mamba,mamba,softmax,mamba``).
    ``target_params`` chooses ``d_model`` so that the whole model lands within 5% of a parameter
    budget, for comparisons of architectures at equal size.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)

    mixer: MIXER_SPEC = Field(
        "softmax", validate_default=True, description="mixer spec for every block (iclab models)"
    )
    layers: list[MIXER_SPEC] | None = Field(
        None, description="one mixer spec per block, for hybrids; sets n_layers"
    )
    n_layers: int = Field(12, ge=1, description=limit_note(MODEL_LIMITS["n_layers"]))
    d_model: int = Field(256, ge=8, description=limit_note(MODEL_LIMITS["d_model"]))
    n_heads: int = Field(8, ge=1, description=limit_note(MODEL_LIMITS["n_heads"]))
    mlp_ratio: int = Field(
        4,
        ge=0,
        description="MLP width / d_model; 0: mixer-only blocks; "
        + limit_note(MODEL_LIMITS["mlp_ratio"]),
    )
    norm: Literal["layernorm", "none"] = Field(
        "layernorm", description="pre-norm in every block and at the end, or none"
    )
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="dropout on the embeddings and every residual branch"
    )
    init_std: float = Field(
        0.02,
        gt=0.0,
        le=1.0,
        description="standard deviation of the normal initialisation of the blocks' linear maps "
        "and embeddings (GPT-2's 0.02; residual projections get it / √(2 · layers)); von Oswald "
        "et al. start their linear self-attention layer at 0.002",
    )
    tokens: Literal["interleaved", "paired", "lagged", "set"] = Field(
        "interleaved",
        description="interleaved x and y tokens (Garg et al.); paired: a query token (x, 0) "
        "then (x, y) per example (von Oswald et al.); lagged: one token (x_i, y_{i-1}) per "
        "example, half the sequence with the same causal information; set: paired with private "
        "queries (no token attends to a query), for softmax(positions=none): TabPFN-style "
        "prompts whose queries are answered independently, many per pass",
    )
    target_params: int | None = Field(
        None,
        ge=1000,
        description="choose d_model (ignoring the one given) to land within 5% of this many "
        "parameters; the chosen width is printed and recorded in run.json; "
        + limit_note(MODEL_LIMITS["target_params"]),
    )

    @field_validator(*MODEL_LIMITS)
    @classmethod
    def _within_size_limits(cls, value: int | None, info: ValidationInfo) -> int | None:
        return None if value is None else within_size_limit(value, MODEL_LIMITS[info.field_name])

    @field_validator("layers", mode="before")
    @classmethod
    def _split_layer_string(cls, layers: Any) -> Any:
        """A comma-separated string as a list; no more blocks than ``n_layers`` may have."""
        layers = split_specs(layers) if isinstance(layers, str) else layers
        if isinstance(layers, list):
            within_size_limit(len(layers), MODEL_LIMITS["n_layers"])
        return layers

    @field_validator("layers")
    @classmethod
    def _some_layers(cls, layers: list[Spec] | None) -> list[Spec] | None:
        if layers is not None and not layers:
            raise ValueError("layers must name at least one mixer")
        return layers

    @model_validator(mode="after")
    def _check_stack(self) -> ModelConfig:
        if self.layers is not None:
            if "n_layers" in self.model_fields_set and self.n_layers != len(self.layers):
                raise ValueError(
                    f"n_layers ({self.n_layers}) differs from the {len(self.layers)} mixers "
                    "in layers; give one of them"
                )
            object.__setattr__(self, "n_layers", len(self.layers))
        if self.tokens == "set":
            refused = sorted(
                {
                    str(spec)
                    for spec in self.layer_specs
                    if not spec.cls.supports_private_tokens(spec.options)
                }
            )
            if refused:
                raise ValueError(
                    f"tokens=set needs mixers that can hide query tokens from later ones and "
                    f"that have no positions: softmax(positions=none); got {', '.join(refused)}"
                )
        multiple = self.width_multiple()
        if self.target_params is None and self.d_model % multiple:
            raise ValueError(
                f"d_model ({self.d_model}) must be a multiple of {multiple} for these mixers "
                f"with n_heads={self.n_heads}"
            )
        return self

    @property
    def layer_specs(self) -> list[Spec]:
        """The mixer spec of every block, bottom to top."""
        return list(self.layers) if self.layers is not None else [self.mixer] * self.n_layers

    def width_multiple(self) -> int:
        """What d_model must be a multiple of: heads must split it evenly (twice, for RoPE)."""
        multiple = 1
        for cls, options in self.layer_specs:
            multiple = math.lcm(multiple, cls.width_multiple(self.n_heads, options))
        return multiple

    def tuned_learning_rate(self) -> float:
        """What ``train.lr: auto`` trains with: the smallest of the blocks' mixers' rates chosen
        by a sweep (``Mixer.tuned_learning_rate``)."""
        return min(cls.tuned_learning_rate(options) for cls, options in self.layer_specs)

    def describe(self) -> str:
        """``4 × softmax`` or ``mamba, mamba, softmax, mamba``: the stack in a few words."""
        specs = [str(spec) for spec in self.layer_specs]
        return f"{len(specs)} × {specs[0]}" if len(set(specs)) == 1 else ", ".join(specs)
