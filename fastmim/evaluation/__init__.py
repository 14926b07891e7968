"""Evaluation metrics, registered in ``fastmim.registry.METRICS``."""
from .metrics import Accuracy

__all__ = ['Accuracy']
