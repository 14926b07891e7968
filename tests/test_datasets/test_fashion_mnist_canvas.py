"""Canvases of Fashion-MNIST items for the dense-task study: masks and the semantic map follow
the items' own visible pixels, test canvases hold only test images, composition is
deterministic, and mmseg's own BaseSegDataset reads what the writer writes."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

from fastmim.datasets.fashion_mnist import load_split
from fastmim.datasets.fashion_mnist_canvas import (CANVAS_CLASSES, compose_canvases,
                                                   split_canvases, write_canvas_segmentation)

THRESHOLD = 8
STUDY_CONFIG = (Path(__file__).resolve().parents[2] / 'configs' / 'experiments'
                / 'fashion_mnist_upernet.py')


@pytest.fixture(scope='module')
def items():
    """20 items of 28x28: a random rectangle of one bright value per item (so every canvas
    pixel tells which item it came from), on a faint (below-threshold) frame."""
    rng = np.random.default_rng(0)
    images = np.zeros((20, 28, 28), dtype=np.uint8)
    images[:, 0, :] = THRESHOLD  # faint: not the item's own pixels
    for index in range(20):
        top, left = rng.integers(1, 10, size=2)
        bottom, right = rng.integers(18, 28, size=2)
        images[index, top:bottom, left:right] = 100 + 5 * index
    return images, np.arange(20) % 10


def own_at(image, origin, size):
    """An item's own pixels (above the threshold) placed on a canvas at ``origin``."""
    placed = np.zeros((size, size), dtype=bool)
    top, left = origin
    placed[top:top + 28, left:left + 28] = image > THRESHOLD
    return placed


def test_masks_and_semantic_map_follow_the_visible_own_pixels(items):
    images, labels = items
    canvases = compose_canvases(images, labels, 30, seed=0, canvas_size=48,
                                items_per_canvas=(2, 4), threshold=THRESHOLD)
    assert sum(len(canvas.labels) for canvas in canvases) > 60
    for canvas in canvases:
        assert canvas.image.shape == canvas.semantic.shape == (48, 48)
        assert not np.any((canvas.image > 0) & (canvas.image <= THRESHOLD))  # faint: not pasted
        covered = np.zeros((48, 48), dtype=int)
        for mask, label, index, origin in zip(canvas.masks, canvas.labels, canvas.item_indices,
                                              canvas.origins):
            own = own_at(images[index], origin, 48)
            assert label == labels[index]
            assert not np.any(mask & ~own)  # only the item's own pixels
            assert mask.sum() >= 0.5 * own.sum()  # max_occlusion 0.5
            np.testing.assert_array_equal(mask, canvas.image == 100 + 5 * index)  # visible
            assert np.all(canvas.semantic[mask] == 1 + label)
            covered += mask
        assert covered.max() <= 1  # instance masks do not overlap
        np.testing.assert_array_equal(canvas.semantic == 0, covered == 0)


def test_later_items_occlude_earlier_ones(items):
    """A canvas the size of an item leaves one position: every item lies on the same spot."""
    images, labels = items
    (canvas, ) = compose_canvases(images, labels, 1, seed=3, canvas_size=28,
                                  items_per_canvas=(3, 3), threshold=THRESHOLD,
                                  max_occlusion=1.0)
    first, second, third = (images[index] > THRESHOLD for index in canvas.item_indices)
    np.testing.assert_array_equal(canvas.masks[2], third)
    np.testing.assert_array_equal(canvas.masks[1], second & ~third)
    np.testing.assert_array_equal(canvas.masks[0], first & ~second & ~third)


def test_composition_is_deterministic_per_seed(items):
    images, labels = items

    def compose(seed):
        return compose_canvases(images, labels, 5, seed=seed, canvas_size=48,
                                threshold=THRESHOLD)

    for again, first in zip(compose(1), compose(1)):
        np.testing.assert_array_equal(again.image, first.image)
        np.testing.assert_array_equal(again.semantic, first.semantic)
    assert any(not np.array_equal(a.image, b.image) for a, b in zip(compose(1), compose(2)))


def test_bad_arguments_are_named(items):
    images, labels = items
    with pytest.raises(ValueError, match='canvas_size 20 is smaller than the 28-px items'):
        compose_canvases(images, labels, 1, seed=0, canvas_size=20)
    with pytest.raises(ValueError, match='items_per_canvas'):
        compose_canvases(images, labels, 1, seed=0, items_per_canvas=(3, 2))


