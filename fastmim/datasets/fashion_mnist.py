"""Fashion-MNIST read from its idx files: a real, labelled image set that installs from Debian.

70,000 grayscale 28x28 product photos in 10 classes (60,000 train / 10,000 test), shipped by the
Debian package ``dataset-fashion-mnist`` as the four original ``*-ubyte.gz`` files in
``/usr/share/datasets/fashion-mnist``. Without root the same files come from
``apt-get download dataset-fashion-mnist`` and ``dpkg -x <deb> <dir>``: :func:`fetch_fashion_mnist`
does that into ``~/.cache/fastmim/data`` (the experiment runners and the test suite call it).

Images leave the dataset as RGB uint8 ``(28, 28, 3)`` arrays (the gray value replicated), like
every fastmim image, so the usual pipelines and the ImageNet-normalising data preprocessors
apply; the pipeline resizes them (``ResizeShorterCenterCrop(crop_size=32, crop_pct=1.0)`` gives
the 32 px that a patch-4 ViT and 4-px HOG cells divide).
"""
import functools
import glob
import gzip
import os
import os.path as osp
import subprocess
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
from mmengine.dataset import BaseDataset

from fastmim.registry import DATASETS

from .sample_seeds import SeededSamples
from .utils import build_pipeline

DEFAULT_DATA_ROOT = '/usr/share/datasets/fashion-mnist'
# Where fetch_fashion_mnist unpacks the .deb when the package is not installed: outside any clone,
# so every checkout (and CI run) on a machine shares one 31 MB download.
CACHE_DIR = '~/.cache/fastmim/data'
CACHE_DATA_ROOT = osp.join(CACHE_DIR, 'dataset-fashion-mnist' + DEFAULT_DATA_ROOT)
SPLIT_FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker',
           'Bag', 'Ankle boot')
INSTALL_HINT = ('install the Debian package (apt-get install dataset-fashion-mnist puts the files '
                f'in {DEFAULT_DATA_ROOT}), or without root: cd {CACHE_DIR} && apt-get download '
                'dataset-fashion-mnist && dpkg -x dataset-fashion-mnist_*.deb '
                'dataset-fashion-mnist (fastmim.datasets.fetch_fashion_mnist() does this)')
# idx type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); values big-endian.
IDX_DTYPES = {0x08: '>u1', 0x09: '>i1', 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}


def find_fashion_mnist() -> Optional[str]:
    """The folder holding the four files: the installed package's, else the unpacked cache's;
    ``None`` when neither has them."""
    for folder in (DEFAULT_DATA_ROOT, osp.expanduser(CACHE_DATA_ROOT)):
        if _complete(folder):
            return folder
    return None


def fetch_fashion_mnist(cache_dir: str = CACHE_DIR) -> str:
    """The folder of the four idx files, fetched first when neither the installed package nor
    the cache has them: ``apt-get download dataset-fashion-mnist`` (no root needed) and
    ``dpkg -x`` into ``cache_dir``.

    Raises ``RuntimeError`` naming the command that failed, its folder and its stderr (the usual
    cause, an unknown package, is fixed by ``apt-get update``), so a test or a runner that needs
    the data fails with the reason rather than skipping or exiting silently.
    """
    cache = osp.expanduser(cache_dir)
    unpacked = osp.join(cache, 'dataset-fashion-mnist')
    for folder in (DEFAULT_DATA_ROOT, unpacked + DEFAULT_DATA_ROOT):
        if _complete(folder):
            return folder
    os.makedirs(cache, exist_ok=True)
    debs = sorted(glob.glob(osp.join(cache, 'dataset-fashion-mnist_*.deb')))
    if not debs:
        _run(['apt-get', 'download', 'dataset-fashion-mnist'], cache,
             hint='run apt-get update first if the package is unknown')
        debs = sorted(glob.glob(osp.join(cache, 'dataset-fashion-mnist_*.deb')))
        if not debs:
            raise RuntimeError(f'apt-get download dataset-fashion-mnist left no .deb in {cache}')
    _run(['dpkg', '-x', debs[-1], unpacked], cache,
         hint=f'delete {debs[-1]} if it is truncated and retry')
    found = _complete(unpacked + DEFAULT_DATA_ROOT)
    if not found:
        raise RuntimeError(f'{debs[-1]} unpacked into {unpacked} but holds no '
                           f'{DEFAULT_DATA_ROOT}/*-ubyte.gz files')
    return found


def _complete(folder: str) -> Optional[str]:
    """``folder`` if it holds the four idx files, else ``None``."""
    if all(osp.isfile(osp.join(folder, name)) for files in SPLIT_FILES.values()
           for name in files):
        return folder
    return None


def _run(command: List[str], cwd: str, hint: str) -> None:
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as error:  # no apt-get / dpkg: not a Debian-based machine
        raise RuntimeError(f'fetching Fashion-MNIST needs {command[0]} (Debian or Ubuntu): '
                           f'{error}; or put the four idx files in {DEFAULT_DATA_ROOT}') from error
    if result.returncode:
        raise RuntimeError(f'{" ".join(command)} failed in {cwd} (exit code {result.returncode}; '
                           f'{hint}):\n{result.stderr.strip()}')


