"""Reference learning algorithms (the yardsticks for trained models), registered by name."""

from iclab.algorithms import (  # noqa: F401  (each module registers its learners)
    bandits,
    boolean,
    classification,
    linear,
    nonlinear,
    regression,
    tokens,
)
from iclab.algorithms.base import (
    ALGORITHM_SPEC,
    ALGORITHMS,
    Algorithm,
    AlgorithmOptions,
    build_algorithm,
    register_algorithm,
)

__all__ = [
    "ALGORITHMS",
    "ALGORITHM_SPEC",
    "Algorithm",
    "AlgorithmOptions",
    "build_algorithm",
    "register_algorithm",
]
