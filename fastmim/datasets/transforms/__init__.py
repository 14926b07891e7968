"""Data transforms, registered in ``fastmim.registry.TRANSFORMS``.

Flips come from mmcv (``dict(type='RandomFlip', prob=0.5)``); importing mmcv's transforms here
(through ``BaseTransform``) registers them, so pipelines can name them directly. A pipeline that
leaves JPEG decoding to the device (``RandomResizedCrop(decode='device')``) flips with
``RandomHorizontalFlip``, which works before the image is decoded.
"""
from .augment import RandAugment, ResizeShorterCenterCrop
from .formatting import PackInputs
from .loading import (LazyImage, LoadImageRGB, UnreadableImageWarning, image_file_problem,
                      read_rgb_image, unreadable_image_count)
from .processing import RandomHorizontalFlip, RandomResizedCrop

__all__ = [
    'LazyImage', 'LoadImageRGB', 'PackInputs', 'RandAugment', 'RandomHorizontalFlip',
    'RandomResizedCrop', 'ResizeShorterCenterCrop', 'UnreadableImageWarning', 'image_file_problem',
    'read_rgb_image', 'unreadable_image_count'
]
