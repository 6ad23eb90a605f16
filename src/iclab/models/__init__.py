"""Sequence models: backbones over sequence mixers, with the codec of the task's kind."""

from iclab.models.config import ModelConfig
from iclab.models.model import InContextModel, PromptTooLongError, build_model

__all__ = ["InContextModel", "ModelConfig", "PromptTooLongError", "build_model"]
