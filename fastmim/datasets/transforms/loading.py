"""Image decoding to RGB uint8 arrays, with skipping of unreadable files.

Every image leaves this module as an ``(H, W, 3)`` uint8 RGB array, whatever the file holds
(grayscale, CMYK, 16-bit, palette, alpha): the data preprocessor normalises with RGB mean/std and
does no channel swap. An unreadable file is not fatal: the transform warns, counts it and returns
``None``, and mmengine's ``BaseDataset`` then fetches another index, so one broken JPEG among a
million does not stop a pre-training run.
"""
import io
import os
import struct
import warnings
from typing import BinaryIO, Optional, Tuple, Union

import numpy as np
from mmcv.transforms import BaseTransform
from PIL import Image, UnidentifiedImageError

from fastmim.registry import TRANSFORMS

# What PIL raises for corrupt, truncated, missing or unsupported files. Deliberately not a bare
# ``Exception``: bugs in the pipeline itself must still surface.
UNREADABLE_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error,
                           Image.DecompressionBombError)

_unreadable_images_seen = 0


class UnreadableImageWarning(UserWarning):
    """An image file could not be decoded and its sample was skipped."""


def unreadable_image_count() -> int:
    """Number of unreadable images skipped so far in this process.

    Each DataLoader worker is a separate process and keeps its own count.
    """
    return _unreadable_images_seen


def report_unreadable_image(path: str, error: BaseException,
                            replacement: Optional[str] = None) -> None:
    """Count a skipped file and warn with its path, so broken files can be found and removed;
    ``replacement`` names the image used in its place, where one was (JpegDecodePreprocessor
    keeps its batch's size)."""
    global _unreadable_images_seen
    _unreadable_images_seen += 1
    instead = '' if replacement is None else f', replaced by a copy of {replacement}'
    warnings.warn(
        f'skipped unreadable image {path} ({type(error).__name__}: {error}){instead}; '
        f'skipped {_unreadable_images_seen} unreadable images so far in this process',
        UnreadableImageWarning,
        stacklevel=2)


