"""Image decoding to RGB uint8 arrays, with skipping of unreadable files.

Every image leaves this module as an ``(H, W, 3)`` uint8 RGB array, whatever the file holds
(grayscale, CMYK, 16-bit, palette, alpha): the data preprocessor normalises with RGB mean/std and
does no channel swap. It is upright: a file's EXIF orientation (a phone photo stored on its side)
is applied, as mmcv's loaders (so mmpretrain's) and OpenCV apply it. An unreadable file is not
fatal: the transform warns, counts it and returns ``None``, and mmengine's ``BaseDataset`` then
fetches another index, so one broken JPEG among a million does not stop a pre-training run.
"""
import contextlib
import io
import os
import struct
import warnings
from typing import BinaryIO, Iterator, Optional, Tuple, Union

import numpy as np
from mmcv.transforms import BaseTransform
from PIL import ExifTags, Image, UnidentifiedImageError

from fastmim.registry import TRANSFORMS
from fastmim.run_log import log_to_files

# What PIL raises for corrupt, truncated, missing or unsupported files. Deliberately not a bare
# ``Exception``: bugs in the pipeline itself must still surface.
UNREADABLE_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error,
                           Image.DecompressionBombError)

_unreadable_files = set()  # the paths skipped as unreadable in this process
_warned_unreadable_files = set()  # those named in a warning: each once
_unreadable_skips = 0  # how often: a file drawn again in an epoch is skipped again
_last_unreadable_image = None  # (path, what was wrong with it)
_unreadable_images_raised = 0  # depth of ``unreadable_images_raised`` contexts

# The EXIF Orientation tag (TIFF/EXIF 2.3, tag 0x0112) -> the transposition that makes the stored
# pixels upright. 1 (or no tag, or a value outside 2-8) means they already are.
ORIENTATION_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SIDE_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)


class UnreadableImageWarning(UserWarning):
    """An image file could not be decoded and its sample was skipped."""


def unreadable_image_count() -> int:
    """Number of distinct unreadable image files skipped so far in this process (a file
    skipped again, drawn once more by a refetch or in the next epoch, counts once).

    Each DataLoader worker is a separate process and keeps its own count.
    """
    return len(_unreadable_files)


def why_unreadable(path: str) -> Optional[str]:
    """What was wrong with ``path`` (``'OSError: image file is truncated ...'``) when it was the
    last file reported unreadable in this process, else ``None``: for an error raised after
    the transform returned ``None``, which keeps no reason."""
    if _last_unreadable_image is not None and _last_unreadable_image[0] == path:
        return _last_unreadable_image[1]
    return None


@contextlib.contextmanager
def unreadable_images_raised() -> Iterator[None]:
    """Within it an unreadable file is counted and its reason kept (:func:`why_unreadable`),
    but not reported as skipped: for an evaluation set, which raises an error naming the file
    instead (a warning 'skipped' right before it would say the opposite)."""
    global _unreadable_images_raised
    _unreadable_images_raised += 1
    try:
        yield
    finally:
        _unreadable_images_raised -= 1


def describe_image_error(path: str, error: BaseException) -> str:
    """``'OSError: image file is truncated ...'``, with what the error alone does not say: that
    a missing file is a link whose target is gone (``ls`` lists it), or how to allow a valid
    image larger than PIL's limit."""
    description = f'{type(error).__name__}: {error}'
    if isinstance(error, FileNotFoundError) and os.path.islink(path):
        description += f' (a symlink to {os.readlink(path)!r}, which does not exist)'
    elif isinstance(error, Image.DecompressionBombError):
        description += (f'; if the image is meant (a large scan or panorama), raise PIL\'s '
                        f'limit, PIL.Image.MAX_IMAGE_PIXELS (now {Image.MAX_IMAGE_PIXELS}; '
                        f'None: no limit), in a module the config names in custom_imports '
                        f'(DataLoader workers are forked with it), or store the image smaller')
    return description


def report_unreadable_image(path: str, error: BaseException,
                            replacement: Optional[str] = None) -> None:
    """Count a skipped file and warn with its path, so broken files can be found and removed;
    ``replacement`` names the image used in its place, where one was (JpegDecodePreprocessor
    keeps its batch's size). The warning goes to stderr and to the run's log file (from a
    process other than rank 0, to its own ``<timestamp>_rank<R>.log`` beside it), once per file
    and process: a file skipped again (a refetch, the next epoch) is counted, the count shown
    in the next file's warning, where a folder of broken files would give ~1,000 warnings of the
    same few. Within :func:`unreadable_images_raised` the file is counted and its reason kept, no
    more."""
    global _unreadable_skips, _last_unreadable_image
    _unreadable_files.add(path)
    _unreadable_skips += 1
    description = describe_image_error(path, error)
    _last_unreadable_image = path, description
    if _unreadable_images_raised or path in _warned_unreadable_files:
        return
    _warned_unreadable_files.add(path)
    instead = '' if replacement is None else f', replaced by a copy of {replacement}'
    files = len(_unreadable_files)
    skips = '' if _unreadable_skips == files else f' ({_unreadable_skips} skips)'
    message = (f'skipped unreadable image {path} ({description}){instead}; '
               f'{files} unreadable files so far in this process{skips}')
    warnings.warn(message, UnreadableImageWarning, stacklevel=2)
    log_to_files(f'{UnreadableImageWarning.__name__}: {message}', every_rank=True)


