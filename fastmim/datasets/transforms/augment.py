"""Fine-tuning transforms on decoded uint8 RGB images: timm's RandAugment and the evaluation crop.

Random erasing and mixup/cutmix are not here: they act on normalised tensors and on pairs of
images, so they run on the device batch in ``fastmim.models.ClsDataPreprocessor``.
"""
import math

import numpy as np
from mmcv.transforms import BaseTransform
from PIL import Image, ImageOps

from fastmim.constants import IMAGENET_MEAN
from fastmim.checks import check_positive_int
from fastmim.registry import TRANSFORMS

from .processing import PIL_INTERPOLATIONS


def _check_interpolation(interpolation: str, who: str) -> None:
    if interpolation not in PIL_INTERPOLATIONS:
        raise ValueError(f'{who}: interpolation must be one of {sorted(PIL_INTERPOLATIONS)}, '
                         f'got {interpolation!r}')


def _check_rgb(results: dict, who: str) -> np.ndarray:
    img = results.get('img')
    if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3
            and img.dtype == np.uint8):
        raise ValueError(f'{who} expects an RGB uint8 (H, W, 3) array in results["img"] (from '
                         f'LoadImageRGB), got {type(img).__name__} with shape '
                         f'{getattr(img, "shape", None)}')
    return img


POSTERIZE_OPS = ('Posterize', 'PosterizeIncreasing', 'PosterizeOriginal')


