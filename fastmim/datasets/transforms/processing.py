"""Geometric augmentation for pre-training: torchvision-style random resized crop and a
horizontal flip, both able to leave the JPEG decoding to the model's device (nvJPEG)."""
import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmcv.transforms import BaseTransform
from PIL import Image

from fastmim.registry import TRANSFORMS

from .loading import LazyImage

PIL_INTERPOLATIONS = {
    'nearest': Image.Resampling.NEAREST,
    'bilinear': Image.Resampling.BILINEAR,
    'bicubic': Image.Resampling.BICUBIC,
    'lanczos': Image.Resampling.LANCZOS,
    'box': Image.Resampling.BOX,
    'hamming': Image.Resampling.HAMMING,
}
# Filters that torch resamples, antialiased, with PIL's kernels (its uint8 code is a port of
# Pillow-SIMD's), 3-8x faster than PIL on a 128-px output. It rounds the filter weights to 16-bit
# integers where PIL keeps 22 bits: bilinear stays within 1 grey level of PIL; bicubic differs by
# under 0.25 levels on average, up to 8 on single pixels at sharp edges (the negative lobes).
TORCH_FILTERS = ('bilinear', 'bicubic')

JPEG_DRAFT_REDUCTIONS = (8, 4, 2)
MAX_ATTEMPTS = 10  # random draws before the central fallback, as in torchvision
DECODE_PLACES = ('worker', 'device')
# JPEG colour modes PIL reports that nvJPEG turns into RGB: grayscale and YCbCr (PIL's 'RGB').
# CMYK and YCCK JPEGs (PIL's 'CMYK'; ImageNet's training set has about 22) it cannot. Nor can it
# apply an EXIF orientation (torchvision's decode_jpeg does so on the CPU only): such files are
# decoded in the worker too, so that both places give the same upright image.
DEVICE_JPEG_MODES = ('L', 'RGB')


def _pair(size: Union[int, Sequence[int]], name: str) -> Tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f'{name} must be a positive int or a (height, width) pair, got {size!r}')
    return tuple(size)


def _range(values: Sequence[float], name: str) -> Tuple[float, float]:
    if len(values) != 2 or not 0 < values[0] <= values[1]:
        raise ValueError(f'{name} must be (min, max) with 0 < min <= max, got {values!r}')
    return float(values[0]), float(values[1])


def snap_to_reduced_grid(start: int, length: int, extent: int, reduction: int) -> int:
    """The multiple of ``reduction`` nearest to a crop's ``start`` that keeps
    ``[start, start + length)`` inside ``[0, extent)``, all in original-image pixels.

    A crop then starts on a whole pixel of the image decoded at 1/``reduction`` scale, which the
    fast resize needs; its size, and so its area and aspect ratio, stay as drawn.
    """
    return min(math.floor(start / reduction + 0.5), (extent - length) // reduction) * reduction


def resize_box(pixels: np.ndarray, box_size: Tuple[float, float], size: Tuple[int, int],
               interpolation: str) -> np.ndarray:
    """Resize the box ``[0, box_height) x [0, box_width)`` of ``pixels`` to ``size``, as PIL's
    ``resize(size, filter, box=(0, 0, box_width, box_height))`` does: antialiased when
    shrinking, sampling outside the box only inside the partly covered last row and column.

    Args:
        pixels: uint8 ``(H, W, 3)`` with ``H = ceil(box_height)``, ``W = ceil(box_width)``.
        box_size: ``(box_height, box_width)``; a fractional side must be at least the output
            side (torch skips a pass whose input and output sizes agree).
        size: output ``(height, width)``.
        interpolation: a key of ``PIL_INTERPOLATIONS``.

    Returns:
        uint8 ``(height, width, 3)``. For ``TORCH_FILTERS`` a view of channel-planar memory,
        the layout ``PackInputs`` copies into a CHW tensor at the cost of one ``memcpy``.
    """
    box_height, box_width = box_size
    if interpolation not in TORCH_FILTERS:
        resized = Image.fromarray(pixels).resize((size[1], size[0]),
                                                 PIL_INTERPOLATIONS[interpolation],
                                                 box=(0, 0, box_width, box_height))
        return np.asarray(resized)
    if not (pixels.flags.writeable and pixels.flags.c_contiguous):
        pixels = pixels.copy()  # torch.from_numpy warns on decoded images, which are read-only
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)
    return resize_box_tensor(tensor, box_size, size, interpolation).permute(1, 2, 0).numpy()