def test_test_canvases_hold_only_test_images(real_root):
    """Each instance's visible pixels are those of its test image (not of the training image
    with the same index), and train / test canvases of one seed differ."""
    test_images, test_labels = load_split(real_root, 'test')
    train_images, _ = load_split(real_root, 'train')
    canvases = split_canvases('test', 10, seed=0, data_root=real_root)
    for canvas in canvases:
        for mask, label, index, (top, left) in zip(canvas.masks, canvas.labels,
                                                   canvas.item_indices, canvas.origins):
            assert label == test_labels[index]
            window = canvas.image[top:top + 28, left:left + 28]
            visible = mask[top:top + 28, left:left + 28]
            np.testing.assert_array_equal(window[visible], test_images[index][visible])
            assert not np.array_equal(window[visible], train_images[index][visible])
    train = split_canvases('train', 10, seed=0, data_root=real_root)
    assert max(index for canvas in train for index in canvas.item_indices) < 60000
    assert not np.array_equal(train[0].image, canvases[0].image)


def test_written_ade20k_layout_loads_in_mmseg(real_root, tmp_path):
    from mmseg.datasets import BaseSegDataset
    root = str(tmp_path / 'canvases')
    written = write_canvas_segmentation(root, 6, 3, seed=0, data_root=real_root)
    assert written['counts']['train']['canvases'] == 6
    assert written['classes'] == list(CANVAS_CLASSES) and len(CANVAS_CLASSES) == 11
    dataset = BaseSegDataset(
        data_root=root, metainfo=dict(classes=CANVAS_CLASSES), img_suffix='.png',
        seg_map_suffix='.png', reduce_zero_label=False,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'))
    assert len(dataset) == 3
    labels = np.array(Image.open(dataset.get_data_info(0)['seg_map_path']))
    expected = split_canvases('test', 1, seed=0, data_root=real_root)[0]
    np.testing.assert_array_equal(labels, expected.semantic)
    np.testing.assert_array_equal(
        np.array(Image.open(dataset.get_data_info(0)['img_path'])), expected.image)
    assert sum(written['counts']['test']['pixels_per_class']) == 3 * 64 * 64
    # Through the study config's own test pipeline, background stays class 0 (not ignored).
    init_default_scope('mmseg')
    pipeline = Config.fromfile(str(STUDY_CONFIG)).test_pipeline
    loaded = BaseSegDataset(
        data_root=root, metainfo=dict(classes=CANVAS_CLASSES), img_suffix='.png',
        seg_map_suffix='.png', reduce_zero_label=False, pipeline=pipeline,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'))
    np.testing.assert_array_equal(loaded[0]['data_samples'].gt_sem_seg.data[0].numpy(),
                                  expected.semantic)

    # Same settings: kept as they are; other settings: rewritten without stale canvases.
    record = os.path.join(root, 'canvases.json')
    stamp = os.stat(record).st_mtime_ns
    assert write_canvas_segmentation(root, 6, 3, seed=0, data_root=real_root) == written
    assert os.stat(record).st_mtime_ns == stamp
    write_canvas_segmentation(root, 2, 3, seed=1, data_root=real_root)
    assert sorted(os.listdir(os.path.join(root, 'images', 'training'))) == [
        '000000.png', '000001.png']
    with open(record) as f:
        assert json.load(f)['settings']['seed'] == 1


def test_truncated_record_is_rewritten_not_fatal(real_root, tmp_path):
    """A ``canvases.json`` cut short (as a write killed half-way left it) is a stale cache:
    the canvases are written again, not a JSONDecodeError."""
    root = tmp_path / 'canvases'
    root.mkdir()
    (root / 'canvases.json').write_text('{"settings": {"num_tr')
    written = write_canvas_segmentation(str(root), 2, 1, seed=0, data_root=real_root)
    assert json.loads((root / 'canvases.json').read_text()) == written
    assert written['settings'] == dict(num_train=2, num_test=1, seed=0)
    assert sorted(os.listdir(root / 'images' / 'training')) == ['000000.png', '000001.png']
    expected = split_canvases('test', 1, seed=0, data_root=real_root)[0]
    np.testing.assert_array_equal(
        np.array(Image.open(root / 'annotations' / 'validation' / '000000.png')),
        expected.semantic)
    assert [name for name in os.listdir(root) if name.endswith('.tmp')] == []
