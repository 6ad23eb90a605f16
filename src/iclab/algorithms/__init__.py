"""Reference learning algorithms (the yardsticks for trained models), registered by name."""

from iclab.algorithms import regression  # noqa: F401  (registers the regression learners)
from iclab.algorithms.base import ALGORITHMS, Algorithm, build_algorithm, register_algorithm

__all__ = ["ALGORITHMS", "Algorithm", "build_algorithm", "register_algorithm"]