def resize_box_tensor(image: torch.Tensor, box_size: Tuple[float, float], size: Tuple[int, int],
                      interpolation: str) -> torch.Tensor:
    """:func:`resize_box` for a ``(3, H, W)`` tensor on any device, ``interpolation`` one of
    ``TORCH_FILTERS``; returns a uint8 ``(3, height, width)`` tensor on the image's device.

    A uint8 image on the CPU is resampled in uint8 (PIL's integer kernels). Torch has no uint8
    antialiased kernels elsewhere (CUDA), so there, and for a float image (0-255 scale), the
    image is resampled in float32 and rounded and clamped back to uint8: about a tenth of a grey
    level from the uint8 kernels on average (they round their weights to 16 bits), 2 at most.
    """
    batch = image.unsqueeze(0)
    if batch.dtype != torch.uint8 or batch.device.type != 'cpu':
        batch = batch.float()
    if tuple(image.shape[1:]) == tuple(box_size):
        resized = F.interpolate(batch, size=size, mode=interpolation, antialias=True)
    else:
        # A fractional box: the scale factor sets the sampling step. The output then has
        # floor(input side * factor) >= size pixels (the input covers the box); a factor larger
        # by 1e-9 (a shift of under 1e-6 px) keeps float rounding from giving size - 1.
        factors = tuple(out / side * (1 + 1e-9) for out, side in zip(size, box_size))
        resized = F.interpolate(batch, scale_factor=factors, mode=interpolation,
                                antialias=True, recompute_scale_factor=False)
        resized = resized[:, :, :size[0], :size[1]]
    if resized.dtype != torch.uint8:
        resized = resized.round_().clamp_(0, 255).to(torch.uint8)
    return resized[0]


