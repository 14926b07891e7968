"""Models: importing this package registers every model component in ``fastmim.registry.MODELS``."""
from . import (algorithms, backbones, data_preprocessors, heads, losses, necks,  # noqa: F401
               targets, utils)
