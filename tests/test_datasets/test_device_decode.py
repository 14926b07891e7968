"""The worker's half of device-side JPEG decoding: RandomResizedCrop(decode='device') draws the
box and ships the file's bytes, RandomHorizontalFlip records the flip, PackInputs packs both;
resize_box_tensor's float path (CUDA's) agrees with its uint8 one (the CPU's)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image
from skimage import data as skdata

from fastmim.datasets.transforms import (LoadImageRGB, PackInputs, RandomHorizontalFlip,
                                         RandomResizedCrop)
from fastmim.datasets.transforms.formatting import DEVICE_DECODE_META_KEYS
from fastmim.datasets.transforms.processing import resize_box_tensor


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp('device_decode')
    coffee = Image.fromarray(skdata.coffee())  # a real 400 x 600 RGB photo
    coffee.save(folder / 'coffee.jpg', quality=95)
    coffee.save(folder / 'coffee.png')
    coffee.convert('CMYK').save(folder / 'cmyk.jpg', quality=95)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # shown turned 90 degrees clockwise: nvJPEG ignores it
    coffee.save(folder / 'rotated.jpg', quality=95, exif=exif)
    return {name: str(folder / name)
            for name in ('coffee.jpg', 'coffee.png', 'cmyk.jpg', 'rotated.jpg')}


def crop_with_seed(path, decode, seed=3):
    np.random.seed(seed)
    crop = RandomResizedCrop((96, 128), reducing_gap=1.0, decode=decode)
    return crop(LoadImageRGB(lazy=True)(dict(img_path=path)))


def test_device_decode_ships_the_file_bytes_and_the_drawn_box(files):
    results = crop_with_seed(files['coffee.jpg'], 'device')
    assert 'img' not in results and 'lazy_img' not in results
    data = results['jpeg_bytes']
    assert data.dtype == torch.uint8 and data.dim() == 1
    assert data.numpy().tobytes() == Path(files['coffee.jpg']).read_bytes()
    # The same draws as the worker's crop, but the box as drawn: no snapping to a reduced grid.
    np.random.seed(3)
    top, left, height, width = RandomResizedCrop((96, 128)).sample_crop(400, 600)
    assert results['crop_bbox'] == (left, top, left + width, top + height)
    assert results['img_shape'] == (96, 128) and results['ori_shape'] == (400, 600)
    assert results['interpolation'] == 'bicubic'


@pytest.mark.parametrize('name', ['coffee.png', 'cmyk.jpg', 'rotated.jpg'])
def test_files_the_device_cannot_decode_are_decoded_in_the_worker(files, name):
    device = crop_with_seed(files[name], 'device')
    worker = crop_with_seed(files[name], 'worker')
    assert 'jpeg_bytes' not in device
    np.testing.assert_array_equal(device['img'], worker['img'])
    assert device['crop_bbox'] == worker['crop_bbox']


def test_flip_records_and_flips_what_is_there(files):
    image = skdata.coffee()
    flipped = RandomHorizontalFlip(prob=1.0)(dict(img=image))
    np.testing.assert_array_equal(flipped['img'], image[:, ::-1])
    assert flipped['flip'] is True and flipped['flip_direction'] == 'horizontal'
    kept = RandomHorizontalFlip(prob=0.0)(dict(img=image))
    assert kept['img'] is image and kept['flip'] is False and kept['flip_direction'] is None

    undecoded = RandomHorizontalFlip(prob=1.0)(crop_with_seed(files['coffee.jpg'], 'device'))
    assert undecoded['flip'] is True and 'img' not in undecoded

    np.random.seed(0)
    flip = RandomHorizontalFlip(prob=0.3)
    rate = np.mean([flip(dict())['flip'] for _ in range(2000)])
    assert abs(rate - 0.3) < 0.04, rate


def test_flip_before_the_crop_is_an_error(files):
    """Before the crop it could only record the flip: the crop decodes what nvJPEG cannot
    take (PNG, CMYK) in the worker, unflipped."""
    lazy = LoadImageRGB(lazy=True)(dict(img_path=files['coffee.png']))
    with pytest.raises(ValueError, match='must come after RandomResizedCrop.*lazy_img'):
        RandomHorizontalFlip(prob=1.0)(lazy)


def test_pack_inputs_packs_the_bytes_with_what_the_device_needs(files):
    results = RandomHorizontalFlip(prob=1.0)(crop_with_seed(files['coffee.jpg'], 'device'))
    packed = PackInputs(meta_keys=('sample_idx', ))(results)
    assert packed['inputs'] is results['jpeg_bytes']
    meta = packed['data_samples'].metainfo
    assert set(meta) == set(DEVICE_DECODE_META_KEYS)
    assert meta['crop_bbox'] == results['crop_bbox'] and meta['flip'] is True


@pytest.mark.parametrize('box_size, size', [((301, 389), (96, 128)), ((50, 40), (96, 128))])
def test_float_resize_of_the_device_is_close_to_the_uint8_one(box_size, size):
    """CUDA has no uint8 antialiased kernels: there the resize runs in float32 and rounds.
    Shrinking and enlarging alike stay a tenth of a grey level from the CPU's uint8 kernels on
    average (which round their weights to 16 bits), 2 levels at most."""
    image = torch.from_numpy(skdata.coffee()[:box_size[0], :box_size[1]].copy()).permute(2, 0, 1)
    uint8 = resize_box_tensor(image, box_size, size, 'bicubic')
    float32 = resize_box_tensor(image.float(), box_size, size, 'bicubic')
    assert uint8.dtype == float32.dtype == torch.uint8 and float32.shape == (3, ) + size
    difference = (uint8.int() - float32.int()).abs()
    assert difference.float().mean() < 0.25 and difference.max() <= 2, difference.max()


def test_invalid_decode_settings_are_named():
    with pytest.raises(ValueError, match=r"decode must be one of \('worker', 'device'\)"):
        RandomResizedCrop(decode='gpu')
    with pytest.raises(ValueError, match="interpolation='lanczos'"):
        RandomResizedCrop(interpolation='lanczos', decode='device')
    with pytest.raises(ValueError, match=r'prob must be in \[0, 1\]'):
        RandomHorizontalFlip(prob=1.5)
