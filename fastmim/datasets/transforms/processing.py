"""Geometric augmentation for pre-training: torchvision-style random resized crop."""
import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np
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


@TRANSFORMS.register_module()
class RandomResizedCrop(BaseTransform):
    """Crop a random area and aspect ratio, then resize it to ``size`` (the FastMIM input).

    Sampling follows torchvision's ``RandomResizedCrop.get_params``: up to 10 draws of an area
    fraction uniform in ``scale`` and an aspect ratio log-uniform in ``ratio``; the first box that
    fits is placed uniformly; if none fits, a central crop clamped to ``ratio`` is used. The
    resize is PIL's (antialiased when shrinking), as on torchvision's PIL path, so crops match
    torchvision's exactly. Randomness comes from ``numpy.random``, which mmengine seeds per
    DataLoader worker.

    With ``LoadImageRGB(lazy=True)`` before it, the crop is drawn from the header's size first
    and the JPEG is then decoded at the largest 1/2, 1/4 or 1/8 scale that keeps the crop at
    least ``reducing_gap`` times the output size: a 128-px crop of a large photo costs a
    fraction of a full decode. ``reducing_gap`` plays the role it has in PIL's ``thumbnail``;
    larger values trade speed for closeness to the full-resolution result.

    Args:
        size: output (height, width), or one int for a square.
        scale: range of the crop's area as a fraction of the image area.
        ratio: range of the crop's width / height.
        interpolation: PIL filter name: 'bicubic', 'bilinear', 'nearest', 'lanczos', 'box',
            'hamming'.
        reducing_gap: see above; only used for lazily loaded images. Must be >= 1.

    Reads ``img`` (uint8 HWC) or ``lazy_img``; writes ``img``, ``img_shape`` and ``crop_bbox``
    (x1, y1, x2, y2 in original-image pixels).
    """

    def __init__(self,
                 size: Union[int, Sequence[int]] = 128,
                 scale: Sequence[float] = (0.2, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3),
                 interpolation: str = 'bicubic',
                 reducing_gap: float = 2.0):
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
            img, img_scale = results['img'], 1.0
        else:
            decoded = lazy_image.decode(self.draft_reduction(crop_height, crop_width))
            if decoded is None:
                return None
            img, img_scale = decoded

        box = (left, top, left + crop_width, top + crop_height)
        results['img'] = self._crop_and_resize(img, [v * img_scale for v in box])
        results['img_shape'] = self.size
        results['crop_bbox'] = box
        return results

    def _crop_and_resize(self, img: np.ndarray, box: Sequence[float]) -> np.ndarray:
        """Resize the (possibly fractional) ``box`` of ``img`` to ``self.size``.

        The image is first cropped to the whole pixels that cover the box, so that, as in
        torchvision's crop-then-resize, the filter never reads pixels outside the crop; for
        integer boxes this is exactly torchvision's result.
        """
        x1, y1, x2, y2 = box
        left, top = math.floor(x1), math.floor(y1)
        right = min(math.ceil(x2), img.shape[1])
        bottom = min(math.ceil(y2), img.shape[0])
        crop = Image.fromarray(img[top:bottom, left:right])
        resized = crop.resize((self.size[1], self.size[0]),
                              PIL_INTERPOLATIONS[self.interpolation],
                              box=(x1 - left, y1 - top, min(x2, right) - left,
                                   min(y2, bottom) - top))
        return np.asarray(resized)

    def __repr__(self):
        return (f'{type(self).__name__}(size={self.size}, scale={self.scale}, '
                f'ratio={self.ratio}, interpolation={self.interpolation!r}, '
                f'reducing_gap={self.reducing_gap})')
