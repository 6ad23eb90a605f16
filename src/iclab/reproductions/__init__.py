"""One-command reproductions of the literature's headline claims (``iclab reproduce NAME``)."""

from iclab.reproductions import (  # noqa: F401  (import registers each reproduction)
    architectures,
    boolean,
    bursty,
    cache_state,
    dpt,
    emergence,
    garg,
    probing,
    task_diversity,
    transience,
    von_oswald,
)
from iclab.reproductions.base import (
    REPRODUCTIONS,
    Reproduction,
    Verdict,
    register_reproduction,
    reproduce,
)

__all__ = ["REPRODUCTIONS", "Reproduction", "Verdict", "register_reproduction", "reproduce"]
