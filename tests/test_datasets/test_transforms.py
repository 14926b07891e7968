"""Transforms: decoding every common file mode to RGB, skipping unreadable files, the random
resized crop against torchvision, reduced-size JPEG decoding, and packing."""
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import ExifTags, Image
from skimage import data as skdata
from torchvision.transforms import InterpolationMode
from torchvision.transforms import RandomResizedCrop as TorchvisionRandomResizedCrop

from fastmim.datasets.transforms import (LazyImage, LoadImageRGB, PackInputs, RandomResizedCrop,
                                         UnreadableImageWarning, unreadable_image_count)
from fastmim.datasets.transforms.processing import (PIL_INTERPOLATIONS, resize_box,
                                                    snap_to_reduced_grid)
from fastmim.datasets.utils import build_pipeline
from fastmim.registry import TRANSFORMS


@pytest.fixture(scope='module')
def astronaut():
    return skdata.astronaut()  # a real 512x512 RGB photo


@pytest.fixture(scope='module')
def camera():
    return skdata.camera()  # a real 512x512 grayscale photo


def gray_to_rgb(gray):
    return np.repeat(gray[:, :, None], 3, axis=2)


def palette_lookup(image):
    palette = np.array(image.getpalette(), dtype=np.uint8).reshape(-1, 3)
    return palette[np.asarray(image)]


def write_mode_file(kind, folder, astronaut, camera):
    """Save a real photo in one file mode; return (path, expected RGB, max mean abs error)."""
    rgb = Image.fromarray(astronaut)
    if kind == 'rgb_jpeg':
        path, image, expected, tolerance = 'a.jpg', rgb, astronaut, 3
    elif kind == 'gray_png':
        path, image, expected, tolerance = 'a.png', Image.fromarray(camera), gray_to_rgb(camera), 0
    elif kind == 'gray_jpeg':
        path, image, expected, tolerance = 'a.JPEG', Image.fromarray(camera), gray_to_rgb(camera), 3
    elif kind == 'gray16_png':
        # 16-bit values v * 257 map back to v exactly under 0-65535 -> 0-255 scaling.
        image = Image.fromarray(camera.astype(np.uint16) * 257)
        path, expected, tolerance = 'a.png', gray_to_rgb(camera), 0
    elif kind == 'cmyk_jpeg':
        path, image, expected, tolerance = 'a.jpg', rgb.convert('CMYK'), astronaut, 4
    elif kind == 'palette_png':
        image = rgb.quantize(64)
        path, expected, tolerance = 'a.png', palette_lookup(image), 0
    elif kind == 'palette_transparent_png':
        image = rgb.quantize(64)
        image.info['transparency'] = 0
        path, expected, tolerance = 'a.png', palette_lookup(image), 0
    elif kind == 'rgba_png':
        alpha = np.random.default_rng(0).integers(0, 256, astronaut.shape[:2], dtype=np.uint8)
        image = Image.fromarray(np.dstack([astronaut, alpha]))
        path, expected, tolerance = 'a.png', astronaut, 0
    elif kind == 'bmp':
        path, image, expected, tolerance = 'a.bmp', rgb, astronaut, 0
    elif kind == 'webp_lossless':
        path, image, expected, tolerance = 'a.webp', rgb, astronaut, 0
    path = str(folder / path)
    if kind == 'palette_transparent_png':
        image.save(path, transparency=0)
    elif kind == 'webp_lossless':
        image.save(path, lossless=True)
    else:
        image.save(path, quality=95) if path.lower().endswith(('jpg', 'jpeg')) else image.save(path)
    return path, expected, tolerance


MODE_KINDS = ('rgb_jpeg', 'gray_png', 'gray_jpeg', 'gray16_png', 'cmyk_jpeg', 'palette_png',
              'palette_transparent_png', 'rgba_png', 'bmp', 'webp_lossless')


@pytest.mark.parametrize('kind', MODE_KINDS)
def test_load_decodes_every_mode_to_rgb_uint8(kind, tmp_path, astronaut, camera):
    path, expected, tolerance = write_mode_file(kind, tmp_path, astronaut, camera)
    results = LoadImageRGB()(dict(img_path=path))
    img = results['img']
    assert img.dtype == np.uint8 and img.shape == expected.shape
    assert results['ori_shape'] == results['img_shape'] == expected.shape[:2]
    error = np.abs(img.astype(np.int16) - expected).astype(np.float64)
    assert error.mean() <= tolerance, f'{kind}: mean abs error {error.mean():.2f}'
    # Channel order: per-channel means of the photo must match (RGB, not BGR).
    np.testing.assert_allclose(img.mean(axis=(0, 1)), expected.mean(axis=(0, 1)), atol=2.5)


