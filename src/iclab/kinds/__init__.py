"""Episode kinds: regression, classification, tokens, decisions (see ``iclab.kinds.base``)."""

from iclab.errors import ConfigError
from iclab.kinds.base import Codec, Kind, Metric, SetTokens, TaskIO
from iclab.kinds.classification import Classification
from iclab.kinds.decisions import Decisions
from iclab.kinds.regression import Regression
from iclab.kinds.tokens import Tokens

KINDS: dict[str, Kind] = {
    kind.name: kind for kind in (Regression(), Classification(), Tokens(), Decisions())
}


def kind_of(name: str) -> Kind:
    """The kind called ``name``; a clear error for any other."""
    if name not in KINDS:
        raise ConfigError(f"unknown episode kind {name!r}; kinds: {', '.join(KINDS)}")
    return KINDS[name]


__all__ = ["KINDS", "Codec", "Kind", "Metric", "SetTokens", "TaskIO", "kind_of"]
