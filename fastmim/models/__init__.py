"""Models: importing this package registers every model component in ``fastmim.registry.MODELS``
and makes timm's pretrained weights (``TimmBackbone(pretrained=True)``) load weights-only."""
from fastmim.engine.checkpoint import install_timm_pretrained_loading

from . import (algorithms, backbones, data_preprocessors, heads, losses, necks,  # noqa: F401
               targets, utils)

install_timm_pretrained_loading()