def test_sixteen_bit_scaling_uses_the_full_range(tmp_path):
    values = np.array([[0, 257, 32896, 65535, 128]], dtype=np.uint16)  # 128 rounds to 0
    path = str(tmp_path / 'ramp.png')
    Image.fromarray(values).save(path)
    img = LoadImageRGB()(dict(img_path=path))['img']
    np.testing.assert_array_equal(img[0, :, 0], [0, 1, 128, 255, 0])


def corrupt_files(folder, astronaut):
    jpeg = folder / 'good.jpg'
    Image.fromarray(astronaut).save(jpeg, quality=90)
    data = jpeg.read_bytes()
    (folder / 'truncated.jpg').write_bytes(data[:len(data) // 2])
    (folder / 'noise.jpg').write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / 'empty.png').write_bytes(b'')
    return [str(folder / name) for name in ('truncated.jpg', 'noise.jpg', 'empty.png',
                                            'does_not_exist.jpg')]


def test_unreadable_files_are_skipped_with_a_warning_and_counted(tmp_path, astronaut):
    for path in corrupt_files(tmp_path, astronaut):
        before = unreadable_image_count()
        with pytest.warns(UnreadableImageWarning, match=re.escape(path)) as record:
            assert LoadImageRGB()(dict(img_path=path)) is None
        assert unreadable_image_count() == before + 1
        assert f'; {before + 1} unreadable files so far' in str(record[0].message)


def test_a_file_skipped_again_is_counted_once_and_warned_of_once(tmp_path, astronaut):
    """An unreadable file drawn again (a refetch, the next epoch) is skipped again: the
    count was of skips ('skipped 3 unreadable images so far' with 2 broken files), and each
    skip a warning (a folder of 4 broken files gave ~1,000 before mmengine gave up). The skips
    are counted in the next file's warning."""
    truncated, noise, empty = corrupt_files(tmp_path, astronaut)[:3]
    before = unreadable_image_count()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        for path in (truncated, noise, truncated, noise, empty):
            assert LoadImageRGB()(dict(img_path=path)) is None
    assert unreadable_image_count() == before + 3
    messages = [str(warning.message) for warning in record
                if issubclass(warning.category, UnreadableImageWarning)]
    assert [message.split(' (')[0] for message in messages] == [
        f'skipped unreadable image {path}' for path in (truncated, noise, empty)]
    assert f'; {before + 1} unreadable files so far in this process' in messages[0]
    assert f'; {before + 2} unreadable files so far in this process' in messages[1]
    assert re.search(rf'; {before + 3} unreadable files so far in this process \(\d+ skips\)$',
                     messages[2])


def test_lazy_load_skips_a_truncated_jpeg_when_the_crop_decodes_it(tmp_path, astronaut):
    truncated = corrupt_files(tmp_path, astronaut)[0]
    results = LoadImageRGB(lazy=True)(dict(img_path=truncated))  # the header is intact
    assert isinstance(results['lazy_img'], LazyImage) and 'img' not in results
    assert results['ori_shape'] == (512, 512)
    before = unreadable_image_count()
    with pytest.warns(UnreadableImageWarning, match=re.escape(truncated)):
        assert RandomResizedCrop(64)(results) is None
    assert unreadable_image_count() == before + 1


def write_oriented_jpeg(folder, pixels, orientation):
    """A JPEG whose EXIF Orientation tag tells viewers to turn or mirror its pixels (how phones
    and cameras store a photo taken upright or on its side)."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    path = str(folder / f'orientation_{orientation}.jpg')
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    return path


def mmcv_decode(path):
    """mmpretrain's loader (LoadImageFromFile: mmcv.imfrombytes, flag 'color'), in RGB."""
    with open(path, 'rb') as file:
        return mmcv.imfrombytes(file.read(), flag='color', channel_order='rgb',
                                backend='pillow')


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_is_applied_as_mmcv_does(orientation, tmp_path, astronaut, monkeypatch):
    """The image comes out upright, as mmcv (so mmpretrain) and OpenCV decode it, on both the
    eager and the lazy path; the lazy crop of a turned image is the eager one exactly (it is
    decoded at full scale, where a reduced decode's grid would be mirrored with the image)."""
    path = write_oriented_jpeg(tmp_path, astronaut[:, :300], orientation)  # 512 x 300 pixels
    expected = mmcv_decode(path)
    eager = LoadImageRGB()(dict(img_path=path))
    np.testing.assert_array_equal(eager['img'], expected)
    assert eager['ori_shape'] == expected.shape[:2]
    lazy = LoadImageRGB(lazy=True)(dict(img_path=path))
    assert lazy['ori_shape'] == expected.shape[:2]

    crop = RandomResizedCrop(64)  # this box would be decoded at 1/4 scale
    monkeypatch.setattr(crop, 'sample_crop', lambda height, width: (20, 10, 280, 260))
    lazy_out, eager_out = crop(lazy), crop(eager)
    assert eager_out['crop_bbox'] == (10, 20, 270, 300)
    if orientation != 1:  # (an upright file is decoded at 1/4 scale, its box snapped)
        assert lazy_out['crop_bbox'] == eager_out['crop_bbox']
        np.testing.assert_array_equal(lazy_out['img'], eager_out['img'])


def test_decoded_images_pass_through(astronaut):
    results = dict(img=astronaut, img_path='in memory')
    assert LoadImageRGB()(results)['img'] is astronaut


def test_random_resized_crop_output_size(astronaut):
    for size, shape in ((128, (128, 128, 3)), ((96, 160), (96, 160, 3))):
        out = RandomResizedCrop(size)(dict(img=astronaut))
        assert out['img'].shape == shape and out['img'].dtype == np.uint8
        assert tuple(out['img_shape']) == shape[:2]


# Largest mean and single-pixel differences from PIL: torch rounds the filter weights to 16 bits
# where PIL keeps 22, which bicubic's negative lobes amplify at sharp edges; lanczos is PIL's.
PIL_TOLERANCES = {'bicubic': (0.25, 8), 'bilinear': (0.25, 1), 'lanczos': (0, 0)}


@pytest.mark.parametrize('interpolation', sorted(PIL_TOLERANCES))
def test_crop_and_resize_match_torchvision_pil_path(interpolation, astronaut, monkeypatch):
    crop = RandomResizedCrop(size=(100, 120), interpolation=interpolation)
    params = (37, 51, 300, 261)  # top, left, height, width
    monkeypatch.setattr(crop, 'sample_crop', lambda height, width: params)
    ours = crop(dict(img=astronaut))['img'].astype(np.int16)
    reference = np.asarray(TF.resized_crop(Image.fromarray(astronaut), *params, [100, 120],
                                           InterpolationMode(interpolation)))
    mean_tolerance, max_tolerance = PIL_TOLERANCES[interpolation]
    difference = np.abs(ours - reference)
    assert difference.mean() <= mean_tolerance and difference.max() <= max_tolerance


@pytest.mark.parametrize('interpolation', sorted(PIL_TOLERANCES))
@pytest.mark.parametrize('box_size, size', [((300.5, 261.25), (100, 120)),
                                            ((128.75, 200.0), (128, 128))])
def test_fractional_box_resize_matches_pil_box_resize(interpolation, box_size, size, astronaut):
    pixels = astronaut[:math.ceil(box_size[0]), :math.ceil(box_size[1])]
    ours = resize_box(pixels, box_size, size, interpolation).astype(np.int16)
    reference = np.asarray(Image.fromarray(pixels).resize(
        size[::-1], PIL_INTERPOLATIONS[interpolation], box=(0, 0, box_size[1], box_size[0])))
    assert ours.shape == size + (3, )
    mean_tolerance, max_tolerance = PIL_TOLERANCES[interpolation]
    difference = np.abs(ours - reference)
    assert difference.mean() <= mean_tolerance and difference.max() <= max_tolerance


def test_crop_statistics_follow_the_definition():
    """Area fraction and aspect ratio stay in their ranges; their distribution (including the
    share of fallback crops) matches torchvision's sampler."""
    height, width, n = 300, 400, 3000
    crop = RandomResizedCrop(scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3))
    np.random.seed(0)
    ours = np.array([crop.sample_crop(height, width) for _ in range(n)], dtype=np.float64)
    torch.manual_seed(0)
    theirs = np.array([
        TorchvisionRandomResizedCrop.get_params(torch.empty(1, height, width), [0.2, 1.0],
                                                [3 / 4, 4 / 3]) for _ in range(n)
    ], dtype=np.float64)

    top, left, h, w = ours.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    area = h * w / (height * width)
    assert area.min() >= 0.2 * 0.98 and area.max() <= 1.0
    aspect = w / h
    assert aspect.min() >= 3 / 4 * 0.98 and aspect.max() <= 4 / 3 * 1.02

    their_area = theirs[:, 2] * theirs[:, 3] / (height * width)
    their_log_aspect = np.log(theirs[:, 3] / theirs[:, 2])
    standard_error = area.std() * math.sqrt(2 / n)
    assert abs(area.mean() - their_area.mean()) < 4 * standard_error
    assert abs(np.log(aspect).mean() - their_log_aspect.mean()) < 4 * np.log(aspect).std() * \
        math.sqrt(2 / n)
    # Boxes are placed uniformly: the crop centre averages the image centre.
    assert abs((left + w / 2).mean() - width / 2) < 5
    assert abs((top + h / 2).mean() - height / 2) < 5


