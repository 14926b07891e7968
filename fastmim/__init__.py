"""FastMIM: masked image modeling pre-training at low resolution with HOG targets."""
from .version import __version__

__all__ = ['__version__']
