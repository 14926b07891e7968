"""Images in folders: the ImageNet layout, or one flat folder of unlabelled images."""
import logging
import os
import os.path as osp
import warnings
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from mmengine.dataset import BaseDataset
from mmengine.logging import print_log
from PIL import Image, ImageFile

from fastmim.file_checks import file_in_place_of, what_to_give_instead
from fastmim.registry import DATASETS

from .sample_seeds import SeededSamples
from .utils import (IMG_EXTENSIONS, DatasetListingWarning, NamedRefetchFailure, build_pipeline,
                    examples, has_extension, image_prefix, normalize_extensions)


def raise_error(error: OSError):
    """``os.walk``'s ``onerror``: raise, rather than leave the folder out."""
    raise error


# Never images, whatever their extension: macOS writes an AppleDouble file '._<name>' (Finder
# data and resource fork, about 4 KB) beside every file it copies to a disk that is not a Mac's,
# and a zip archive made on a Mac holds them in a '__MACOSX' folder. Listed, they would fail
# to decode and be skipped with a warning, every epoch.
APPLEDOUBLE_PREFIX = '._'
MACOS_ARCHIVE_FOLDER = '__MACOSX'


def is_os_metadata(name: str) -> bool:
    """Whether a file or folder name is macOS metadata, not data (see above)."""
    return name.startswith(APPLEDOUBLE_PREFIX) or name == MACOS_ARCHIVE_FOLDER


# Extensions of files PIL decodes that are no image of a dataset: video (PIL reads an MPEG's
# header only), documents (Ghostscript).
NOT_DATASET_IMAGES = ('.mpg', '.mpeg', '.eps', '.ps')

# Split folders beside a 'train' folder (a dataset root, not its train split).
SPLIT_FOLDERS = ('val', 'validation', 'test')


def pil_image_extensions() -> Tuple[str, ...]:
    """Lower-case extensions (with the dot) of the files PIL opens and decodes: ``.jfif``,
    ``.jpe``, ``.gif``, ... (stub formats, which need a handler, and video left out)."""
    extensions = Image.registered_extensions()  # loads PIL's plugins
    return tuple(sorted(
        extension for extension, image_format in extensions.items()
        if image_format in Image.OPEN and extension not in NOT_DATASET_IMAGES
        and not (isinstance(Image.OPEN[image_format][0], type)
                 and issubclass(Image.OPEN[image_format][0], ImageFile.StubImageFile))))


def is_hidden(relative_path: str) -> bool:
    """Whether a path below the dataset folder is in a hidden file or folder (a leading dot).
    A substring test: it runs once per image of the dataset (1.28M for ImageNet)."""
    return (os.sep + '.') in (os.sep + relative_path)


def _other_images_record(extensions: Tuple[str, ...]
                          ) -> Optional[Tuple[Tuple[str, ...], List[str]]]:
    """``others`` for :func:`iter_images` (``(other extensions, [])``): the extensions of the
    other image formats PIL decodes, whose files are named once when a folder is listed with
    the default ``extensions`` (normalised), and the list that gathers them; None for
    extensions given, which leave the others out on purpose."""
    if extensions != normalize_extensions(IMG_EXTENSIONS):
        return None
    return tuple(extension for extension in pil_image_extensions()
                 if extension not in extensions), []


def other_images_hint(others: Sequence[str]) -> str:
    """For an error that found no images: the files of other image formats found."""
    if not others:
        return ''
    return (f' ({len(others)} files of other image formats PIL decodes: '
            f'{examples(others)}; pass extensions= naming theirs to use them)')


def find_images(folder: str, extensions: Sequence[str],
                walked: Optional[Dict[str, str]] = None,
                others: Optional[Tuple[Tuple[str, ...], List[str]]] = None
                ) -> Tuple[List[str], List[str]]:
    """All image files under ``folder`` (:func:`iter_images` listed whole) and the macOS
    metadata left out."""
    metadata: List[str] = []
    return list(iter_images(folder, extensions, walked, others, metadata)), metadata