def test_fixed_scale_and_ratio_give_the_defined_box():
    crop = RandomResizedCrop(scale=(0.25, 0.25), ratio=(2.0, 2.0))
    for _ in range(20):
        top, left, h, w = crop.sample_crop(400, 400)
        # area 0.25 * 160000 = 40000 at w / h = 2: w = sqrt(80000), h = sqrt(20000)
        assert (h, w) == (round(math.sqrt(20000)), round(math.sqrt(80000)))


@pytest.mark.parametrize('height, width', [(10, 1000), (1000, 10)])
def test_fallback_is_torchvisions_central_crop(height, width):
    """No box of >= 90 % area fits these shapes at aspect 3/4 to 4/3: central fallback."""
    crop = RandomResizedCrop(scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3))
    reference = TorchvisionRandomResizedCrop.get_params(torch.empty(1, height, width),
                                                        [0.9, 1.0], [3 / 4, 4 / 3])
    assert crop.sample_crop(height, width) == tuple(reference)


@pytest.fixture(scope='module')
def large_jpeg(tmp_path_factory, astronaut):
    path = tmp_path_factory.mktemp('large') / 'astronaut_1024.jpg'
    Image.fromarray(astronaut).resize((1024, 1024), Image.Resampling.BICUBIC).save(path,
                                                                                 quality=95)
    return str(path)


