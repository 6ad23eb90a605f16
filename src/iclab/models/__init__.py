"""Sequence models: codecs, backbones and mixers."""

from iclab.models.model import InContextModel, build_model

__all__ = ["InContextModel", "build_model"]
