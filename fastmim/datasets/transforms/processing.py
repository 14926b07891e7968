"""Geometric augmentation for pre-training: torchvision-style random resized crop."""
import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmcv.transforms import BaseTransform
from PIL import Image

from fastmim.registry import TRANSFORMS

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
    tensor = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)
    if pixels.shape[:2] == (box_height, box_width):
        resized = F.interpolate(tensor, size=size, mode=interpolation, antialias=True)
    else:
        # A fractional box: the scale factor sets the sampling step. The output then has
        # floor(input side * factor) >= size pixels (the input covers the box); a factor larger
        # by 1e-9 (a shift of under 1e-6 px) keeps float rounding from giving size - 1.
        factors = tuple(out / side * (1 + 1e-9) for out, side in zip(size, box_size))
        resized = F.interpolate(tensor, scale_factor=factors, mode=interpolation,
                                antialias=True, recompute_scale_factor=False)
        resized = resized[:, :, :size[0], :size[1]]
    return resized[0].permute(1, 2, 0).numpy()


@TRANSFORMS.register_module()
class RandomResizedCrop(BaseTransform):
    """Crop a random area and aspect ratio, then resize it to ``size`` (the FastMIM input).

    Sampling follows torchvision's ``RandomResizedCrop.get_params``: up to 10 draws of an area
    fraction uniform in ``scale`` and an aspect ratio log-uniform in ``ratio``; the first box that
    fits is placed uniformly; if none fits, a central crop clamped to ``ratio`` is used.
    Randomness comes from ``numpy.random``, which mmengine seeds per DataLoader worker. The
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

    Args:
        size: output (height, width), or one int for a square.
        scale: range of the crop's area as a fraction of the image area.
        ratio: range of the crop's width / height.
        interpolation: PIL filter name: 'bicubic', 'bilinear', 'nearest', 'lanczos', 'box',
            'hamming'.
        reducing_gap: see above; only used for lazily loaded images. Must be >= 1.

    Reads ``img`` (uint8 HWC) or ``lazy_img``; writes ``img`` (see :func:`resize_box` for its
    memory layout), ``img_shape`` and ``crop_bbox`` (x1, y1, x2, y2 in original-image pixels).
    """

    def __init__(self,
                 size: Union[int, Sequence[int]] = 128,
                 scale: Sequence[float] = (0.2, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3),
                 interpolation: str = 'bicubic',
                 reducing_gap: float = 1.0):
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
        results['img_shape'] = self.size
        results['crop_bbox'] = (left, top, left + crop_width, top + crop_height)
        return results

    def __repr__(self):
        return (f'{type(self).__name__}(size={self.size}, scale={self.scale}, '
                f'ratio={self.ratio}, interpolation={self.interpolation!r}, '
                f'reducing_gap={self.reducing_gap})')
