"""Pre-training data: image datasets (registered in ``fastmim.registry.DATASETS``) and transforms.

See docs/data.md for the layouts each dataset reads and for the embedded photos.
"""
from . import transforms  # noqa: F401  (registers the transforms)
from .embedded import EmbeddedImageNetPhotos, EmbeddedPhotos, find_embedded_photos
from .fashion_mnist import FashionMNIST, fetch_fashion_mnist, find_fashion_mnist
from .image_folder import ImageFolder
from .image_list import ImageList
from .sample_seeds import SeededIndex, SeededSamples
from .samplers import ResumableInfiniteSampler, ResumableSampler

__all__ = [
    'EmbeddedImageNetPhotos', 'EmbeddedPhotos', 'FashionMNIST', 'ImageFolder', 'ImageList',
    'ResumableInfiniteSampler', 'ResumableSampler', 'SeededIndex', 'SeededSamples',
    'find_embedded_photos', 'fetch_fashion_mnist', 'find_fashion_mnist'
]
