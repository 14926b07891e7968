"""Numbers and names shared across the package and its tools (a leaf module, importing
nothing)."""

# ImageNet channel statistics on the 0-255 scale, RGB order: the normalisation every published
# FastMIM recipe (pre-training, fine-tuning, HOG target) applies.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

# The config file suffixes mmengine's Config.fromfile reads.
CONFIG_SUFFIXES = ('.py', '.json', '.yaml', '.yml')
