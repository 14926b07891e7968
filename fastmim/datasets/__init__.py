"""Pre-training data: image datasets (registered in ``fastmim.registry.DATASETS``) and transforms.

See docs/data.md for the layouts each dataset reads and for the embedded photos.
"""
from . import transforms  # noqa: F401  (registers the transforms)
from .embedded import EmbeddedPhotos, find_embedded_photos
from .image_folder import ImageFolder
from .image_list import ImageList

__all__ = ['EmbeddedPhotos', 'ImageFolder', 'ImageList', 'find_embedded_photos']