def test_lazy_image_decodes_a_jpeg_region_at_reduced_scale(large_jpeg, astronaut, tmp_path):
    lazy_image = LazyImage.open(large_jpeg)
    assert (lazy_image.width, lazy_image.height) == (1024, 1024)
    assert lazy_image.draft(4) == 4
    region = lazy_image.decode_region((10, 20, 110, 70))
    assert region.shape == (50, 100, 3) and region.dtype == np.uint8
    # Reduced-scale pixel i covers original pixels [4 i, 4 i + 4): the 1024-px file is the
    # 512-px photo upsampled 2x, so the region shows astronaut[40:140, 20:220] halved.
    expected = np.asarray(Image.fromarray(astronaut[40:140, 20:220]).resize(
        (100, 50), Image.Resampling.BOX))
    # 0.9 grey levels here; the same region one reduced pixel off is 6.6 to 8 away.
    assert np.abs(region.astype(np.int16) - expected).mean() < 2

    png = str(tmp_path / 'a.png')
    Image.fromarray(astronaut).save(png)
    assert LazyImage.open(png).draft(4) == 1  # no reduced decoding outside JPEG


def test_snapped_crop_start_is_the_nearest_grid_point_inside():
    for reduction in (1, 2, 4, 8):
        for extent, length in ((1000, 517), (1001, 1001), (333, 130)):
            grid = range(0, extent - length + 1, reduction)
            starts = list(range(40)) + list(range(extent - length - 8, extent - length + 1))
            for start in filter(lambda value: value >= 0, starts):
                snapped = snap_to_reduced_grid(start, length, extent, reduction)
                assert snapped in grid, (start, length, extent, reduction)
                assert abs(snapped - start) == min(abs(point - start) for point in grid)


