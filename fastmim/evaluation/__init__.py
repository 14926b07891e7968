"""Evaluation: metrics (``fastmim.registry.METRICS``) and the kNN evaluator (a model in
``MODELS`` and a test loop in ``LOOPS``; those registries import this package on demand)."""
from .knn import KNNClassifier, KNNTestLoop, gather_bank, knn_class_scores
from .metrics import Accuracy

__all__ = ['Accuracy', 'KNNClassifier', 'KNNTestLoop', 'gather_bank', 'knn_class_scores']
