from .fastmim import FastMIM
from .image_classifier import ImageClassifier

__all__ = ['FastMIM', 'ImageClassifier']