def pil_to_rgb(image: Image.Image) -> np.ndarray:
    """Decode a PIL image of any common mode into an ``(H, W, 3)`` uint8 RGB array.

    16-bit grayscale (``I;16*``, and ``I`` which PIL uses for 16-bit PNG/TIFF) is scaled from
    0-65535 to 0-255 with rounding; PIL's own ``convert('RGB')`` would clip it to 255 and turn
    most 16-bit photos white. Alpha is dropped without compositing, as torchvision's loader
    does. Everything else (L, 1, P, LA, CMYK, YCbCr, ...) goes through ``convert('RGB')``.
    """
    if image.mode.startswith('I'):
        values = np.asarray(image).astype(np.int64)
        gray = ((np.clip(values, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == 'P' and 'transparency' in image.info:
        # Going through RGBA resolves the transparency entry without PIL's palette warning.
        image = image.convert('RGBA')
    if image.mode != 'RGB':
        image = image.convert('RGB')
    return np.asarray(image)


def apply_draft(image: Image.Image, reduction: int) -> int:
    """Ask PIL to decode ``image`` (opened, not yet loaded) at 1/``reduction`` scale.

    For JPEG, ``draft`` makes libjpeg decode straight to the reduced size with its scaled IDCT
    (reduced-scale pixel ``i`` covers original pixels ``[reduction * i, reduction * (i + 1))``):
    smaller inverse DCTs, and upsampling and colour conversion of the reduced pixels only. The
    Huffman decoding of the whole file remains, so on ImageNet-sized photos a 1/2-scale decode
    still costs about 0.9 of a full one, a 1/8-scale one about 0.7. Other formats have no such
    decoding.

    Args:
        reduction: 1, 2, 4 or 8, at most the image's shorter side.

    Returns:
        The reduction the decoder will apply: ``reduction`` for JPEG, 1 for other formats.
    """
    if reduction == 1:
        return 1
    width = image.width
    draft = image.draft(None, (width // reduction, image.height // reduction))
    return 1 if draft is None else round(width / draft[1][2])


def unidentified_image_error(path: str, size: int) -> OSError:
    """The error for a file PIL does not recognise, naming the path (PIL names the buffer of an
    image opened from memory, ``<_io.BytesIO object at 0x...>``) and saying so when the file is
    simply empty, the commonest case (an interrupted copy or download)."""
    if size == 0:
        return OSError('the file is empty (0 bytes)')
    return UnidentifiedImageError(f'cannot identify image file {path!r} ({size} bytes)')


def read_rgb_image(path: Union[str, BinaryIO]) -> np.ndarray:
    """Decode a file (a path, or a file object such as ``io.BytesIO``) to an RGB array; raises
    on unreadable files."""
    try:
        image = Image.open(path)
    except UnidentifiedImageError:
        if not isinstance(path, str):
            raise
        raise unidentified_image_error(path, os.path.getsize(path)) from None
    with image:
        return pil_to_rgb(image)


class LazyImage:
    """An image file whose header has been parsed but whose pixels are decoded on demand.

    Lets a later transform that knows the crop (``RandomResizedCrop``) choose the decoding scale
    and convert only the crop's pixels. :meth:`open` reads the file once into memory and parses
    the header from there, so decoding later needs no second open and no file handle stays open;
    it keeps the file's bytes in ``data`` for a decoder on the model's device
    (``RandomResizedCrop(decode='device')``). ``data`` is ``None`` for an image made from an
    already opened PIL image.
    """

    def __init__(self, path: str, image: Image.Image, data: Optional[bytes] = None):
        self.path = path
        self.image = image
        self.data = data
        self.width, self.height = image.size

    @classmethod
    def open(cls, path: str) -> 'LazyImage':
        """Read ``path`` and parse its header; raises what PIL raises for unreadable files."""
        with open(path, 'rb') as file:
            data = file.read()
        try:
            return cls(path, Image.open(io.BytesIO(data)), data)
        except UnidentifiedImageError:
            raise unidentified_image_error(path, len(data)) from None

    def draft(self, reduction: int) -> int:
        """:func:`apply_draft` on this image; call it before :meth:`decode_region`."""
        return apply_draft(self.image, reduction)

    def decode_region(self, box: Tuple[int, int, int, int]) -> Optional[np.ndarray]:
        """The RGB pixels of ``box`` (left, top, right, bottom in pixels of the image as drafted),
        or ``None`` after reporting the file when it cannot be decoded (a truncated JPEG shows
        only here, its header being intact)."""
        try:
            return pil_to_rgb(self.image.crop(box))
        except UNREADABLE_IMAGE_ERRORS as error:
            report_unreadable_image(self.path, error)
            return None

    def __repr__(self):
        return f'{type(self).__name__}({self.path!r}, size=({self.width}, {self.height}))'


@TRANSFORMS.register_module()
class LoadImageRGB(BaseTransform):
    """Load ``results['img_path']`` as an RGB uint8 ``(H, W, 3)`` array in ``results['img']``.

    Unreadable files (corrupt, truncated, missing) are skipped: a warning names the file and
    the transform returns ``None``, which makes ``BaseDataset`` fetch another sample. Results that
    already hold an ``'img'`` (embedded photos decoded in memory) pass through unchanged.

    Args:
        lazy: read the file and parse its header here, and put a :class:`LazyImage` in
            ``results['lazy_img']`` instead of decoding; ``RandomResizedCrop`` then decodes it at
            1/2, 1/4 or 1/8 scale when its crop is large enough (JPEG only) and converts only the
            crop. A truncated file is detected and skipped at that point instead. Needs a
            ``RandomResizedCrop`` later in the pipeline.

    Sets ``img`` (or ``lazy_img``), ``ori_shape`` and ``img_shape`` (height, width).
    """

    def __init__(self, lazy: bool = False):
        self.lazy = lazy

    def transform(self, results: dict) -> Optional[dict]:
        if 'img' in results:
            return results
        if 'img_path' not in results:
            raise KeyError(f'{type(self).__name__} needs results["img_path"]; got keys '
                           f'{sorted(results)}')
        path = results['img_path']
        try:
            if self.lazy:
                lazy_image = LazyImage.open(path)
                results['lazy_img'] = lazy_image
                shape = (lazy_image.height, lazy_image.width)
            else:
                results['img'] = read_rgb_image(path)
                shape = results['img'].shape[:2]
        except UNREADABLE_IMAGE_ERRORS as error:
            report_unreadable_image(path, error)
            return None
        results['ori_shape'] = shape
        results['img_shape'] = shape
        return results

    def __repr__(self):
        return f'{type(self).__name__}(lazy={self.lazy})'
