"""Evaluation of in-context learners: error curves over prefix lengths."""

from iclab.evaluation.curves import CurvePoint, evaluate, read_curves_csv, write_curves_csv

__all__ = ["CurvePoint", "evaluate", "read_curves_csv", "write_curves_csv"]
