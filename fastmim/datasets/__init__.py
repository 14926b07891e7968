"""Pre-training data: image datasets (registered in ``fastmim.registry.DATASETS``) and transforms.

See docs/data.md for the layouts each dataset reads and for the embedded photos.
"""
from . import transforms  # noqa: F401  (registers the transforms)
from .embedded import EmbeddedImageNetPhotos, EmbeddedPhotos, find_embedded_photos
from .fashion_mnist import FashionMNIST, find_fashion_mnist
from .image_folder import ImageFolder
from .image_list import ImageList

__all__ = [
    'EmbeddedImageNetPhotos', 'EmbeddedPhotos', 'FashionMNIST', 'ImageFolder', 'ImageList',
    'find_embedded_photos', 'find_fashion_mnist'
]
