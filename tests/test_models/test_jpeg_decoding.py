"""JpegDecodePreprocessor: JPEG crops decoded on the model's device (here the CPU, through the
same torchvision call nvJPEG answers on CUDA) equal the CPU pipeline's, in the batch's order;
unreadable files are replaced by a copy of another image with a warning, rejected ones decoded by
PIL; misconfigurations are named."""
import re
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.structures import BaseDataElement
from PIL import Image
from skimage import data as skdata
from torchvision.transforms import InterpolationMode

from fastmim.constants import IMAGENET_MEAN, IMAGENET_STD
from fastmim.datasets.transforms import (LoadImageRGB, PackInputs, RandomHorizontalFlip,
                                         RandomResizedCrop, UnreadableImageWarning)
from fastmim.models.data_preprocessors import (DeviceDecodeFallbackWarning, JpegDecodePreprocessor,
                                               check_device_decoding, jpeg_decoding)
from fastmim.registry import MODELS

ROOT = Path(__file__).resolve().parents[2]
SIZE = (96, 128)  # not square: a swapped height and width shows
# (top, left, height, width) in the 400 x 600 coffee photo: corners on no 2- or 4-px grid.
BOX = (37, 101, 301, 389)
MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    """Real photos as files: an RGB and a grayscale JPEG, a CMYK JPEG, a PNG, a truncated
    JPEG (intact header)."""
    folder = tmp_path_factory.mktemp('photos')
    coffee = Image.fromarray(skdata.coffee())  # 400 x 600 RGB
    astronaut = Image.fromarray(skdata.astronaut())  # 512 x 512 RGB
    coffee.save(folder / 'coffee.jpg', quality=95)
    Image.fromarray(skdata.camera()).save(folder / 'camera.jpg', quality=95)
    astronaut.convert('CMYK').save(folder / 'cmyk.jpg', quality=95)
    astronaut.save(folder / 'astronaut.png')
    data = (folder / 'coffee.jpg').read_bytes()
    (folder / 'truncated.jpg').write_bytes(data[:len(data) // 2])
    return {name: str(folder / file) for name, file in [
        ('rgb', 'coffee.jpg'), ('gray', 'camera.jpg'), ('cmyk', 'cmyk.jpg'),
        ('png', 'astronaut.png'), ('truncated', 'truncated.jpg')]}


def pack(path, box=BOX, flip=False, decode='device'):
    """The device-decoding pipeline on one file, with a fixed crop box and flip."""
    crop = RandomResizedCrop(SIZE, decode=decode)
    crop.sample_crop = lambda height, width: box
    results = crop(LoadImageRGB(lazy=True)(dict(img_path=path)))
    # crop_bbox also for the samples the workers decode, to build their references.
    packer = PackInputs(meta_keys=('img_path', 'img_shape', 'crop_bbox', 'flip'))
    return packer(RandomHorizontalFlip(prob=float(flip))(results))


def reference(path, box, flip):
    """Independent CPU reference: PIL's full decode, torchvision's crop and antialiased bicubic
    resize (PIL's), its flip; float (3, H, W) on the 0-255 scale."""
    with Image.open(path) as image:
        out = TF.resized_crop(image.convert('RGB'), *box, list(SIZE), InterpolationMode.BICUBIC)
    if flip:
        out = TF.hflip(out)
    return torch.from_numpy(np.array(out)).permute(2, 0, 1).float()


def grey_levels(normalised):
    return normalised * STD + MEAN


@pytest.mark.parametrize('flip', [False, True])
def test_device_decoded_crop_equals_the_cpu_reference(photos, flip):
    packed = pack(photos['rgb'], flip=flip)
    assert packed['inputs'].dim() == 1  # left as JPEG bytes by the worker
    out = JpegDecodePreprocessor()(pseudo_collate([packed]), training=True)['inputs']
    assert out.shape == (1, 3) + SIZE and out.dtype == torch.float32
    expected = reference(photos['rgb'], BOX, flip)
    # Normalised with ImageNet's RGB mean and std: within 1.5 grey levels of the reference's.
    np.testing.assert_allclose(out[0], (expected - MEAN) / STD, atol=1.5 / 57)
    error = (grey_levels(out[0]) - expected).abs()
    # The same libjpeg-turbo decodes both here; the resize is torch's port of PIL's filter.
    assert error.mean() < 1 and error.max() <= 4, (error.mean(), error.max())
    # Flipped the wrong way (or not at all) it would be tens of levels off.
    assert (grey_levels(out[0]) - expected.flip(-1)).abs().mean() > 10
    assert (grey_levels(out[0]) - expected.flip(-2)).abs().mean() > 10


def test_grayscale_jpeg_decodes_to_three_equal_channels(photos):
    out = JpegDecodePreprocessor(mean=[0] * 3, std=[1] * 3)(pseudo_collate([pack(photos['gray'])]))
    image = out['inputs'][0]
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert (image - reference(photos['gray'], BOX, False)).abs().mean() < 1


def test_mixed_batch_keeps_its_order_and_size_replacing_an_unreadable_file(photos):
    """PNG and CMYK JPEG decoded by the workers, RGB and gray JPEGs on the device, a truncated
    JPEG replaced, with its sample, by a copy of the first readable image (the batch keeps its
    size: torch.compile, CUDA graphs, DDP), with a warning that names both; every image lands
    where its sample is."""
    names = ['png', 'rgb', 'truncated', 'cmyk', 'gray']
    packed = [pack(photos[name], flip=name == 'rgb') for name in names]
    assert [item['inputs'].dim() for item in packed] == [3, 1, 1, 3, 1]
    with pytest.warns(UnreadableImageWarning, match=re.escape(photos['truncated']) +
                      '.*replaced by a copy of ' + re.escape(photos['png'])):
        out = JpegDecodePreprocessor()(pseudo_collate(packed), training=True)
    kept = [name if name != 'truncated' else 'png' for name in names]
    assert [sample.img_path for sample in out['data_samples']] == [photos[n] for n in kept]
    assert out['data_samples'][2] is not out['data_samples'][0]  # a copy, not the same object
    assert out['inputs'].shape == (5, 3) + SIZE
    assert torch.equal(out['inputs'][2], out['inputs'][0])
    for image, sample, name in zip(out['inputs'], out['data_samples'], kept):
        # The workers snap their crops to the grid of their reduced decode: compare each image
        # with the full decode of the box it records. Another photo is tens of levels away.
        left, top, right, bottom = sample.crop_bbox
        expected = reference(photos[name], (top, left, bottom - top, right - left), sample.flip)
        error = (grey_levels(image) - expected).abs().mean()
        assert error < 3, (name, error)


def test_batch_without_a_readable_image_is_an_error(photos):
    with pytest.warns(UnreadableImageWarning, match=re.escape(photos['truncated'])):
        with pytest.raises(RuntimeError, match='no image of this batch could be decoded'):
            JpegDecodePreprocessor()(pseudo_collate([pack(photos['truncated'])] * 2))


def test_a_device_decoder_rejecting_a_whole_batch_is_warned_once(photos, monkeypatch):
    """nvJPEG not working at all: every file falls back to PIL, and one warning says so."""
    def broken(data, **kwargs):
        raise RuntimeError('nvjpegCreateSimple failed: 3')

    monkeypatch.setattr(jpeg_decoding, 'decode_jpeg', broken)
    preprocessor = JpegDecodePreprocessor()
    batch = pseudo_collate([pack(photos['gray']), pack(photos['rgb'])])
    messages = []
    for _ in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            out = preprocessor(batch, training=True)
        assert out['inputs'].shape == (2, 3) + SIZE
        messages.append([str(w.message) for w in caught if 'is not working' in str(w.message)])
    assert len(messages[0]) == 1 and messages[1] == []
    assert re.search(r'rejected all 2 JPEGs of a batch \(first error: nvjpegCreateSimple '
                     r'failed: 3\).*with PIL in the training process', messages[0][0])


def test_cuda_decoding_waits_for_the_current_stream_first(photos, monkeypatch):
    """pytorch/vision#9606: nvJPEG writes from its own stream; ours is synchronised before
    (here a pretend CUDA device, the decode itself on the CPU)."""
    events = []
    decode = jpeg_decoding.decode_jpeg

    def recording_decoder(data, **kwargs):
        events.append(('decode', str(kwargs['device'])))
        return decode(data, mode=kwargs['mode'])

    monkeypatch.setattr(jpeg_decoding, 'decode_jpeg', recording_decoder)
    monkeypatch.setattr(torch.cuda, 'current_stream', lambda device: types.SimpleNamespace(
        synchronize=lambda: events.append(('sync', str(device)))))
    preprocessor = JpegDecodePreprocessor()
    packed = [pack(photos['rgb']), pack(photos['gray'])]
    samples = [item['data_samples'] for item in packed]
    preprocessor.decode_jpegs([item['inputs'] for item in packed], samples)
    assert events == [('decode', 'cpu')]  # no sync off CUDA
    events.clear()
    preprocessor._device = torch.device('cuda', 0)
    images, _ = preprocessor.decode_jpegs([item['inputs'] for item in packed], samples)
    assert events == [('sync', 'cuda:0'), ('decode', 'cuda:0')] and len(images) == 2


def test_file_the_device_rejects_is_decoded_on_the_cpu(photos, monkeypatch):
    """nvJPEG may refuse a JPEG that PIL reads: a batched call then fails as a whole, the files
    are retried one by one and the refused one decoded by PIL, with a warning naming it."""
    refused = pack(photos['rgb'])['inputs']
    decode = jpeg_decoding.decode_jpeg

    def device_decoder(data, **kwargs):
        items = data if isinstance(data, list) else [data]
        if any(item.numel() == refused.numel() for item in items):
            raise RuntimeError('nvjpegDecode failed: 6')
        return decode(data, **kwargs)

    monkeypatch.setattr(jpeg_decoding, 'decode_jpeg', device_decoder)
    batch = pseudo_collate([pack(photos['gray']), pack(photos['rgb'], flip=True)])
    with pytest.warns(DeviceDecodeFallbackWarning,
                      match=re.escape(photos['rgb']) + '.*nvjpegDecode failed'):
        out = JpegDecodePreprocessor()(batch, training=True)
    assert out['inputs'].shape == (2, 3) + SIZE
    error = (grey_levels(out['inputs'][1]) - reference(photos['rgb'], BOX, True)).abs()
    assert error.mean() < 1


def test_batch_without_jpeg_bytes_is_normalised_as_by_img_data_preprocessor(photos):
    packed = [pack(photos['png']), pack(photos['cmyk'])]
    batch = pseudo_collate(packed)
    ours = JpegDecodePreprocessor()(batch)['inputs']
    theirs = MODELS.build(dict(type='ImgDataPreprocessor', mean=IMAGENET_MEAN,
                               std=IMAGENET_STD))(pseudo_collate(packed))['inputs']
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_batch_normalised_at_once_equals_the_image_by_image_result(photos):
    """The decoded images are stacked and normalised once for the batch: bit for bit what
    ImgDataPreprocessor's image-by-image path makes of the decoded list. Images of different
    sizes stay a list, padded as it pads them."""
    packed = [pack(photos[name], flip=name == 'rgb') for name in ('png', 'rgb', 'cmyk', 'gray')]
    preprocessor = JpegDecodePreprocessor()
    per_image = MODELS.build(dict(type='ImgDataPreprocessor', mean=IMAGENET_MEAN,
                                  std=IMAGENET_STD))
    odd_size = torch.randint(0, 256, (3, SIZE[0] + 5, SIZE[1]), dtype=torch.uint8)
    stacked = []
    for batch in (pseudo_collate(packed),
                  {'inputs': [packed[1]['inputs'], odd_size],
                   'data_samples': [packed[1]['data_samples'], BaseDataElement()]}):
        images, samples = preprocessor.decode_jpegs(batch['inputs'], batch['data_samples'])
        stacked.append(isinstance(preprocessor._stack(images), torch.Tensor))
        expected = per_image(dict(inputs=images, data_samples=samples))['inputs']
        torch.testing.assert_close(preprocessor(batch)['inputs'], expected, rtol=0, atol=0)
    assert stacked == [True, False]


def test_jpeg_bytes_without_their_metainfo_are_a_clear_error(photos):
    packed = pack(photos['rgb'])
    del packed['data_samples'].crop_bbox
    with pytest.raises(KeyError, match=r"needs \['crop_bbox'\] in its metainfo"):
        JpegDecodePreprocessor()(pseudo_collate([packed]))
    with pytest.raises(ValueError, match='a data sample per input'):
        JpegDecodePreprocessor()(dict(inputs=[pack(photos['rgb'])['inputs']]))


def test_device_decoding_without_its_preprocessor_or_with_mmcv_flip_is_refused():
    cfg = Config.fromfile(str(ROOT / 'configs' / 'fastmim' / 'vit_b_hog_800e.py'))
    check_device_decoding(cfg)  # decodes in the workers: nothing to check
    cfg.merge_from_dict({'train_dataloader.dataset.pipeline.1.decode': 'device',
                         'train_dataloader.dataset.pipeline.2.type': 'RandomHorizontalFlip'})
    with pytest.raises(ValueError, match=r"train_dataloader: .*model\.data_preprocessor\.type "
                                         r"must be 'JpegDecodePreprocessor', got "
                                         r"'ImgDataPreprocessor'"):
        check_device_decoding(cfg)
    cfg.merge_from_dict({'model.data_preprocessor.type': 'JpegDecodePreprocessor'})
    check_device_decoding(cfg)
    cfg.merge_from_dict({'train_dataloader.dataset.pipeline.2.type': 'RandomFlip'})
    with pytest.raises(ValueError, match="RandomFlip needs a decoded image.*instead of mmcv's "
                                         "RandomFlip"):
        check_device_decoding(cfg)


@pytest.mark.parametrize('step', [dict(type='RandAugment'), dict(type='mmcv.RandomGrayscale')])
def test_device_decoding_refuses_any_step_after_the_crop_that_needs_an_image(step):
    """Such a step would fail in a worker with a bare KeyError 'img'."""
    cfg = Config.fromfile(str(ROOT / 'configs' / 'fastmim' / 'vit_b_hog_800e_nvjpeg.py'))
    pipeline = cfg.train_dataloader.dataset.pipeline
    pipeline.insert(len(pipeline) - 1, step)
    name = step['type'].split('.')[-1]
    with pytest.raises(ValueError, match=f"train_dataloader: {name} needs a decoded image.*only "
                                         f"RandomHorizontalFlip and PackInputs may follow it"):
        check_device_decoding(cfg)


def test_device_decoding_after_an_eager_load_is_refused():
    """LoadImageRGB(lazy=False) decodes in the worker, and the crop then has nothing to ship."""
    cfg = Config.fromfile(str(ROOT / 'configs' / 'fastmim' / 'vit_b_hog_800e_nvjpeg.py'))
    cfg.train_dataloader.dataset.pipeline[0] = dict(type='LoadImageRGB')
    with pytest.raises(ValueError, match=r"LoadImageRGB\(lazy=False\).*"
                                         r"dict\(type='LoadImageRGB', lazy=True\)"):
        check_device_decoding(cfg)


def test_nvjpeg_recipe_differs_from_the_published_one_only_in_decoding():
    published = Config.fromfile(str(ROOT / 'configs' / 'fastmim' / 'vit_b_hog_800e.py'))
    nvjpeg = Config.fromfile(str(ROOT / 'configs' / 'fastmim' / 'vit_b_hog_800e_nvjpeg.py'))
    check_device_decoding(nvjpeg)
    assert MODELS.get(nvjpeg.model.data_preprocessor.type) is JpegDecodePreprocessor
    crop, published_crop = (next(step for step in cfg.train_dataloader.dataset.pipeline
                                 if step.type == 'RandomResizedCrop')
                            for cfg in (nvjpeg, published))
    assert crop == {**published_crop, 'decode': 'device'}
    nvjpeg, published = nvjpeg.to_dict(), published.to_dict()
    for cfg in (nvjpeg, published):
        del cfg['train_pipeline'], cfg['train_dataloader']['dataset']['pipeline']
        del cfg['model']['data_preprocessor']
    assert nvjpeg == published


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_cuda_nvjpeg_batch_matches_the_cpu_reference(photos):
    """The nvJPEG path itself (tools/analysis/gpu_check.sh's cuda_tests): a mixed batch decodes
    on the GPU in order. nvJPEG's IDCT and chroma upsampling are not libjpeg-turbo's, hence a
    looser bound than on the CPU; another photo would be tens of levels away. nvJPEG may decode
    the truncated file's intact half instead of rejecting it: then it stays in the batch,
    otherwise a copy of the first image takes its place; the batch keeps its size."""
    names = ['png', 'rgb', 'gray', 'cmyk', 'truncated']
    packed = [pack(photos[name], flip=name == 'rgb') for name in names]
    preprocessor = JpegDecodePreprocessor().cuda()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UnreadableImageWarning)
        out = preprocessor(pseudo_collate(packed), training=True)
    assert out['inputs'].device.type == 'cuda' and len(out['inputs']) == 5
    assert out['data_samples'][4].img_path in (photos['truncated'], photos['png'])
    for image, sample, name in zip(out['inputs'], out['data_samples'], names[:4]):
        assert sample.img_path == photos[name]
        left, top, right, bottom = sample.crop_bbox
        expected = reference(photos[name], (top, left, bottom - top, right - left), sample.flip)
        error = (grey_levels(image.cpu()) - expected).abs().mean()
        assert error < 3, (name, error)
