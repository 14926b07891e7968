"""Helpers shared by the datasets: pipeline building, file-name filtering, local paths, the
labels of a dataset."""
import copy
from collections import Counter
from typing import Callable, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

from mmengine.dataset import BaseDataset

from fastmim.registry import TRANSFORMS

from .transforms.loading import (unreadable_image_count, unreadable_images_raised,
                                 why_unreadable)

# torchvision's ImageFolder list, which holds mmpretrain's: a folder those read is read whole.
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')

SHOWN = 3  # examples named in a message about many files or lines


class DatasetListingWarning(UserWarning):
    """Something in an image folder or list file that is used or left out on purpose, but may
    not be what the user meant (its own category, so that a deliberate case can be filtered)."""


def examples(items: Sequence[str], shown: int = SHOWN) -> str:
    """``a, b, c and 4 more``: enough to find the files, in one line however many there are."""
    more = f' and {len(items) - shown} more' if len(items) > shown else ''
    return ', '.join(str(item) for item in items[:shown]) + more


def annotation_reader(dataset) -> Optional[Callable[[int], dict]]:
    """``index -> annotation`` of ``dataset`` as loaded, or ``None`` for a dataset without
    ``get_data_info``. An mmengine ``BaseDataset`` is read through
    ``BaseDataset.get_data_info``: an override may add the decoded image (``EmbeddedPhotos``,
    ``FashionMNIST``), which checks of labels and file names do not need. Other datasets
    (``ConcatDataset``) are read through their own."""
    if isinstance(dataset, BaseDataset):
        return lambda index: BaseDataset.get_data_info(dataset, index)
    return getattr(dataset, 'get_data_info', None)


def dataset_labels(dataset) -> Optional[Counter]:
    """The number of samples of each label of ``dataset``, read from its annotations
    (:func:`annotation_reader`), or ``None`` when it has none to read (a sample without
    ``gt_label``, a dataset without ``get_data_info``), so that the classes of two splits can
    be compared before a run. About 4 s for ImageNet's 1.28 M train images.
    """
    annotation = annotation_reader(dataset)
    if annotation is None:
        return None
    counts = Counter()
    for index in range(len(dataset)):
        label = annotation(index).get('gt_label')
        if label is None:
            return None
        counts[int(label)] += 1
    return counts


class LabelCoverage(NamedTuple):
    """The labels of a dataset that a reference dataset has no sample of."""
    missing: List[int]  # sorted
    samples_missing: int  # samples of the dataset with those labels
    samples: int  # all samples of the dataset


def label_coverage(reference_dataset, dataset) -> Optional[LabelCoverage]:
    """Which labels of ``dataset`` (a val or test split) ``reference_dataset`` (the train split,
    a kNN bank) has no sample of: no model trained on, or voting with, the reference can give
    those samples their class. ``None`` when either has no labels to read."""
    reference, labels = dataset_labels(reference_dataset), dataset_labels(dataset)
    if reference is None or labels is None:
        return None
    missing = sorted(set(labels) - set(reference))
    return LabelCoverage(missing, sum(labels[label] for label in missing), sum(labels.values()))


def describe_labels(labels: Sequence[int], dataset) -> str:
    """``"8 'name', 9 'name', ..."``: the first five labels, with their class names when the
    dataset's metainfo names its classes."""
    classes = (getattr(dataset, 'metainfo', None) or {}).get('classes') or ()
    named = [f'{label} {classes[label]!r}' if label < len(classes) else str(label)
             for label in labels[:5]]
    return ', '.join(named) + (', ...' if len(labels) > 5 else '')


def check_after_each(pipeline, step_name: str, check: Callable) -> None:
    """Insert ``check`` after every step of a built mmcv ``Compose`` ``pipeline`` whose class
    is ``step_name``, so that what that step loaded is checked before anything transforms it
    (the downstream datasets' checks of label maps and image sizes)."""
    steps = pipeline.transforms
    loads = [index for index, step in enumerate(steps) if type(step).__name__ == step_name]
    for index in reversed(loads):
        steps.insert(index + 1, check)


def build_pipeline(pipeline: Sequence[Union[dict, Callable]]) -> List[Callable]:
    """Build the transforms of a dataset pipeline in fastmim's scope.

    mmengine's ``Compose`` builds config dicts with its root registry, which finds fastmim's
    transforms only while the Runner's default scope is ``'fastmim'``. Building them here makes a
    dataset work the same from a config, from a test, or inside an mmdet/mmseg-scoped run: names
    resolve in fastmim first, then in mmengine/mmcv (``RandomFlip``), and ``'mmdet.X'`` still
    reaches another library explicitly.
    """
    transforms = []
    for transform in pipeline:
        if isinstance(transform, dict):
            cfg = copy.deepcopy(transform)
            cfg.setdefault('_scope_', 'fastmim')
            transform = TRANSFORMS.build(cfg)
        if not callable(transform):
            raise TypeError(f'pipeline entries must be config dicts or callables, '
                            f'got {type(transform).__name__}: {transform!r}')
        transforms.append(transform)
    return transforms