@TRANSFORMS.register_module()
class RandomResizedCrop(BaseTransform):
    """Crop a random area and aspect ratio, then resize it to ``size`` (the FastMIM input).

    Sampling follows torchvision's ``RandomResizedCrop.get_params``: up to 10 draws of an area
    fraction uniform in ``scale`` and an aspect ratio log-uniform in ``ratio``; the first box that
    fits is placed uniformly; if none fits, a central crop clamped to ``ratio`` is used.
    Randomness comes from ``numpy.random``, which fastmim's datasets seed per sample
    (``SeededSamples``) and mmengine per DataLoader worker under other datasets. The
    resize is antialiased when shrinking, with PIL's filters, as on torchvision's PIL path:
    bilinear and bicubic run in torch (:func:`resize_box`), a fraction of a grey level from
    PIL on average (see ``TORCH_FILTERS``).

    With ``LoadImageRGB(lazy=True)`` before it, the box is drawn from the header's size first
    and the JPEG is then decoded at the largest 1/2, 1/4 or 1/8 scale that keeps the box at
    least ``reducing_gap`` times the output size, and only the box's pixels are converted and
    resized. The box keeps its drawn size; its corner moves to the nearest whole pixel of the
    reduced decode (:func:`snap_to_reduced_grid`, under ``reduction`` original pixels), and
    ``crop_bbox`` records the box actually used. Against a full decode of that box, the
    output differs by the JPEG DCT-domain scaling only (about one grey level on average at
    ``reducing_gap=1``). ``reducing_gap`` plays the role it has in PIL's ``thumbnail``: larger
    values keep more resolution for the resize, at the cost of speed.

    With ``decode='device'`` the JPEG is decoded by the model instead, on its device (nvJPEG
    on a GPU), where a DataLoader worker's CPU core cannot keep up: the box is drawn from the
    header's size as above, but nothing is decoded here. The file's bytes go on as a 1-D uint8
    tensor in ``jpeg_bytes`` with the box (not snapped: no reduced decoding happens), and
    ``JpegDecodePreprocessor`` decodes, crops, resizes and flips them on the device. Files
    nvJPEG cannot take (other formats, CMYK/YCCK JPEGs, images decoded already) are decoded
    here as with ``decode='worker'``, so a batch can mix both kinds; so are JPEGs with an EXIF
    orientation, which nvJPEG would leave on their side.

    Args:
        size: output (height, width), or one int for a square.
        scale: range of the crop's area as a fraction of the image area.
        ratio: range of the crop's width / height.
        interpolation: PIL filter name: 'bicubic', 'bilinear', 'nearest', 'lanczos', 'box',
            'hamming'; with ``decode='device'`` 'bicubic' or 'bilinear', the filters torch
            resamples.
        reducing_gap: see above; only used for lazily loaded images. Must be >= 1.
        decode: 'worker' (decode here) or 'device' (see above; needs
            ``LoadImageRGB(lazy=True)`` before it and ``JpegDecodePreprocessor`` in the model).

    Reads ``img`` (uint8 HWC) or ``lazy_img``; writes ``img`` (see :func:`resize_box` for its
    memory layout), ``img_shape`` and ``crop_bbox`` (x1, y1, x2, y2 in original-image pixels).
    Device decoding writes ``jpeg_bytes`` and ``interpolation`` instead of ``img``.
    """

    def __init__(self,
                 size: Union[int, Sequence[int]] = 128,
                 scale: Sequence[float] = (0.2, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3),
                 interpolation: str = 'bicubic',
                 reducing_gap: float = 1.0,
                 decode: str = 'worker'):
        self.size = _pair(size, 'size')
        self.scale = _range(scale, 'scale')
        self.ratio = _range(ratio, 'ratio')
        if interpolation not in PIL_INTERPOLATIONS:
            raise ValueError(f'interpolation must be one of {sorted(PIL_INTERPOLATIONS)}, '
                             f'got {interpolation!r}')
        self.interpolation = interpolation
        if reducing_gap < 1:
            raise ValueError(f'reducing_gap must be >= 1, got {reducing_gap}')
        self.reducing_gap = reducing_gap
        if decode not in DECODE_PLACES:
            raise ValueError(f'decode must be one of {DECODE_PLACES}, got {decode!r}')
        if decode == 'device' and interpolation not in TORCH_FILTERS:
            raise ValueError(f"decode='device' resizes on the device with torch, which has the "
                             f'filters {TORCH_FILTERS}; got interpolation={interpolation!r}')
        self.decode = decode

    def sample_crop(self, height: int, width: int) -> Tuple[int, int, int, int]:
        """Draw a crop box ``(top, left, crop_height, crop_width)`` for an image of this size."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(MAX_ATTEMPTS):
            target_area = area * np.random.uniform(*self.scale)
            aspect_ratio = math.exp(np.random.uniform(*log_ratio))
            crop_width = int(round(math.sqrt(target_area * aspect_ratio)))
            crop_height = int(round(math.sqrt(target_area / aspect_ratio)))
            if 0 < crop_width <= width and 0 < crop_height <= height:
                top = np.random.randint(0, height - crop_height + 1)
                left = np.random.randint(0, width - crop_width + 1)
                return top, left, crop_height, crop_width
        return self._central_crop(height, width)

    def _central_crop(self, height: int, width: int) -> Tuple[int, int, int, int]:
        image_ratio = width / height
        if image_ratio < self.ratio[0]:
            crop_width, crop_height = width, int(round(width / self.ratio[0]))
        elif image_ratio > self.ratio[1]:
            crop_width, crop_height = int(round(height * self.ratio[1])), height
        else:
            crop_width, crop_height = width, height
        return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width

    def draft_reduction(self, crop_height: int, crop_width: int) -> int:
        """Largest JPEG draft reduction that keeps the crop >= reducing_gap x the output."""
        room = min(crop_height / self.size[0], crop_width / self.size[1]) / self.reducing_gap
        return next((r for r in JPEG_DRAFT_REDUCTIONS if room >= r), 1)

    def transform(self, results: dict) -> Optional[dict]:
        lazy_image = results.pop('lazy_img', None)
        if lazy_image is not None:
            height, width = lazy_image.height, lazy_image.width
        elif 'img' in results:
            height, width = results['img'].shape[:2]
        else:
            raise KeyError(f'{type(self).__name__} needs results["img"] or results["lazy_img"] '
                           f'(from LoadImageRGB); got keys {sorted(results)}')

        top, left, crop_height, crop_width = self.sample_crop(height, width)
        if self.decode == 'device' and self._device_decodable(lazy_image):
            # bytearray: a writable copy, which torch.frombuffer takes without a warning.
            results['jpeg_bytes'] = torch.frombuffer(bytearray(lazy_image.data),
                                                     dtype=torch.uint8)
            results['interpolation'] = self.interpolation
            return self._record_box(results, top, left, crop_height, crop_width)
        if lazy_image is None:
            reduction = 1
            pixels = results['img'][top:top + crop_height, left:left + crop_width]
        else:
            reduction = lazy_image.draft(self.draft_reduction(crop_height, crop_width))
            top = snap_to_reduced_grid(top, crop_height, height, reduction)
            left = snap_to_reduced_grid(left, crop_width, width, reduction)
            pixels = lazy_image.decode_region(
                (left // reduction, top // reduction,
                 left // reduction + math.ceil(crop_width / reduction),
                 top // reduction + math.ceil(crop_height / reduction)))
            if pixels is None:
                return None

        results['img'] = resize_box(pixels, (crop_height / reduction, crop_width / reduction),
                                    self.size, self.interpolation)
        return self._record_box(results, top, left, crop_height, crop_width)

    def _record_box(self, results: dict, top: int, left: int, crop_height: int,
                    crop_width: int) -> dict:
        results['img_shape'] = self.size
        results['crop_bbox'] = (left, top, left + crop_width, top + crop_height)
        return results

    @staticmethod
    def _device_decodable(lazy_image: Optional[LazyImage]) -> bool:
        return (lazy_image is not None and lazy_image.data is not None
                and lazy_image.image.format == 'JPEG'
                and lazy_image.image.mode in DEVICE_JPEG_MODES
                and lazy_image.orientation == 1)

    def __repr__(self):
        return (f'{type(self).__name__}(size={self.size}, scale={self.scale}, '
                f'ratio={self.ratio}, interpolation={self.interpolation!r}, '
                f'reducing_gap={self.reducing_gap}, decode={self.decode!r})')


@TRANSFORMS.register_module()
class RandomHorizontalFlip(BaseTransform):
    """Mirror left-right with probability ``prob``, also a sample whose decoding
    ``RandomResizedCrop(decode='device')`` left to the model: it must come after the crop.

    Records ``flip`` (bool) and ``flip_direction`` (``'horizontal'`` or ``None``) as mmcv's
    ``RandomFlip`` does, and flips ``img`` when the sample has one. A sample left undecoded by
    ``RandomResizedCrop(decode='device')`` is flipped by ``JpegDecodePreprocessor`` after it
    decodes it; mmcv's ``RandomFlip`` would fail on it, as it needs ``img``. The flip is a view
    (``PackInputs`` copies it once). Before the crop (``lazy_img`` still there) it is an error:
    the crop decodes the files nvJPEG cannot take in the worker, which would record this flip
    without applying it.

    Args:
        prob: probability of a flip, in [0, 1].
    """

    def __init__(self, prob: float = 0.5):
        if not 0 <= prob <= 1:
            raise ValueError(f'prob must be in [0, 1], got {prob!r}')
        self.prob = prob

    def transform(self, results: dict) -> dict:
        if 'lazy_img' in results:
            raise ValueError(f'{type(self).__name__} must come after RandomResizedCrop: it got '
                             f'an image not decoded yet (lazy_img, from LoadImageRGB(lazy=True)), '
                             f'and would not flip the pixels the crop then decodes')
        flip = bool(np.random.rand() < self.prob)
        results['flip'] = flip
        results['flip_direction'] = 'horizontal' if flip else None
        if flip and 'img' in results:
            results['img'] = results['img'][:, ::-1]
        return results

    def __repr__(self):
        return f'{type(self).__name__}(prob={self.prob})'
