"""Numbers and names shared across the package and its tools (a leaf module, importing
nothing)."""

# ImageNet channel statistics on the 0-255 scale, RGB order: the normalisation every published
# FastMIM recipe (pre-training, fine-tuning, HOG target) applies.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

# mmengine's data preprocessor with those statistics (inputs are already RGB): the default of
# the pre-training and kNN models. Copy it before changing it.
IMAGENET_PREPROCESSOR = dict(
    type='ImgDataPreprocessor',
    mean=list(IMAGENET_MEAN),
    std=list(IMAGENET_STD),
    bgr_to_rgb=False)