def iter_images(folder: str, extensions: Sequence[str],
                walked: Optional[Dict[str, str]] = None,
                others: Optional[Tuple[Tuple[str, ...], List[str]]] = None,
                metadata: Optional[List[str]] = None) -> Iterator[str]:
    """The image files under ``folder``, recursively, in sorted (reproducible) order, as the
    walk finds them (a check for any image stops at the first); the macOS metadata left out
    (``._*`` files with an image extension, ``__MACOSX`` folders) goes to ``metadata``.

    Symlinked folders are followed (a class stored on another disk), but one that is a folder
    already walked raises: ``os.walk`` follows a link back to a parent until the path is too
    long, which would list every image below it about 40 times over, without a word. ``walked``
    (real path -> path walked) carries that record from one call to the next, so that the
    class folders of a tree are checked against each other. A folder that cannot be listed
    raises its ``OSError`` (naming it), which ``os.walk`` would skip.

    ``others``: ``(other extensions, list)``: files with those extensions (lower-case, with
    the dot) are appended to the list, from the names already listed (other image formats
    that ``extensions`` leaves out, to name them).
    """
    walked = {} if walked is None else walked
    metadata = [] if metadata is None else metadata
    for root, dirs, files in os.walk(folder, onerror=raise_error, followlinks=True):
        real = osp.realpath(root)
        if real in walked:
            raise ValueError(f'ImageFolder: {root!r} is {walked[real]!r} again (a symlink loop, '
                             f'or two links to one folder): its images would be listed twice; '
                             f'remove the link')
        walked[real] = root
        metadata.extend(osp.join(root, name) for name in sorted(dirs) if is_os_metadata(name))
        dirs[:] = sorted(name for name in dirs if not is_os_metadata(name))  # not walked
        for name in sorted(files):
            if has_extension(name, extensions):
                if is_os_metadata(name):
                    metadata.append(osp.join(root, name))
                else:
                    yield osp.join(root, name)
            elif (others is not None and osp.splitext(name)[1].lower() in others[0]
                  and not is_os_metadata(name)):
                others[1].append(osp.join(root, name))


