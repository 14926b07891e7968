"""Images in folders: the ImageNet layout, or one flat folder of unlabelled images."""
import os
import os.path as osp
from typing import Callable, List, Sequence, Union

from mmengine.dataset import BaseDataset

from fastmim.registry import DATASETS

from .sample_seeds import SeededSamples
from .utils import (IMG_EXTENSIONS, NamedRefetchFailure, build_pipeline, has_extension,
                    image_prefix, normalize_extensions)


def raise_error(error: OSError):
    """``os.walk``'s ``onerror``: raise, rather than leave the folder out."""
    raise error


def find_images(folder: str, extensions: Sequence[str]) -> List[str]:
    """All image files under ``folder``, recursively, in sorted (reproducible) order.

    Symlinked folders are followed (a class stored on another disk), but one that is a folder
    already walked raises: ``os.walk`` follows a link back to a parent until the path is too
    long, which listed every image below it about 40 times over, without a word. A folder that
    cannot be listed raises its ``OSError`` (naming it), which ``os.walk`` would skip.
    """
    found, walked = [], {}
    for root, dirs, files in os.walk(folder, onerror=raise_error, followlinks=True):
        real = osp.realpath(root)
        if real in walked:
            raise ValueError(f'ImageFolder: {root!r} is {walked[real]!r} again (a symlink loop, '
                             f'or two links to one folder): its images would be listed twice; '
                             f'remove the link')
        walked[real] = root
        dirs.sort()
        found.extend(osp.join(root, name) for name in sorted(files)
                     if has_extension(name, extensions))
    return found


@DATASETS.register_module()
class ImageFolder(NamedRefetchFailure, SeededSamples, BaseDataset):
    """Images under ``<data_root>/<data_prefix>``, labelled by class folder or unlabelled.

    With ``with_label=True`` the layout is ImageNet's, ``<folder>/<class>/**/<image>``: the class
    index is the position of the folder name in sorted order (torchvision's convention, so
    ``n01440764`` is 0 for ImageNet) and ``metainfo['classes']`` lists the names. Files directly
    in ``<folder>`` are ignored then. With ``with_label=False`` every image under the folder is
    used, recursively, so both a flat folder and the ImageNet layout work.

    Problems with the folder (missing, no images, an empty class, a class linked to a folder
    that is gone, a symlink loop) raise at construction, naming the path, so they surface before
    training starts. Unreadable files are found later, when decoded, and skipped (see
    ``LoadImageRGB``).

    Args:
        data_root: dataset root directory.
        data_prefix: sub-folder of ``data_root`` holding the images (``'train'``), or
            ``dict(img_path='train')`` as in mmpretrain configs; ``''`` uses ``data_root``.
        with_label: read class labels from the sub-folder names; samples get ``gt_label``.
        pipeline: transforms (config dicts or callables).
        extensions: image file extensions, matched case-insensitively.
        **kwargs: other ``BaseDataset`` arguments (``indices``, ``serialize_data``,
            ``lazy_init``, ``max_refetch``, ``metainfo``, ``test_mode``).
    """

    def __init__(self,
                 data_root: str,
                 data_prefix: Union[str, dict] = 'train',
                 with_label: bool = False,
                 pipeline: Sequence[Union[dict, Callable]] = (),
                 extensions: Sequence[str] = IMG_EXTENSIONS,
                 **kwargs):
        self.with_label = with_label
        self.extensions = normalize_extensions(extensions)
        super().__init__(
            data_root=data_root,
            data_prefix=image_prefix(data_prefix),
            pipeline=build_pipeline(pipeline),
            **kwargs)

    @property
    def folder(self) -> str:
        return self.data_prefix['img_path']

    def load_data_list(self) -> List[dict]:
        if not osp.isdir(self.folder):
            raise FileNotFoundError(f'{type(self).__name__}: image folder {self.folder!r} does '
                                    f'not exist (data_root={self.data_root!r})')
        if self.with_label:
            return self._load_labelled()
        paths = find_images(self.folder, self.extensions)
        if not paths:
            raise ValueError(f'{type(self).__name__}: no images with extensions '
                             f'{self.extensions} under {self.folder!r}')
        return [dict(img_path=path) for path in paths]

    def _class_names(self) -> List[str]:
        """The sub-folders, sorted; a link to a folder that is gone (a disk not mounted) raises,
        since it is no folder to ``os.scandir``: the class was dropped without a word and every
        later class got the label of the one before it."""
        entries = list(os.scandir(self.folder))
        broken = [f'{entry.path!r} -> {os.readlink(entry.path)!r}' for entry in entries
                  if entry.is_symlink() and not osp.exists(entry.path)]
        if broken:
            raise FileNotFoundError(f'{type(self).__name__}: links in {self.folder!r} whose '
                                    f'target does not exist (a disk not mounted?); their '
                                    f'classes would be dropped and the later ones renumbered: '
                                    f'{broken}')
        return sorted(entry.name for entry in entries if entry.is_dir(follow_symlinks=True))

    def _load_labelled(self) -> List[dict]:
        classes = self._class_names()
        if not classes:
            raise ValueError(f'{type(self).__name__}: with_label=True needs one sub-folder per '
                             f'class in {self.folder!r}, found none (use with_label=False for '
                             f'a flat folder of images)')
        data_list, empty = [], []
        for label, name in enumerate(classes):
            paths = find_images(osp.join(self.folder, name), self.extensions)
            if not paths:
                empty.append(osp.join(self.folder, name))
            data_list.extend(dict(img_path=path, gt_label=label) for path in paths)
        if empty:
            raise ValueError(f'{type(self).__name__}: class folders without images with '
                             f'extensions {self.extensions}: {empty}')
        self._metainfo['classes'] = tuple(classes)
        return data_list