def image_prefix(data_prefix: Union[str, dict]) -> dict:
    """``data_prefix`` as ``BaseDataset`` takes it, from a folder name or mmpretrain's
    ``dict(img_path='train')``, so configs copied from mmpretrain work with either dataset."""
    if isinstance(data_prefix, str):
        data_prefix = dict(img_path=data_prefix)
    if not isinstance(data_prefix, dict) or set(data_prefix) != {'img_path'}:
        raise ValueError(f"data_prefix must be a folder name or dict(img_path=...), "
                         f"got {data_prefix!r}")
    return data_prefix


def normalize_extensions(extensions: Iterable[str]) -> Tuple[str, ...]:
    """Lower-case extensions with a leading dot, so that ``'JPEG'`` and ``'.jpeg'`` both match."""
    if isinstance(extensions, str):
        extensions = (extensions, )
    normalized = tuple('.' + ext.lower().lstrip('.') for ext in extensions)
    if not normalized:
        raise ValueError('extensions must name at least one image file extension')
    return normalized


def has_extension(file_name: str, extensions: Tuple[str, ...]) -> bool:
    """Case-insensitive extension test (ImageNet's files end in ``.JPEG``)."""
    return file_name.lower().endswith(extensions)


def is_local(path: str, backend_args: Optional[dict]) -> bool:
    """Whether ``path`` is read from the local file system (checks of files skip the others)."""
    backend = (backend_args or {}).get('backend', 'local')
    return backend == 'local' and '://' not in path


class NamedRefetchFailure:
    """Mixin for datasets of image files: name the dataset, and the file where there is one,
    when a sample cannot be loaded.

    mmengine's ``BaseDataset`` draws another index when the pipeline rejects a sample (an
    unreadable file, see ``LoadImageRGB``) and after ``max_refetch`` such draws in a row raises a
    bare ``Exception('Cannot find valid image after 1000! ...')``; with ``test_mode=True`` (an
    evaluation set, where another image in its place would be counted twice) it draws none and
    raises a bare ``Exception('Test time pipline should not get `None` data_sample')``. No
    caller can tell these from a bug, so ``tools/train.py`` would show a traceback, and neither says
    which file or what is wrong. This raises a ``ValueError`` saying so instead. Put it first in
    the bases.

    A dataset whose every file is unreadable (a folder of the wrong format, a copy that failed)
    stops as soon as each of its samples has been skipped once in the process, naming a few of
    them, not after mmengine's 1,001 draws.
    """

    def prepare_data(self, idx):
        data = super().prepare_data(idx)
        if data is None and not self.test_mode:
            self._note_unreadable_sample(int(idx))
        return data

    def _note_unreadable_sample(self, idx: int) -> None:
        """Record sample ``idx`` as unreadable when its file was (the pipeline may reject a
        sample for another reason, which proves nothing of the file), and stop once all are."""
        path = self.get_data_info(idx).get('img_path')
        if path is None or why_unreadable(path) is None:
            return
        unreadable = self.__dict__.setdefault('_unreadable_samples', {})
        unreadable[idx] = path
        if len(unreadable) >= len(self):
            raise ValueError(self._all_unreadable_failure(list(unreadable.values())))

    def __getitem__(self, idx):
        try:
            if not self.test_mode:
                return super().__getitem__(idx)
            # An unreadable file ends in an error naming it, not in a warning that it was
            # skipped first.
            with unreadable_images_raised():
                return super().__getitem__(idx)
        except Exception as error:  # mmengine's bare Exception, told apart by type and text
            if type(error) is not Exception:
                raise
            if str(error).startswith('Cannot find valid'):
                raise ValueError(self._refetch_failure(int(idx))) from None
            if str(error).startswith('Test time pipline'):
                raise ValueError(self._test_mode_failure(int(idx))) from None
            raise

    def _source(self) -> str:
        return self.ann_file or self.data_prefix.get('img_path') or self.data_root

    def _test_mode_failure(self, idx: int) -> str:
        path = self.get_data_info(idx).get('img_path')
        reason = why_unreadable(path) or 'the pipeline rejected it (returned None)'
        return (f'{type(self).__name__} ({self._source()!r}, test_mode=True): cannot load sample '
                f'{idx}, {path!r}: {reason}; an evaluation set evaluates no other image in '
                f'its place (that one would count twice): replace or remove the file (a '
                f'training run stopped by it goes on from its last checkpoint with --resume)')

    def _all_unreadable_failure(self, paths: List[str]) -> str:
        return (f'{type(self).__name__} ({self._source()!r}): no readable image: all '
                f'{len(paths)} of its files were skipped as unreadable ({examples(paths)}; '
                f'the reasons are in the warnings above); remove or replace broken files')

    def _refetch_failure(self, idx: int) -> str:
        return (f'{type(self).__name__} ({self._source()!r}): no readable image in '
                f'{self.max_refetch + 1} tries from index {idx}: the pipeline rejected every '
                f'sample drawn ({unreadable_image_count()} unreadable files skipped so far in '
                f'this process, named in the warnings above); remove or replace broken files')