@DATASETS.register_module()
class ImageFolder(NamedRefetchFailure, SeededSamples, BaseDataset):
    """Images under ``<data_root>/<data_prefix>``, labelled by class folder or unlabelled.

    With ``with_label=True`` the layout is ImageNet's, ``<folder>/<class>/**/<image>``: the class
    index is the position of the folder name in sorted order (torchvision's convention, so
    ``n01440764`` is 0 for ImageNet) and ``metainfo['classes']`` lists the names, or keeps
    those given in ``metainfo=dict(classes=...)``, one per folder in that order (mmpretrain's
    ``CustomDataset``; names that disagree with the folders raise). Images directly
    in ``<folder>`` have no class then and are not used: they are named in a
    ``DatasetListingWarning``, or in the error when there is no class folder at all. With
    ``with_label=False`` every image under the folder is used, recursively, so both a flat
    folder and the ImageNet layout work.

    macOS metadata with an image extension (``._*`` AppleDouble files, ``__MACOSX`` folders) is
    left out when the folder is listed, with one log line. Other hidden files are images as in
    torchvision, named in one ``DatasetListingWarning`` (most are thumbnails or caches).

    Problems with the folder (missing, no images, an empty class, a class linked to a folder
    that is gone, a symlink loop) raise at construction, naming the path, so they surface before
    training starts. Unreadable files are found later, when decoded, and skipped (see
    ``LoadImageRGB``); with ``test_mode=True`` (an evaluation set) one raises a ``ValueError``
    naming it instead, since the image drawn in its place would be evaluated twice.

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
        # Image files of other formats that PIL decodes, named once when listed.
        self._other_images = _other_images_record(self.extensions)
        if isinstance(data_root, str):
            data_root = osp.expanduser(data_root)  # '~/data', as a shell expands it
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
                                    f'not exist{self._not_a_folder()} (data_root='
                                    f'{self.data_root!r})')
        if self._other_images is not None:
            self._other_images[1].clear()  # listed again (full_init after lazy_init)
        if self.with_label:
            data_list, metadata = self._load_labelled()
        else:
            data_list, metadata = self._load_unlabelled()
        self._report_metadata(metadata)
        self._warn_hidden([info['img_path'] for info in data_list])
        self._warn_other_images()
        if self._other_images is not None:
            self._other_images[1].clear()  # named: not kept in the dataset (copied to workers)
        return data_list

    def _not_a_folder(self) -> str:
        """Why the folder does not exist when a part of its path is a file: data_root given as
        an archive (``imgs.tar``) or an image."""
        path = file_in_place_of(self.folder)
        if path is None:
            return ''
        return f': {path!r} is a file, not a folder ({what_to_give_instead(path)})'

    def _other_images_hint(self) -> str:
        """For an error that found no images: the files of other image formats found."""
        return other_images_hint(self._other_images[1] if self._other_images is not None
                                 else [])

    @classmethod
    def missing_images(cls, folder: str, settings: dict) -> str:
        """Why the existing ``folder`` holds no image that the dataset of the config entry
        ``settings`` would list, or ``''`` when it holds one: for the check before the launch
        (:mod:`fastmim.engine.dataset_paths`), which would otherwise leave the dataset to find
        out after the Runner's start-up. The dataset's own scan (:func:`iter_images`),
        stopped at the first image. A folder it cannot walk (unreadable, a symlink loop) and
        extensions it cannot read are left to the dataset to name."""
        try:
            extensions = normalize_extensions(settings.get('extensions', IMG_EXTENSIONS))
            others = _other_images_record(extensions)
            if next(iter_images(folder, extensions, others=others), None) is not None:
                return ''
        except (OSError, ValueError, TypeError):
            return ''
        return (f'no image files: none with extensions {extensions} under it, searched '
                f'recursively{other_images_hint(others[1] if others is not None else [])}')

    def _warn_other_images(self) -> None:
        """Image files of formats PIL decodes but the extensions leave out (``.jfif``,
        ``.jpe``, ``.gif``): not used, as torchvision leaves them out, but named once, since
        a folder of 4 .jpg and 4 .jfif photos would otherwise list 4 without a word."""
        others = self._other_images[1] if self._other_images is not None else []
        if not others:
            return
        found = sorted({osp.splitext(path)[1].lower() for path in others})
        warnings.warn(f'{type(self).__name__}: {len(others)} image file(s) under '
                      f'{self.folder!r} with extensions {found} are not used: the extensions '
                      f'are {self.extensions} (torchvision\'s); to use them, pass '
                      f'extensions=IMG_EXTENSIONS + {tuple(found)} (IMG_EXTENSIONS from '
                      f'fastmim.datasets.utils): {examples(others)}', DatasetListingWarning)

    def _load_unlabelled(self) -> Tuple[List[dict], List[str]]:
        paths, metadata = find_images(self.folder, self.extensions, others=self._other_images)
        if not paths:
            raise ValueError(f'{type(self).__name__}: no images with extensions '
                             f'{self.extensions} under {self.folder!r}'
                             f'{self._other_images_hint()}')
        self._warn_split_folders(paths)
        return [dict(img_path=path) for path in paths], metadata

    def _warn_split_folders(self, paths: List[str]) -> None:
        """Pre-training on a dataset root (``data/imagenet``) with a 'train' and a 'val' folder
        would take the val images too, without a word: named once, with their counts."""
        splits = [name for name in ('train', *SPLIT_FOLDERS)
                  if osp.isdir(osp.join(self.folder, name))]
        if 'train' not in splits or len(splits) < 2:
            return
        counts = {name: 0 for name in splits}
        prefixes = {name: osp.join(self.folder, name, '') for name in splits}
        for path in paths:
            for name, prefix in prefixes.items():
                if path.startswith(prefix):
                    counts[name] += 1
        others = [name for name in splits[1:] if counts[name]]
        if not counts['train'] or not others:
            return
        held = ', '.join(f'{name!r} ({counts[name]} image(s))' for name in splits if counts[name])
        warnings.warn(f'{type(self).__name__}: {self.folder!r} holds split folders {held}, '
                      f'and with_label=False uses every image under it, the '
                      f'{" and ".join(repr(name) for name in others)} images too; set '
                      f"data_prefix='train' to pre-train on the train split only",
                      DatasetListingWarning)

    def _top_entries(self) -> List[os.DirEntry]:
        """The folder's entries; a link to a folder that is gone (a disk not mounted) raises,
        since it is no folder to ``os.scandir``: the class would be dropped without a word and
        every later class would get the label of the one before it."""
        entries = sorted(os.scandir(self.folder), key=lambda entry: entry.name)
        broken = [f'{entry.path!r} -> {os.readlink(entry.path)!r}' for entry in entries
                  if entry.is_symlink() and not osp.exists(entry.path)]
        if broken:
            raise FileNotFoundError(f'{type(self).__name__}: links in {self.folder!r} whose '
                                    f'target does not exist (a disk not mounted?); their '
                                    f'classes would be dropped and the later ones renumbered: '
                                    f'{broken}')
        return entries

    def _loose_images(self, entries: List[os.DirEntry]) -> List[str]:
        """Images directly in the folder, beside the class folders: no class is theirs, so they
        are not used, and the caller names them: left out silently, they would hide a mistake
        (an unpacked archive, a class folder not made)."""
        return [entry.path for entry in entries
                if not entry.is_dir() and has_extension(entry.name, self.extensions)
                and not is_os_metadata(entry.name)]

    def _load_labelled(self) -> Tuple[List[dict], List[str]]:
        entries = self._top_entries()
        classes = [entry.name for entry in entries
                   if entry.is_dir() and not is_os_metadata(entry.name)]
        metadata = [entry.path for entry in entries if is_os_metadata(entry.name)
                    and (entry.is_dir() or has_extension(entry.name, self.extensions))]
        loose = self._loose_images(entries)
        if not classes:
            found = f', only {len(loose)} image(s): {examples(loose)}' if loose else ''
            raise ValueError(f'{type(self).__name__}: with_label=True needs one sub-folder per '
                             f'class in {self.folder!r}, found none{found} (use '
                             f'with_label=False for a flat folder of images)')
        if loose:
            warnings.warn(f'{type(self).__name__}: {len(loose)} image(s) directly in '
                          f'{self.folder!r} are not used: with_label=True takes images from the '
                          f'class sub-folders only; move them into their class folders: '
                          f'{examples(loose)}', DatasetListingWarning)
        data_list, empty, walked = [], [], {}
        for label, name in enumerate(classes):
            # One record of the folders walked: a class linked to another's folder would list
            # its images under two labels.
            paths, in_class = find_images(osp.join(self.folder, name), self.extensions, walked,
                                          self._other_images)
            metadata.extend(in_class)
            if not paths:
                empty.append(osp.join(self.folder, name))
            data_list.extend(dict(img_path=path, gt_label=label) for path in paths)
        if empty:
            raise ValueError(f'{type(self).__name__}: class folders without images with '
                             f'extensions {self.extensions}: {empty}'
                             f'{self._other_images_hint()}')
        self._warn_numbered_folders(classes)
        splits = [name for name in SPLIT_FOLDERS if name in classes]
        if 'train' in classes and splits:
            warnings.warn(f'{type(self).__name__}: the class folders of {self.folder!r} include '
                          f"'train' and {', '.join(repr(name) for name in splits)}, split "
                          f'folders of a dataset root, which would be classes; set '
                          f"data_prefix='train' (and the val dataset's data_prefix='val')",
                          DatasetListingWarning)
        self._metainfo['classes'] = self._class_names(tuple(classes))
        return data_list, metadata

    def _warn_numbered_folders(self, folders: List[str]) -> None:
        """Class folders named by numbers are labelled in their sorted order as text, as
        torchvision and mmpretrain label them ('10' before '2'), which this keeps, so that
        labels agree with theirs. Where a folder's number is meant as its label (ImageNetV2's
        layout, a list file's labels for the other split, a checkpoint's outputs) every class
        past the first misplaced one is scored against another, without a word: named once."""
        if not all(name.isascii() and name.isdigit() for name in folders):
            return
        by_number = sorted(folders, key=int)
        misplaced = next((label for label, name in enumerate(folders)
                          if name != by_number[label]), None)
        if misplaced is None:
            return
        name, smallest = folders[misplaced], by_number[0]
        padded = smallest.zfill(len(by_number[-1]))
        warnings.warn(f'{type(self).__name__}: the {len(folders)} class folders of '
                      f'{self.folder!r} are named by numbers, and labelled by their sorted '
                      f'order as text, as torchvision and mmpretrain do: folder {name!r} is '
                      f'label {misplaced}, not {by_number.index(name)}; if the numbers are the '
                      f'labels, pad the names with zeros ({smallest!r} as {padded!r}) or list '
                      f'the images with their labels (ImageList)', DatasetListingWarning)

    def _class_names(self, folders: Tuple[str, ...]) -> Tuple[str, ...]:
        """The names of the classes: the folders', or those given in ``metainfo['classes']``.

        As in mmpretrain's ``CustomDataset``, given names are kept, one per class folder in
        sorted order (its ImageNet names the wnid folders 'tench', ...): they may name the
        folders, or be other names for display. mmpretrain asserts only their count, and
        labels by sorted folder whatever the names say, so the folder names in another order,
        or some folder names and some others, would name classes wrongly without a word: those are
        refused, naming both lists (the labels cannot follow the names: a checkpoint trained
        with mmpretrain numbers the classes by sorted folder).
        """
        given = self._metainfo.get('classes')
        if given is None:
            return folders
        given = tuple(given)
        named_folders = set(given) & set(folders)
        if given == folders or (len(given) == len(folders) and not named_folders):
            return given
        raise ValueError(
            f"{type(self).__name__}: metainfo['classes'] disagrees with the class folders of "
            f'{self.folder!r}: {len(given)} names ({examples(given)}), {len(folders)} class '
            f'folders ({examples(folders)}){self._name_differences(given, folders)}; an '
            f"image's label is its folder's position in sorted order: give one name per "
            f'folder in that order (the folder names, or names for display as mmpretrain\'s '
            f'ImageNet gives), or no classes to use the folder names')

    @staticmethod
    def _name_differences(given: Tuple[str, ...], folders: Tuple[str, ...]) -> str:
        """What is wrong with names of which some are folders' (nothing more to say when none
        is: the counts differ)."""
        if not set(given) & set(folders):
            return ''
        not_folders = [name for name in given if name not in folders]
        unnamed = [name for name in folders if name not in given]
        if not_folders or unnamed:
            return (f'; names that are no folder: {not_folders[:5]}, folders not named: '
                    f'{unnamed[:5]}')
        position = next(i for i, (name, folder) in enumerate(zip(given, folders))
                        if name != folder)
        return (f'; the folder names in another order: name {position} is '
                f'{given[position]!r}, folder {position} is {folders[position]!r}')

    def _report_metadata(self, metadata: List[str]) -> None:
        """One line for the macOS metadata left out, when the folder is listed (once), so that a
        count of images lower than the count of files is explained."""
        if metadata:
            print_log(f'{type(self).__name__}: left out {len(metadata)} macOS metadata files and '
                      f"folders under {self.folder!r} ('._*' AppleDouble files, '__MACOSX' "
                      f'folders; not images): {examples(metadata)}',
                      logger='current', level=logging.INFO)

    def _warn_hidden(self, paths: List[str]) -> None:
        """Images in hidden files or folders are used, as torchvision and mmpretrain use them
        (one may be data, and leaving it out would lose it without a word), but named once:
        most are an application's thumbnails or cache of the images beside them
        (``.thumbnails/``), which would count those twice."""
        # Every listed path is the folder joined with the path below it (os.walk, os.scandir);
        # slicing is 30 times as fast as osp.relpath, which takes 3 s for ImageNet's list.
        start = len(osp.join(self.folder, ''))
        hidden = [path for path in paths if is_hidden(path[start:])]
        if hidden:
            warnings.warn(f'{type(self).__name__}: {len(hidden)} images under {self.folder!r} '
                          f'are in hidden files or folders; they are used, as torchvision '
                          f'does; delete them if they are thumbnails or a cache: '
                          f'{examples(hidden)}', DatasetListingWarning)
