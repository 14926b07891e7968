"""Models: importing this package registers every model component in ``fastmim.registry.MODELS``."""
from . import (algorithms, backbones, heads, jpeg_decoding, losses, necks,  # noqa: F401
               targets, utils)
