"""FastMIM: masked image modeling pre-training at low resolution with HOG targets.

Importing the package installs the safe checkpoint I/O (``fastmim.engine.checkpoint``); models,
datasets and hooks register themselves lazily through the registries' ``locations``.
"""
from . import engine  # noqa: F401
from .version import __version__

__all__ = ['__version__']
