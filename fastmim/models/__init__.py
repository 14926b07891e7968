"""Models: importing this package registers every model component in ``fastmim.registry.MODELS``."""
from . import algorithms, backbones, heads, losses, necks, targets, utils  # noqa: F401
