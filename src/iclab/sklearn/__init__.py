"""In-context learners as scikit-learn estimators, and trained models as single files.

``InContextRegressor`` and ``InContextClassifier`` work after ``pip install`` with the models
bundled with iclab (trained by ``iclab train tabular_regression`` / ``tabular_classification``,
written by ``iclab export``), or with any regression/classification run of one's own.
"""

from iclab.sklearn.estimators import InContextClassifier, InContextRegressor
from iclab.sklearn.model_file import TrainedModel, bundled_names, export_model, load_trained

__all__ = [
    "InContextClassifier",
    "InContextRegressor",
    "TrainedModel",
    "bundled_names",
    "export_model",
    "load_trained",
]
