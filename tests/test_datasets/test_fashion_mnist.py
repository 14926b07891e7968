"""FashionMNIST reads idx files (written here byte by byte from the format's definition, and the
real Debian files, fetched once per machine into ~/.cache/fastmim/data) and draws
class-balanced label subsets."""
import gzip
import struct

import numpy as np
import pytest
import torch

from fastmim.datasets import FashionMNIST, fetch_fashion_mnist
from fastmim.datasets import fashion_mnist as fashion_mnist_module
from fastmim.datasets.fashion_mnist import SPLIT_FILES, read_idx

TO_32PX = [dict(type='ResizeShorterCenterCrop', crop_size=32, crop_pct=1.0),
           dict(type='PackInputs')]


def write_idx(path, array, type_code=0x08, fmt='B'):
    """The idx layout: 0, 0, type code, rank, big-endian uint32 sizes, big-endian values."""
    header = struct.pack('>BBBB', 0, 0, type_code, array.ndim)
    header += struct.pack(f'>{array.ndim}I', *array.shape)
    body = struct.pack(f'>{array.size}{fmt}', *array.ravel().tolist())
    with gzip.open(path, 'wb') as f:
        f.write(header + body)


@pytest.fixture
def synthetic_root(tmp_path):
    """60 train images (6 per class, labels shuffled) and 20 test images of 28x28."""
    rng = np.random.default_rng(0)
    splits = {'train': rng.permutation(np.repeat(np.arange(10), 6)),
              'test': np.repeat(np.arange(10), 2)}
    for split, labels in splits.items():
        images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
        write_idx(tmp_path / SPLIT_FILES[split][0], images)
        write_idx(tmp_path / SPLIT_FILES[split][1], labels.astype(np.uint8))
        np.save(tmp_path / f'{split}_images.npy', images)
    return tmp_path


def test_reads_images_as_gray_replicated_rgb_with_labels(synthetic_root):
    dataset = FashionMNIST(str(synthetic_root), split='train')
    images = np.load(synthetic_root / 'train_images.npy')
    assert len(dataset) == 60 and dataset.metainfo['classes'][9] == 'Ankle boot'
    for index in (0, 17, 59):
        info = dataset.get_data_info(index)
        assert info['img'].shape == (28, 28, 3) and info['img'].dtype == np.uint8
        for channel in range(3):
            np.testing.assert_array_equal(info['img'][:, :, channel], images[index])
    labels = [dataset.get_data_info(i)['gt_label'] for i in range(60)]
    assert sorted(labels) == sorted(np.repeat(np.arange(10), 6).tolist())


def test_pipeline_upsamples_to_32px_and_packs_the_label(synthetic_root):
    dataset = FashionMNIST(str(synthetic_root), split='test', pipeline=TO_32PX)
    sample = dataset[3]
    assert sample['inputs'].shape == (3, 32, 32) and sample['inputs'].dtype == torch.uint8
    assert sample['data_samples'].gt_label.tolist() == [1]
    unlabelled = FashionMNIST(str(synthetic_root), split='test', with_label=False,
                              pipeline=TO_32PX)
    assert 'gt_label' not in unlabelled[3]['data_samples']


def test_label_fraction_is_class_balanced_deterministic_and_nested(synthetic_root):
    def subset(fraction, seed):
        dataset = FashionMNIST(str(synthetic_root), label_fraction=fraction, seed=seed)
        return [(dataset.get_data_info(i)['image_index'], dataset.get_data_info(i)['gt_label'])
                for i in range(len(dataset))]

    half = subset(0.5, seed=1)
    assert len(half) == 30
    assert np.bincount([label for _, label in half]).tolist() == [3] * 10
    assert subset(0.5, seed=1) == half
    assert subset(0.5, seed=2) != half
    assert set(subset(1 / 6, seed=1)) < set(half)  # 1 per class, inside the seed's 3 per class
    with pytest.raises(ValueError, match='label_fraction'):
        FashionMNIST(str(synthetic_root), label_fraction=0.)
    with pytest.raises(ValueError, match='asks for 0 images per class'):
        FashionMNIST(str(synthetic_root), label_fraction=0.05)


def test_missing_files_name_the_folder_and_the_apt_command(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        FashionMNIST(str(tmp_path / 'nowhere'), split='test')
    message = str(error.value)
    assert str(tmp_path / 'nowhere') in message
    assert 'apt-get download dataset-fashion-mnist' in message
    assert 't10k-images-idx3-ubyte.gz' in message


def test_bad_idx_files_are_reported_with_their_path(tmp_path):
    truncated = tmp_path / 'truncated.gz'
    with gzip.open(truncated, 'wb') as f:
        f.write(struct.pack('>BBBBIII', 0, 0, 8, 3, 2, 28, 28) + bytes(100))
    with pytest.raises(ValueError, match='truncated.gz is truncated'):
        read_idx(str(truncated))
    not_idx = tmp_path / 'photo.gz'
    with gzip.open(not_idx, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n')
    with pytest.raises(ValueError, match='photo.gz is not an idx file'):
        read_idx(str(not_idx))


def test_reads_other_idx_types_big_endian(tmp_path):
    values = np.array([[1, -2, 300], [40000, -70000, 5]], dtype=np.int32)
    write_idx(tmp_path / 'ints.gz', values, type_code=0x0C, fmt='i')
    np.testing.assert_array_equal(read_idx(str(tmp_path / 'ints.gz')), values)


def test_failed_fetch_names_the_command_and_its_stderr(tmp_path, monkeypatch):
    """Without the files, a fetch whose apt-get fails raises with apt-get's own message."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    apt_get = bin_dir / 'apt-get'
    apt_get.write_text('#!/bin/sh\necho "E: Unable to locate package $2" >&2\nexit 100\n')
    apt_get.chmod(0o755)
    monkeypatch.setenv('PATH', str(bin_dir))
    monkeypatch.setattr(fashion_mnist_module, 'DEFAULT_DATA_ROOT', str(tmp_path / 'not_installed'))
    with pytest.raises(RuntimeError) as error:
        fetch_fashion_mnist(str(tmp_path / 'cache'))
    message = str(error.value)
    assert 'apt-get download dataset-fashion-mnist failed' in message
    assert 'E: Unable to locate package dataset-fashion-mnist' in message
    assert 'apt-get update' in message and str(tmp_path / 'cache') in message


def test_real_files_hold_the_published_splits(real_root):
    train = FashionMNIST(real_root, split='train', label_fraction=0.01, seed=0)
    assert len(train) == 600
    assert np.bincount([train.get_data_info(i)['gt_label'] for i in range(600)]).tolist() == \
        [60] * 10
    test = FashionMNIST(split='test', pipeline=TO_32PX)  # found without naming the folder
    assert len(test) == 10000 and test.data_root == real_root
    # The reader agrees with a direct decoding of the file's bytes (header 16 bytes).
    with gzip.open(f'{real_root}/t10k-images-idx3-ubyte.gz', 'rb') as f:
        raw = f.read(16 + 3 * 784)
    assert struct.unpack('>IIII', raw[:16]) == (2051, 10000, 28, 28)
    third = np.frombuffer(raw[16 + 2 * 784:], dtype=np.uint8).reshape(28, 28)
    np.testing.assert_array_equal(test.get_data_info(2)['img'][:, :, 1], third)
    assert test[2]['inputs'].shape == (3, 32, 32)