def pil_to_rgb(image: Image.Image) -> np.ndarray:
    """Decode a PIL image of any common mode into an ``(H, W, 3)`` uint8 RGB array.

    16-bit grayscale (``I;16*``, and ``I`` which PIL uses for 16-bit PNG/TIFF) is scaled from
    0-65535 to 0-255 with rounding; PIL's own ``convert('RGB')`` would clip it to 255 and turn
    most 16-bit photos white. Alpha is dropped without compositing, as torchvision's loader
    does. Everything else (L, 1, P, LA, CMYK, YCbCr, ...) goes through ``convert('RGB')``.

    Samples with no defined 0-255 range are refused (``ValueError``, which the loader reports
    as an unreadable file): floating-point images (``F``: PIL's conversion clips 0-1 values
    to 0 or 1, a black picture) and integer ones beyond 16 bits (they would be clipped).
    """
    if image.mode.startswith('F'):
        raise ValueError(f'a floating-point image (mode {image.mode}) has no defined 0-255 '
                         'range; store it with 8- or 16-bit samples')
    if image.mode.startswith('I'):
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f'a {image.mode} image with values {values.min()}..{values.max()} '
                             'has no defined 0-255 range (beyond 16-bit 0..65535); store it '
                             'with 8- or 16-bit samples')
        gray = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == 'P' and 'transparency' in image.info:
        # Going through RGBA resolves the transparency entry without PIL's palette warning.
        image = image.convert('RGBA')
    if image.mode != 'RGB':
        image = image.convert('RGB')
    return np.asarray(image)


def exif_orientation(image: Image.Image) -> int:
    """The image's EXIF orientation, 1 to 8; 1 where it has none (or an invalid one).

    Phones and cameras store a photo taken in portrait as landscape pixels plus this tag, so
    that decoders which ignore it (PIL's ``Image.open``, torchvision's loader and nvJPEG) give
    the photo on its side. A PNG whose EXIF follows its pixel data is decoded here to find it.
    """
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    return orientation if orientation in ORIENTATION_TRANSPOSES else 1


def upright(image: Image.Image, orientation: int) -> Image.Image:
    """``image`` turned or mirrored as its ``orientation`` (:func:`exif_orientation`) says.

    The orientation is passed, not read: a transposed or cropped PIL image keeps the EXIF of
    the file, so reading it again would turn the image twice.
    """
    transpose = ORIENTATION_TRANSPOSES.get(orientation)
    return image if transpose is None else image.transpose(transpose)


def pil_to_upright_rgb(image: Image.Image) -> np.ndarray:
    """:func:`pil_to_rgb` of the image after its EXIF orientation: what the datasets decode a
    file to, for an image opened by other code (not for one transposed or cropped already)."""
    return pil_to_rgb(upright(image, exif_orientation(image)))


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
    """Decode a file (a path, or a file object such as ``io.BytesIO``) to an upright RGB array;
    raises on unreadable files."""
    try:
        image = Image.open(path)
    except UnidentifiedImageError:
        if not isinstance(path, str):
            raise
        raise unidentified_image_error(path, os.path.getsize(path)) from None
    with image:
        return pil_to_upright_rgb(image)


def image_file_problem(path: str) -> Optional[str]:
    """Why :class:`LoadImageRGB` would skip the file at ``path``, in its warning's words
    (:func:`describe_image_error`), or ``None`` when it decodes. The whole file is decoded, as
    the eager loader does, so a truncated JPEG shows too (its header is intact). For checking a
    dataset's files before a run (``tools/misc/verify_dataset.py``): the verdict is the loader's
    own, so a file passed is a file training reads."""
    try:
        read_rgb_image(path)
    except UNREADABLE_IMAGE_ERRORS as error:
        return describe_image_error(path, error)
    return None


class LazyImage:
    """An image file whose header has been parsed but whose pixels are decoded on demand.

    Lets a later transform that knows the crop (``RandomResizedCrop``) choose the decoding scale
    and convert only the crop's pixels. :meth:`open` reads the file once into memory and parses
    the header from there, so decoding later needs no second open and no file handle stays open;
    it keeps the file's bytes in ``data`` for a decoder on the model's device
    (``RandomResizedCrop(decode='device')``). ``data`` is ``None`` for an image made from an
    already opened PIL image.

    ``width``, ``height`` and the boxes of :meth:`decode_region` are those of the upright image
    (after the EXIF ``orientation``), as the eager loader decodes it.
    """

    def __init__(self, path: str, image: Image.Image, data: Optional[bytes] = None):
        self.path = path
        self.image = image
        self.data = data
        self.orientation = exif_orientation(image)
        width, height = image.size
        if self.orientation in SIDE_SWAPPING_ORIENTATIONS:
            width, height = height, width
        self.width, self.height = width, height

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
        """:func:`apply_draft` on this image; call it before :meth:`decode_region`.

        An image with an EXIF orientation is decoded at full scale (returns 1): reduced pixels
        cover whole blocks from the stored image's top-left corner, and mirrored with it they
        would no longer start at the upright image's corner, shifting the crop. Such files are
        rare outside phone and camera folders.
        """
        return apply_draft(self.image, reduction) if self.orientation == 1 else 1

    def decode_region(self, box: Tuple[int, int, int, int]) -> Optional[np.ndarray]:
        """The upright RGB pixels of ``box`` (left, top, right, bottom in pixels of the upright
        image as drafted), or ``None`` after reporting the file when it cannot be decoded (a
        truncated JPEG shows only here, its header being intact)."""
        try:
            return pil_to_rgb(upright(self.image, self.orientation).crop(box))
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
