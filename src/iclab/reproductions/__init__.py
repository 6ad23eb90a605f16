"""One-command reproductions of the literature's headline claims (``iclab reproduce NAME``)."""

from iclab.reproductions import garg  # noqa: F401  (import registers each reproduction)
from iclab.reproductions.base import (
    REPRODUCTIONS,
    Reproduction,
    Verdict,
    register_reproduction,
    reproduce,
)

__all__ = ["REPRODUCTIONS", "Reproduction", "Verdict", "register_reproduction", "reproduce"]