def read_idx(path: str) -> np.ndarray:
    """An idx file (gzip-compressed when the name ends in ``.gz``) as a numpy array.

    Layout: two zero bytes, a type code, the number of dimensions ``n``, ``n`` big-endian uint32
    sizes, then the values in row-major order. Raises ``ValueError`` naming the file when the
    header is not idx or the data is shorter or longer than the header says.
    """
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rb') as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f'{path} is not an idx file: its first bytes are {raw[:4].hex()} '
                         f'(expected 00 00, a type code in {sorted(IDX_DTYPES)}, a rank)')
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(size) for size in np.frombuffer(raw[4:header], dtype='>u4'))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f'{path} is truncated or corrupt: its header says shape {shape} '
                         f'({expected} bytes in all) but the file holds {len(raw)} bytes')
    values = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder('='))  # native byte order, a writable copy


@functools.lru_cache(maxsize=4)
def load_split(data_root: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(images (N, 28, 28) uint8, labels (N,) int64)`` of a split, read once per process; the
    arrays are read-only because every dataset of the process shares them."""
    if split not in SPLIT_FILES:
        raise ValueError(f'FashionMNIST: split must be one of {sorted(SPLIT_FILES)}, got {split!r}')
    paths = [osp.join(data_root, name) for name in SPLIT_FILES[split]]
    missing = [osp.basename(path) for path in paths if not osp.isfile(path)]
    if missing:
        raise FileNotFoundError(f'FashionMNIST: {missing} not found in {data_root}; '
                                f'{INSTALL_HINT}')
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f'FashionMNIST: {paths[0]} must hold uint8 images (N, H, W), got '
                         f'{images.dtype} {images.shape}')
    if labels.shape != (len(images), ):
        raise ValueError(f'FashionMNIST: {paths[1]} holds labels of shape {labels.shape} for '
                         f'{len(images)} images in {paths[0]}')
    labels = labels.astype(np.int64)
    for array in (images, labels):
        array.setflags(write=False)
    return images, labels


def balanced_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a class-balanced subset: ``round(fraction * N / K)`` images of each of
    the ``K`` classes, drawn at random with ``seed``.

    Each class is shuffled once per seed and its first images are taken, so for one seed the
    subset of a smaller fraction lies inside that of a larger one (1% inside 10%).
    """
    classes = np.unique(labels)
    per_class = int(round(fraction * len(labels) / len(classes)))
    counts = {int(c): int((labels == c).sum()) for c in classes}
    if per_class < 1 or per_class > min(counts.values()):
        raise ValueError(f'label_fraction {fraction} asks for {per_class} images per class, but '
                         f'the classes hold {counts} images')
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]
    return np.sort(np.concatenate(chosen))


@DATASETS.register_module()
class FashionMNIST(SeededSamples, BaseDataset):
    """Fashion-MNIST (see module docstring), optionally a class-balanced fraction of it.

    Sample ``i`` holds ``img`` (RGB uint8 ``(28, 28, 3)``), ``gt_label`` (with labels) and
    ``image_index`` (its position in the idx file). ``metainfo['classes']`` names the classes.

    Args:
        data_root: folder holding the four ``*-ubyte.gz`` files; by default the installed
            package's folder, else the unpacked cache's (:func:`find_fashion_mnist`).
        split: ``'train'`` (60,000 images) or ``'test'`` (10,000).
        label_fraction: keep a class-balanced subset of this fraction of the split, in (0, 1]
            (0.01 of train = 60 images per class); 1.0 keeps every image in file order.
        seed: which subset ``label_fraction`` draws (deterministic for a given seed).
        with_label: give samples their ``gt_label``; ``False`` for pre-training without labels.
        pipeline: transforms (config dicts or callables).
        **kwargs: other ``BaseDataset`` arguments (``indices`` keeps the first N samples).
    """

    METAINFO = dict(classes=CLASSES)

    def __init__(self,
                 data_root: Optional[str] = None,
                 split: str = 'train',
                 label_fraction: float = 1.0,
                 seed: int = 0,
                 with_label: bool = True,
                 pipeline: Sequence[Union[dict, Callable]] = (),
                 **kwargs):
        if split not in SPLIT_FILES:
            raise ValueError(f'FashionMNIST: split must be one of {sorted(SPLIT_FILES)}, '
                             f'got {split!r}')
        if not 0 < label_fraction <= 1:
            raise ValueError(f'FashionMNIST: label_fraction must be in (0, 1], '
                             f'got {label_fraction!r}')
        self.split = split
        self.label_fraction = label_fraction
        self.seed = seed
        self.with_label = with_label
        if data_root is None:
            data_root = find_fashion_mnist()
            if data_root is None:
                raise FileNotFoundError(
                    f'FashionMNIST: the files are neither in {DEFAULT_DATA_ROOT} nor in '
                    f'{osp.expanduser(CACHE_DATA_ROOT)}; {INSTALL_HINT}')
        super().__init__(data_root=osp.expanduser(data_root), pipeline=build_pipeline(pipeline),
                         **kwargs)

    def load_data_list(self) -> List[dict]:
        _, labels = load_split(self.data_root, self.split)
        if self.label_fraction == 1:
            indices = np.arange(len(labels))
        else:
            indices = balanced_subset(labels, self.label_fraction, self.seed)
        if self.with_label:
            return [dict(image_index=int(i), gt_label=int(labels[i])) for i in indices]
        return [dict(image_index=int(i)) for i in indices]

    def get_data_info(self, idx: int) -> dict:
        info = super().get_data_info(idx)
        images, _ = load_split(self.data_root, self.split)
        info['img'] = np.repeat(images[info['image_index']][:, :, None], 3, axis=2)
        info['ori_shape'] = info['img_shape'] = info['img'].shape[:2]
        return info