@pytest.mark.parametrize('reducing_gap, expected_reduction', [(1.0, 4), (2.0, 2), (4.0, 1)])
def test_lazy_crop_matches_the_full_decode_of_its_box(reducing_gap, expected_reduction,
                                                      large_jpeg, monkeypatch):
    """The output is the recorded box, resized: against torchvision's full decode + crop +
    resize of that box it differs only by libjpeg's DCT-domain scaling, which low-passes each
    8x8 block on its own instead of with the bicubic filter (1.4 grey levels here at 1/4
    scale; against the drawn, unsnapped box it would be 3.4 to 4). The box keeps its drawn size
    and moves by less than the reduction."""
    top, left, height, width = 101, 203, 601, 517  # corner off the 2- and 4-pixel grids
    crop = RandomResizedCrop(128, reducing_gap=reducing_gap)
    assert crop.draft_reduction(height, width) == expected_reduction
    monkeypatch.setattr(crop, 'sample_crop', lambda image_height, image_width:
                        (top, left, height, width))
    out = crop(LoadImageRGB(lazy=True)(dict(img_path=large_jpeg)))
    x1, y1, x2, y2 = out['crop_bbox']
    assert (x2 - x1, y2 - y1) == (width, height)
    assert x1 % expected_reduction == y1 % expected_reduction == 0
    assert abs(x1 - left) < expected_reduction and abs(y1 - top) < expected_reduction
    with Image.open(large_jpeg) as image:
        reference = TF.resized_crop(image.convert('RGB'), y1, x1, height, width, [128, 128],
                                    InterpolationMode.BICUBIC)
    difference = np.abs(out['img'].astype(np.int16) - np.asarray(reference)).mean()
    assert difference < (2.0 if expected_reduction > 1 else 0.25), difference


def test_lazy_crop_of_a_png_is_exactly_the_full_decode(tmp_path, astronaut, monkeypatch):
    path = str(tmp_path / 'a.png')
    Image.fromarray(astronaut).save(path)
    crop = RandomResizedCrop(64, reducing_gap=1.0)  # would draft 4x, but PNG has no draft
    monkeypatch.setattr(crop, 'sample_crop', lambda height, width: (10, 20, 400, 300))
    lazy_out = crop(LoadImageRGB(lazy=True)(dict(img_path=path)))['img']
    full_out = crop(LoadImageRGB()(dict(img_path=path)))['img']
    np.testing.assert_array_equal(lazy_out, full_out)


def test_pack_inputs_gives_uint8_chw_and_a_data_sample(astronaut):
    flipped = np.flip(astronaut, axis=1)  # non-contiguous view
    flipped.flags.writeable = False
    packed = PackInputs()(dict(img=flipped, img_path='x.jpg', gt_label=3, img_shape=(512, 512)))
    assert packed['inputs'].dtype == torch.uint8 and packed['inputs'].shape == (3, 512, 512)
    np.testing.assert_array_equal(packed['inputs'].permute(1, 2, 0).numpy(), flipped)
    sample = packed['data_samples']
    assert sample.img_path == 'x.jpg' and sample.img_shape == (512, 512)
    assert sample.gt_label.dtype == torch.int64 and sample.gt_label.tolist() == [3]

    unlabelled = PackInputs()(dict(img=astronaut))['data_samples']
    assert 'gt_label' not in unlabelled and 'img_path' not in unlabelled


def test_pack_inputs_rejects_non_rgb_and_undecoded_images(camera):
    with pytest.raises(ValueError, match='RGB uint8'):
        PackInputs()(dict(img=camera))
    with pytest.raises(KeyError, match='RandomResizedCrop'):
        PackInputs()(dict(lazy_img=LazyImage('x.jpg', Image.new('RGB', (4, 4)))))


def test_config_pipeline_with_mmcv_flip(tmp_path, astronaut):
    path = str(tmp_path / 'a.jpg')
    Image.fromarray(astronaut).save(path, quality=95)
    assert TRANSFORMS.get('RandomResizedCrop') is RandomResizedCrop

    def run(flip_prob):
        np.random.seed(1)
        pipeline = build_pipeline([
            dict(type='LoadImageRGB', lazy=True),
            dict(type='RandomResizedCrop', size=64),
            dict(type='RandomFlip', prob=flip_prob, direction='horizontal'),
            dict(type='PackInputs'),
        ])
        results = dict(img_path=path)
        for transform in pipeline:
            results = transform(results)
        return results

    flipped, plain = run(1.0), run(0.0)
    assert flipped['data_samples'].flip is True and plain['data_samples'].flip is False
    torch.testing.assert_close(flipped['inputs'], plain['inputs'].flip(-1))


