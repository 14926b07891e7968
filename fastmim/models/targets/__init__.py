from .hog import HOGGenerator
from .pixel import PixelTarget

__all__ = ['HOGGenerator', 'PixelTarget']