def posterize_keeping_zero_bits(img: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    """timm's posterize op with older Pillow's meaning of 0 bits: a black image.

    At magnitude 10 (reached by 'rand-m9-mstd0.5' whenever the noisy magnitude hits its upper
    bound) ``PosterizeIncreasing`` keeps 0 bits. Older Pillow, which the recipe was tuned with,
    returned black; current Pillow raises ``ValueError: bits must be between or equal to 1 and 8``
    and would stop training.
    """
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


@TRANSFORMS.register_module()
class RandAugment(BaseTransform):
    """timm's RandAugment (``rand_augment_transform``) with the hyper-parameters timm derives
    for an ``img_size`` training crop.

    As timm's ``create_transform`` does, translations go up to ``0.45 * img_size`` pixels,
    pixels uncovered by geometric ops are filled with the dataset mean colour, and resampling
    uses ``interpolation``. ``'rand-m9-mstd0.5-inc1'`` (the FastMIM / MAE recipe) is magnitude 9
    with noise std 0.5, two ops per image, the increasing-severity op set. The posterize ops
    get :func:`posterize_keeping_zero_bits`, so that current Pillow does not reject 0 bits.

    Args:
        config_str: timm's RandAugment string, starting with ``'rand'``.
        img_size: side of the crop it is applied to (after ``RandomResizedCrop``).
        interpolation: PIL filter name for rotations, shears and translations.
        mean: fill colour on the 0-255 scale (rounded), default the ImageNet mean.
    """

    def __init__(self,
                 config_str: str = 'rand-m9-mstd0.5-inc1',
                 img_size: int = 224,
                 interpolation: str = 'bicubic',
                 mean=IMAGENET_MEAN):
        if not isinstance(config_str, str) or config_str.split('-')[0] != 'rand':
            raise ValueError(f"RandAugment: config_str must be timm's RandAugment string "
                             f"starting with 'rand-', e.g. 'rand-m9-mstd0.5-inc1', "
                             f'got {config_str!r}')
        _check_interpolation(interpolation, 'RandAugment')
        self.config_str = config_str
        self.img_size = img_size
        self.interpolation = interpolation
        hparams = dict(
            translate_const=int(img_size * 0.45),
            img_mean=tuple(min(255, round(value)) for value in mean),
            interpolation=PIL_INTERPOLATIONS[interpolation])
        # Imported here: timm loads torchvision (over a second), not for `import fastmim`.
        from timm.data.auto_augment import rand_augment_transform
        self.augment = rand_augment_transform(config_str, hparams)
        for op in self.augment.ops:
            if op.name in POSTERIZE_OPS:
                op.aug_fn = posterize_keeping_zero_bits

    def transform(self, results: dict) -> dict:
        img = _check_rgb(results, 'RandAugment')
        results['img'] = np.asarray(self.augment(Image.fromarray(img)))
        return results

    def __repr__(self):
        return (f'{type(self).__name__}(config_str={self.config_str!r}, '
                f'img_size={self.img_size}, interpolation={self.interpolation!r})')


@TRANSFORMS.register_module()
class ResizeShorterCenterCrop(BaseTransform):
    """The evaluation crop of MAE / FastMIM / timm: shorter side to ``floor(crop_size /
    crop_pct)`` (256 for 224 / 0.875), then the central ``crop_size`` square.

    Exactly torchvision's ``Resize(int)`` + ``CenterCrop`` on PIL images, which timm's
    evaluation transform is: the longer side is truncated (``int(256 * long / short)``), the
    filter is PIL's (antialiased when shrinking), the crop offset is
    ``round((size - crop_size) / 2)``. mmcv's ``Resize(keep_ratio=True)`` rounds the longer side
    and resizes with OpenCV by default, so it shifts some crops by a pixel and aliases.

    An image whose resized longer side would exceed ``MAX_RESIZED_RATIO`` times the shorter
    (a strip, a 1-pixel line) has only the crop's region of the source resized, with PIL's
    ``box``: the same filter and crop, its pixels within rounding of torchvision's (PIL's
    filter positions are computed from the box in floating point), without an intermediate
    image of millions of pixels.

    Args:
        crop_size: side of the output square.
        crop_pct: fraction of the resized shorter side that the crop keeps, in (0, 1].
        interpolation: PIL filter name.
    """

    MAX_RESIZED_RATIO = 64

    def __init__(self, crop_size: int = 224, crop_pct: float = 0.875,
                 interpolation: str = 'bicubic'):
        check_positive_int('ResizeShorterCenterCrop', 'crop_size', crop_size)
        if not 0 < crop_pct <= 1:
            raise ValueError(f'ResizeShorterCenterCrop: crop_pct must be in (0, 1], '
                             f'got {crop_pct!r}')
        _check_interpolation(interpolation, 'ResizeShorterCenterCrop')
        self.crop_size = crop_size
        self.crop_pct = crop_pct
        self.resize_size = math.floor(crop_size / crop_pct)
        self.interpolation = interpolation

    def resized_shape(self, height: int, width: int):
        """(height, width) after the shorter side goes to ``resize_size`` (torchvision's rule)."""
        if width <= height:
            return int(self.resize_size * height / width), self.resize_size
        return self.resize_size, int(self.resize_size * width / height)

    def transform(self, results: dict) -> dict:
        img = _check_rgb(results, 'ResizeShorterCenterCrop')
        source_height, source_width = img.shape[:2]
        height, width = self.resized_shape(source_height, source_width)
        top = int(round((height - self.crop_size) / 2.))
        left = int(round((width - self.crop_size) / 2.))
        resample = PIL_INTERPOLATIONS[self.interpolation]
        if max(height, width) <= self.MAX_RESIZED_RATIO * self.resize_size:
            resized = Image.fromarray(img).resize((width, height), resample)
            cropped = resized.crop((left, top, left + self.crop_size, top + self.crop_size))
        else:
            # The crop's region of the source, resized alone: a 20000 x 1 strip resized whole
            # would be 5,120,000 x 256 pixels (6 GB, 23 s) for a 224 x 224 crop.
            scale_x, scale_y = source_width / width, source_height / height
            box = (left * scale_x, top * scale_y, (left + self.crop_size) * scale_x,
                   (top + self.crop_size) * scale_y)
            cropped = Image.fromarray(img).resize((self.crop_size, self.crop_size), resample,
                                                  box=box)
        results['img'] = np.asarray(cropped)
        results['img_shape'] = (self.crop_size, self.crop_size)
        return results

    def __repr__(self):
        return (f'{type(self).__name__}(crop_size={self.crop_size}, crop_pct={self.crop_pct}, '
                f'interpolation={self.interpolation!r})')