@pytest.mark.parametrize('lazy', [False, True])
def test_unreadable_file_warnings_say_what_is_wrong_with_the_file(lazy, tmp_path, astronaut):
    """The lazy loader opens the file's bytes from memory, so PIL's message named
    ``<_io.BytesIO object at 0x...>``; a zero-byte file now says it is empty."""
    _, noise, empty, _ = corrupt_files(tmp_path, astronaut)
    with pytest.warns(UnreadableImageWarning, match=r'the file is empty \(0 bytes\)'):
        assert LoadImageRGB(lazy=lazy)(dict(img_path=empty)) is None
    with pytest.warns(UnreadableImageWarning) as record:
        assert LoadImageRGB(lazy=lazy)(dict(img_path=noise)) is None
    message = str(record[0].message)
    assert 'BytesIO' not in message and f'cannot identify image file {noise!r}' in message


@pytest.mark.parametrize('lazy', [False, True])
def test_a_dangling_symlink_is_named_as_one(lazy, tmp_path):
    """'No such file or directory' for a file that ls lists: a link whose target is gone."""
    link = tmp_path / 'x.jpg'
    link.symlink_to(tmp_path / 'moved' / 'x.jpg')
    with pytest.warns(UnreadableImageWarning, match=re.escape(
            f"(a symlink to '{tmp_path / 'moved' / 'x.jpg'}', which does not exist)")):
        assert LoadImageRGB(lazy=lazy)(dict(img_path=str(link))) is None


def test_an_image_over_pil_s_pixel_limit_says_how_to_allow_it(tmp_path, monkeypatch):
    path = tmp_path / 'scan.png'
    Image.new('RGB', (64, 64)).save(path)
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)  # 4096 pixels: over twice the limit
    with pytest.warns(UnreadableImageWarning, match=re.escape(
            'DecompressionBombError') + '.*' + re.escape(
            "raise PIL's limit, PIL.Image.MAX_IMAGE_PIXELS (now 1000; None: no limit)")):
        assert LoadImageRGB()(dict(img_path=str(path))) is None


ROOT = Path(__file__).resolve().parents[2]


def folder_with_a_broken_jpeg(tmp_path, photo, names, broken):
    """``tmp_path/images`` of ``photo`` saved as JPEG under each of ``names``, and ``broken``:
    the first one's bytes cut in half."""
    images = tmp_path / 'images'
    images.mkdir()
    for name in names:
        photo.save(images / f'{name}.jpg', quality=90)
    data = (images / f'{names[0]}.jpg').read_bytes()
    (images / f'{broken}.jpg').write_bytes(data[:len(data) // 2])
    return images


def demo_training_on(tmp_path, images, loader_options=''):
    """A config that pre-trains the demo model one epoch on the ImageFolder ``images``, batch 2,
    one worker, with ``loader_options`` added to its train_dataloader."""
    config = tmp_path / 'config.py'
    config.write_text(
        f"_base_ = [{str(ROOT / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py')!r}]\n"
        f'train_dataloader = dict(batch_size=2, num_workers=1, {loader_options}dataset=dict(\n'
        f"    _delete_=True, type='ImageFolder', data_root={str(images)!r}, data_prefix='',\n"
        f'    pipeline=_base_.train_pipeline))\n'
        f'train_cfg = dict(max_epochs=1)\n'
        f'custom_hooks = []\n')
    return config


def test_a_skipped_image_is_in_the_run_s_log_file_once_on_the_console(tmp_path, astronaut):
    """Skipped files were only warnings on stderr: the log file in the work dir, the run's
    record, did not name them. The console shows each once."""
    images = folder_with_a_broken_jpeg(
        tmp_path, Image.fromarray(astronaut).resize((160, 160)), [str(i) for i in range(5)], 'bad')
    result = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'train.py'), str(demo_training_on(tmp_path, images)),
         '--work-dir', str(tmp_path / 'work')], cwd=ROOT, capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = f'skipped unreadable image {images / "bad.jpg"} (OSError: image file is truncated'
    assert (result.stdout + result.stderr).count(line) == 1
    logs = list((tmp_path / 'work').glob('*/*.log'))
    assert len(logs) == 1
    assert logs[0].read_text().count(f'WARNING - UnreadableImageWarning: {line}') == 1


