"""What the downstream datasets (COCO, ADE20K) find out about a sample's files from their own
bytes: the EXIF orientation of an image, and what is wrong with a file that does not decode;
and the memo that lets their per-sample checks read each file once per process.

Their pipelines decode with mmcv (images through OpenCV, ADE20K label maps through PIL), whose
errors for a broken file name neither the file nor the reason: an empty file ends in OpenCV's
``!buf.empty()`` assertion, a text file saved as ``.jpg`` in mmcv's ``failed to load image``, an
empty or truncated label map in PIL's ``cannot identify image file <_io.BytesIO ...>`` or
``image file is truncated``.
"""
import os
from typing import Callable, Optional

import cv2
from PIL import Image

from .transforms.loading import UNREADABLE_IMAGE_ERRORS, describe_image_error, exif_orientation
from .utils import is_local

# What a pipeline raises for a file it cannot decode: PIL's errors, OpenCV's on an empty
# buffer, and mmcv's ``assert img is not None`` when OpenCV decodes nothing. A bug raises these
# types too: the error is renamed only when a file of the sample is found broken.
DECODING_ERRORS = UNREADABLE_IMAGE_ERRORS + (AssertionError, cv2.error)
# The keys of a sample's files in mmdet's and mmseg's data infos.
SAMPLE_FILE_KEYS = ('img_path', 'seg_map_path')


def stored_orientation(path: str) -> int:
    """The EXIF orientation of the image file ``path`` (1: stored upright, or no tag), read
    from its header; mmcv's loaders (OpenCV's and PIL's) turn the image upright by it."""
    with Image.open(path) as image:
        return exif_orientation(image)


class FilesFoundFine:
    """The files a per-sample check of the files themselves (their header, or a label map
    decoded again) has passed, so that each is read once per process (each DataLoader worker
    keeps its own) instead of on every load of every epoch.

    Only the files that passed are remembered: one the check refuses (it raises) is read and
    refused again on each load, and one it only warns of is remembered, so warned of once. A
    set of paths rather than a bounded ``functools.lru_cache``: an epoch visits every file once,
    in random order, so a cache smaller than the dataset would miss nearly every time; the set
    holds at most one path per file (about 15 MiB for COCO's 118k training images). A file
    rewritten during the run is not read again."""

    def __init__(self):
        self._paths = set()

    def check_once(self, path: str, check: Callable[[str], None]) -> None:
        """``check(path)``, unless ``path`` has passed it in this process."""
        if path in self._paths:
            return
        check(path)
        self._paths.add(path)


def why_undecodable(path: str) -> Optional[str]:
    """What is wrong with the image file ``path`` (``'empty file'``, PIL's error), or None when
    PIL decodes it whole."""
    try:
        if os.path.getsize(path) == 0:
            return 'empty file'
        with Image.open(path) as image:
            image.load()
    except UNREADABLE_IMAGE_ERRORS as error:
        return describe_image_error(path, error)
    return None


class NamedUndecodableFiles:
    """Mixin for mmengine datasets whose samples are read from ``img_path`` (and
    ``seg_map_path``): when the pipeline fails on a file that does not decode, the error is
    one ``ValueError('<file>: <reason>')``, which the tools show as one line (also from a
    DataLoader worker). Any other error of the pipeline is raised as it was, traceback and all.
    Local files only (others are not read here). Put it before the dataset in the bases."""

    def prepare_data(self, idx):
        try:
            return super().prepare_data(idx)
        except DECODING_ERRORS as error:
            broken = self._undecodable_file(idx)
            if broken is None:
                raise
            raise ValueError(broken) from error

    def _undecodable_file(self, idx) -> Optional[str]:
        """``'<file>: <reason>'`` for the first file of sample ``idx`` that does not decode."""
        info = self.get_data_info(idx)
        for key in SAMPLE_FILE_KEYS:
            path = info.get(key)
            if path is None or not is_local(path, self.backend_args):
                continue
            reason = why_undecodable(path)
            if reason is not None:
                return f'{path}: {reason}'
        return None
