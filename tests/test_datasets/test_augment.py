"""Fine-tuning transforms: the evaluation crop against timm's own evaluation transform, and
RandAugment against timm's ``rand_augment_transform`` used directly."""
import random

import numpy as np
import pytest
from PIL import Image, ImageOps
from skimage import data as skdata
from timm.data.auto_augment import rand_augment_transform
from timm.data.transforms_factory import transforms_imagenet_eval

from fastmim.datasets.transforms import RandAugment, ResizeShorterCenterCrop
from fastmim.datasets.transforms.augment import posterize_keeping_zero_bits
from fastmim.registry import TRANSFORMS

# Real photos of several shapes: landscape, portrait, square, and sizes where rounding and
# truncation of the longer side differ (640 x 427 -> 383.6).
PHOTOS = {
    'rocket': skdata.rocket(),        # 427 x 640
    'coffee': skdata.coffee(),        # 400 x 600
    'chelsea': skdata.chelsea(),      # 300 x 451
    'astronaut': skdata.astronaut(),  # 512 x 512
}


@pytest.mark.parametrize('name', sorted(PHOTOS) + ['portrait'])
@pytest.mark.parametrize('crop_size', [224, 160])
def test_eval_crop_equals_timm_eval_transform(name, crop_size):
    img = PHOTOS['rocket'].transpose(1, 0, 2).copy() if name == 'portrait' else PHOTOS[name]
    reference = transforms_imagenet_eval(img_size=crop_size, crop_pct=0.875,
                                         interpolation='bicubic', use_prefetcher=True)
    expected = np.asarray(reference(Image.fromarray(img))).transpose(1, 2, 0)  # CHW uint8

    results = ResizeShorterCenterCrop(crop_size=crop_size)(dict(img=img))

    assert results['img'].shape == (crop_size, crop_size, 3)
    assert results['img_shape'] == (crop_size, crop_size)
    np.testing.assert_array_equal(results['img'], expected)


def test_eval_crop_resizes_the_shorter_side_to_256():
    crop = ResizeShorterCenterCrop(crop_size=224, crop_pct=0.875)
    assert crop.resize_size == 256
    assert crop.resized_shape(427, 640) == (256, 383)  # truncated, as torchvision
    assert crop.resized_shape(640, 427) == (383, 256)


@pytest.mark.parametrize('kwargs, match', [
    (dict(crop_pct=1.2), 'crop_pct'),
    (dict(crop_size=0), 'crop_size'),
    (dict(interpolation='cubic'), 'interpolation'),
])
def test_eval_crop_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResizeShorterCenterCrop(**kwargs)


def test_transforms_reject_non_rgb_images():
    with pytest.raises(ValueError, match='RGB uint8'):
        ResizeShorterCenterCrop()(dict(img=skdata.camera()))
    with pytest.raises(ValueError, match='RGB uint8'):
        RandAugment()(dict(img=skdata.camera()))


def seeded(seed):
    random.seed(seed)
    np.random.seed(seed)


def test_rand_augment_equals_timm_with_the_recipe_hparams():
    """Same seeds, same ops: our wrapper gives exactly what timm gives with the hyper-parameters
    timm's create_transform derives for a 224 crop with ImageNet mean and bicubic resampling."""
    timm_augment = rand_augment_transform(
        'rand-m9-mstd0.5-inc1',
        dict(translate_const=int(224 * 0.45), img_mean=(124, 116, 104),
             interpolation=Image.Resampling.BICUBIC))
    ours = TRANSFORMS.build(dict(type='RandAugment', config_str='rand-m9-mstd0.5-inc1',
                                 img_size=224, interpolation='bicubic'))
    img = np.asarray(Image.fromarray(PHOTOS['astronaut']).resize((224, 224)))
    changed = 0
    for seed in range(12):
        seeded(seed)
        expected = np.asarray(timm_augment(Image.fromarray(img)))
        seeded(seed)
        result = ours(dict(img=img.copy()))['img']
        assert result.shape == img.shape and result.dtype == np.uint8
        np.testing.assert_array_equal(result, expected)
        changed += not np.array_equal(result, img)
    assert changed >= 8  # it does augment


def test_posterize_keeps_zero_bits_as_a_black_image():
    img = Image.fromarray(PHOTOS['chelsea'])
    assert not np.asarray(posterize_keeping_zero_bits(img, 0)).any()
    np.testing.assert_array_equal(np.asarray(posterize_keeping_zero_bits(img, 3)),
                                  np.asarray(ImageOps.posterize(img, 3)))
    assert posterize_keeping_zero_bits(img, 8) is img


def test_rand_augment_survives_magnitude_10():
    """At magnitude 10, timm's PosterizeIncreasing asks for 0 bits, which current Pillow
    rejects; the wrapper must keep going (the fine-tuning recipe reaches magnitude 10)."""
    augment = RandAugment(config_str='rand-m10-n4-mstd0-inc1', img_size=64)
    img = np.asarray(Image.fromarray(PHOTOS['coffee']).resize((64, 64)))
    seeded(0)
    for _ in range(100):
        assert augment(dict(img=img.copy()))['img'].shape == (64, 64, 3)


@pytest.mark.parametrize('config_str', ['m9-mstd0.5', 'v0', 'augmix-m5'])
def test_rand_augment_rejects_other_policies(config_str):
    with pytest.raises(ValueError, match="starting with 'rand-'"):
        RandAugment(config_str=config_str)


@pytest.mark.parametrize('shape', [(1, 20000), (20000, 3), (5, 40000)])
def test_eval_crop_of_a_strip_resizes_only_the_crop_region(shape):
    """A 20000 x 1 strip was resized whole first (5,120,000 x 256 pixels, 6 GB, 23 s)."""
    rows = np.linspace(0, 255, shape[0] * shape[1]).reshape(shape).astype(np.uint8)
    img = np.repeat(rows[:, :, None], 3, axis=2)
    crop = ResizeShorterCenterCrop(crop_size=224)
    resized = []
    real_resize = Image.Image.resize

    def resize(self, size, *args, **kwargs):
        resized.append(size)
        return real_resize(self, size, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Image.Image, 'resize', resize)
        results = crop(dict(img=img))
    assert resized == [(224, 224)]
    assert results['img'].shape == (224, 224, 3)
    # The middle of a gradient along the longer side: the central crop's values.
    middle = img[shape[0] // 2, shape[1] // 2, 0]
    assert abs(int(results['img'][112, 112, 0]) - int(middle)) <= 2