def test_a_file_skipped_by_rank_1_alone_is_named_in_a_log_file_of_the_work_dir(tmp_path,
                                                                              astronaut):
    """mmengine opens the run's log file on rank 0 alone: a file skipped by another rank (in
    its DataLoader worker) was only a warning on the job's console. Unshuffled, rank 1 of 2
    reads the images of odd index: the broken one, second in name order, is its alone."""
    images = folder_with_a_broken_jpeg(
        tmp_path, Image.fromarray(astronaut).resize((96, 96)), ['a0', 'a2', 'a3'], 'a1_bad')
    config = demo_training_on(tmp_path, images, "persistent_workers=False,\n"
                              "    sampler=dict(type='DefaultSampler', shuffle=False), ")
    result = subprocess.run(
        ['bash', str(ROOT / 'tools' / 'dist_train.sh'), str(config), '2', '--work-dir',
         str(tmp_path / 'work')], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    line = f'skipped unreadable image {images / "a1_bad.jpg"} (OSError: image file is truncated'
    assert line in result.stderr
    run_log, = (path for path in (tmp_path / 'work').glob('*/*.log') if '_rank' not in path.name)
    rank_log = run_log.with_name(f'{run_log.stem}_rank1.log')
    assert line not in run_log.read_text()
    assert rank_log.read_text().count(f'WARNING - UnreadableImageWarning: {line}') == 1


def test_no_logger_is_made_by_a_skip_outside_a_run(tmp_path):
    from mmengine.logging import MMLogger
    path = tmp_path / 'empty.jpg'
    path.write_bytes(b'')
    saved = dict(MMLogger._instance_dict)
    MMLogger._instance_dict.clear()
    try:
        with pytest.warns(UnreadableImageWarning):
            assert LoadImageRGB()(dict(img_path=str(path))) is None
        assert not MMLogger._instance_dict
    finally:
        MMLogger._instance_dict.update(saved)



@pytest.mark.parametrize('kind', ['float_tiff', 'int32_tiff'])
def test_samples_without_a_0_255_range_are_skipped_as_unreadable(kind, tmp_path, camera):
    """PIL's conversion clipped them without a word: a float image in 0-1 came out black, a
    32-bit one beyond 65535 white."""
    values = (camera.astype(np.float32) / 255 if kind == 'float_tiff'
              else camera.astype(np.int32) * 1000)
    path = tmp_path / 'a.tif'
    Image.fromarray(values).save(path)
    expected = (r'\(ValueError: a floating-point image \(mode F\) has no defined 0-255 range'
                if kind == 'float_tiff' else
                r'\(ValueError: a I image with values \d+\.\.\d+ has no defined 0-255 range')
    with pytest.warns(UnreadableImageWarning, match=expected):
        assert LoadImageRGB()(dict(img_path=str(path))) is None
    lazy = tmp_path / 'b.tif'  # another file: each is warned of once
    lazy.write_bytes(path.read_bytes())
    with pytest.warns(UnreadableImageWarning, match=expected):  # decoded at the crop
        assert RandomResizedCrop(64)(LoadImageRGB(lazy=True)(dict(img_path=str(lazy)))) is None

def test_a_skipped_file_whose_name_is_no_utf8_is_written_to_the_log_file(tmp_path, recwarn):
    """Its surrogate-escaped byte failed the log file's UTF-8 encoder: a 'Logging error'
    traceback on stderr, and the line was missing from the run's log."""
    from mmengine.logging import MMLogger
    log_file = tmp_path / 'run.log'
    logger = MMLogger.get_instance('test_non_utf8_name', log_file=str(log_file))
    broken = tmp_path / os.fsdecode(b'caf\xe9.jpg')
    broken.write_bytes(b'not an image')
    try:
        assert LoadImageRGB()(dict(img_path=str(broken))) is None
    finally:
        for handler in logger.handlers:
            handler.flush()
    assert f'skipped unreadable image {tmp_path}/caf\\udce9.jpg (' in log_file.read_text()
