"""fastmim.CheckedADE20KDataset names a label map that does not fit its image or the classes,
where mmseg fails at the batch's stacking (no file named) or inside the loss."""
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

from fastmim.registry import DATASETS

ROOT = Path(__file__).resolve().parents[2]
SEGMENTATION = (ROOT / 'projects' / 'segmentation' / 'configs' /
                'upernet_fastmim_vit_b_ade20k_512x512_160k.py')


def build(loader, data_root, **changes):
    """The recipe's dataset of ``loader`` (its own pipeline) on ``data_root``."""
    init_default_scope('mmseg')
    dataset = Config.fromfile(str(SEGMENTATION))[loader].dataset
    dataset.update(data_root=str(data_root), **changes)
    return DATASETS.build(dataset)


@pytest.fixture
def ade20k_copy(ade20k_semantic, tmp_path):
    """A copy of the session's ADE20K-layout data that a test may damage."""
    return Path(shutil.copytree(ade20k_semantic, tmp_path / 'ade20k'))


def first_label_map(data_root, split='training'):
    return sorted((data_root / 'annotations' / split).glob('*.png'))[0]


def sample_of(dataset, label_map):
    """The index of the sample whose label map is ``label_map``."""
    return next(index for index in range(len(dataset))
                if dataset.get_data_info(index)['seg_map_path'] == str(label_map))


@pytest.mark.parametrize('loader', ['train_dataloader', 'val_dataloader'])
def test_fitting_label_maps_load_and_are_checked_right_after_loading(ade20k_copy, loader):
    dataset = build(loader, ade20k_copy)
    steps = [type(step).__name__ for step in dataset.pipeline.transforms]
    assert steps[steps.index('LoadAnnotations') + 1] == 'CheckSegMap'
    assert dataset[0]['data_samples'].gt_sem_seg.data.max() < 256


def test_a_label_map_of_another_size_is_named(ade20k_copy):
    path = first_label_map(ade20k_copy)
    label = Image.open(path)
    label.resize((label.width, label.height - 5), Image.NEAREST).save(path)
    dataset = build('train_dataloader', ade20k_copy)
    with pytest.raises(ValueError, match=rf'{path.name}: label map of {label.width}x'
                       rf'{label.height - 5} px for an image of {label.width}x{label.height} px'):
        dataset[sample_of(dataset, path)]


def test_a_label_value_that_is_no_class_is_named_as_the_file_holds_it(ade20k_copy):
    """The values were shown after reduce_zero_label: a file's 151 was reported as [150]."""
    path = first_label_map(ade20k_copy, 'validation')
    label = np.array(Image.open(path))
    label[:2, :2] = 200  # 199 after reduce_zero_label: ADE20K has 150 classes
    label[2, 2] = 151
    Image.fromarray(label).save(path)
    dataset = build('val_dataloader', ade20k_copy)
    with pytest.raises(ValueError, match=re.escape(
            f'{path}: label values [151, 200] are no class (1..150 in the file, 0..149 after '
            f'reduce_zero_label, or 0 to ignore)')):
        dataset[sample_of(dataset, path)]


def save_16_bit(label: np.ndarray, path):
    Image.fromarray(label.astype(np.uint16)).save(path)
    assert Image.open(path).mode not in ('L', 'P')


def test_a_16_bit_label_map_with_a_value_above_255_is_named(ade20k_copy):
    """mmseg's LoadAnnotations casts the map to uint8: 300 became 44 (43 after
    reduce_zero_label, a valid class) and training went on on wrong labels."""
    path = first_label_map(ade20k_copy)
    label = np.array(Image.open(path)).astype(np.uint16)
    save_16_bit(label, path)  # values within 0..255 survive the cast: it loads
    dataset = build('train_dataloader', ade20k_copy)
    dataset[sample_of(dataset, path)]

    label[:2, :2] = 300
    save_16_bit(label, path)
    dataset = build('train_dataloader', ade20k_copy)  # a file passes once per process
    for _ in range(2):
        with pytest.raises(ValueError, match=re.escape(
                f'{path}: label map of PIL mode {Image.open(path).mode} holds values [300] '
                f'outside 0..255, which mmseg casts to 8 bits')):
            dataset[sample_of(dataset, path)]


def save_as_float_tiffs(folder, change=None):
    """Each label PNG of ``folder`` saved again as a 32-bit float TIFF (PIL mode F) of the same
    values, ``change`` applied to the float array first; ``{tiff path: the PNG's values}``."""
    values = {}
    for png in sorted(folder.glob('*.png')):
        label = np.array(Image.open(png))
        floats = label.astype(np.float32)
        if change is not None:
            change(floats)
        tiff = png.with_suffix('.tif')
        Image.fromarray(floats).save(tiff)
        assert Image.open(tiff).mode == 'F'
        values[tiff] = label
    return values


def test_a_float_label_map_of_integers_loads_with_its_values(ade20k_copy):
    """mmseg casts the float map to uint8, which keeps integral values exactly: accepted, as
    a 16-bit map within 0..255 is."""
    values = save_as_float_tiffs(ade20k_copy / 'annotations' / 'validation')
    dataset = build('val_dataloader', ade20k_copy, seg_map_suffix='.tif')
    for path, label in values.items():
        loaded = dataset[sample_of(dataset, path)]['data_samples'].gt_sem_seg.data[0].numpy()
        expected = np.where(label == 0, 255, label.astype(np.int64) - 1)  # reduce_zero_label
        np.testing.assert_array_equal(loaded, expected)


def test_a_float_label_map_with_fractions_is_named(ade20k_copy):
    """mmseg's cast to uint8 truncated 2.7 to class 2 (1 after reduce_zero_label) and trained
    on it without a word."""
    def add_fractions(label):
        label[:2, :2] = 2.7
        label[3, 3] = 7.25
        label[4, 4] = np.nan

    folder = ade20k_copy / 'annotations' / 'validation'
    path = next(iter(save_as_float_tiffs(folder, add_fractions)))
    dataset = build('val_dataloader', ade20k_copy, seg_map_suffix='.tif')
    for _ in range(2):
        with pytest.raises(ValueError, match=re.escape(
                f'{path}: label map of PIL mode F holds 6 values that are not integers (2.7, '
                f'7.25, nan), which mmseg truncates to class indices (2.7 becomes 2); a label map '
                f'holds class indices: save it as an 8-bit single-channel PNG of them')):
            dataset[sample_of(dataset, path)]


def save_with_orientation(path, orientation):
    image = Image.open(path)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes())


@pytest.mark.parametrize('orientation', [3, 6])
def test_an_image_with_an_exif_orientation_is_named(ade20k_copy, orientation):
    """mmcv turns the image upright, the label PNG is used as stored: a half turn (or a flip,
    or a square photo turned) passed every check and trained on misplaced labels."""
    label_path = first_label_map(ade20k_copy)
    image_path = ade20k_copy / 'images' / 'training' / label_path.with_suffix('.jpg').name
    save_with_orientation(image_path, orientation)
    dataset = build('train_dataloader', ade20k_copy)
    for _ in range(2):  # on every load
        with pytest.raises(ValueError, match=re.escape(
                f'{image_path}: EXIF orientation {orientation}: the image is loaded turned '
                f'upright, its label map {label_path} as stored, so they need not line up. '
                f'Store the image without the tag')):
            dataset[sample_of(dataset, label_path)]


def test_each_file_is_checked_once_over_two_epochs(ade20k_copy, opens_by_path):
    """The orientation and bit-depth checks opened every image and label map on every load of
    every epoch, and decoded a label map that is not 8-bit a second time each time."""
    save_16_bit(np.array(Image.open(first_label_map(ade20k_copy))),
                first_label_map(ade20k_copy))
    dataset = build('train_dataloader', ade20k_copy)
    opens_by_path.clear()
    for _ in range(2):
        for index in range(len(dataset)):
            dataset[index]
    files = [str(path) for folder in ('images', 'annotations')
             for path in (ade20k_copy / folder / 'training').iterdir()]
    assert len(files) == 2 * len(dataset) == 4
    assert opens_by_path == Counter(files)


def test_a_label_map_of_the_images_size_turned_is_named_with_the_exif_hint(ade20k_copy):
    path = first_label_map(ade20k_copy)
    label = Image.open(path)
    label.transpose(Image.Transpose.TRANSPOSE).save(path)
    dataset = build('train_dataloader', ade20k_copy)
    with pytest.raises(ValueError, match=re.escape(
            f'{path}: label map of {label.height}x{label.width} px for an image of '
            f'{label.width}x{label.height} px (turned by its EXIF orientation when loaded?)')):
        dataset[sample_of(dataset, path)]


def image_of(label_path):
    return label_path.parents[2] / 'images' / label_path.parent.name / \
        label_path.with_suffix('.jpg').name


@pytest.mark.parametrize('broken, damage, reason', [
    ('label map', lambda path: path.write_bytes(b''), 'empty file'),
    ('label map', lambda path: path.write_bytes(path.read_bytes()[:-200]),
     'OSError: image file is truncated'),
    ('image', lambda path: path.write_bytes(b''), 'empty file'),
    ('image', lambda path: path.write_text('not an image'),
     'UnidentifiedImageError: cannot identify image file'),
], ids=['empty label map', 'truncated label map', 'empty image', 'text as image'])
def test_a_file_that_does_not_decode_is_named_with_the_reason(ade20k_copy, broken, damage,
                                                              reason):
    """mmseg stopped with PIL's 'cannot identify image file <_io.BytesIO ...>' or 'image file
    is truncated', OpenCV's '!buf.empty()' assertion or mmcv's 'failed to load image' without
    the reason."""
    label_path = first_label_map(ade20k_copy)
    path = label_path if broken == 'label map' else image_of(label_path)
    damage(path)
    dataset = build('train_dataloader', ade20k_copy)
    with pytest.raises(ValueError, match=re.escape(f'{path}: {reason}')):
        dataset[sample_of(dataset, label_path)]


def test_a_file_that_does_not_decode_is_named_in_one_line_from_a_dataloader_worker(
        ade20k_copy):
    from torch.utils.data import DataLoader

    from fastmim.engine.user_errors import is_user_error, user_message
    label_path = first_label_map(ade20k_copy)
    label_path.write_bytes(b'')
    dataset = build('train_dataloader', ade20k_copy)
    index = sample_of(dataset, label_path)
    loader = DataLoader(dataset, sampler=[index], num_workers=1, collate_fn=lambda batch: batch)
    with pytest.raises(ValueError) as error:
        next(iter(loader))
    assert is_user_error(error.value)
    assert user_message(error.value) == f'ValueError: {label_path}: empty file'


def test_a_pipeline_error_that_is_not_about_a_file_keeps_its_type(ade20k_copy, monkeypatch):
    """Only an error of a file that does not decode is renamed; a bug keeps its traceback."""
    dataset = build('train_dataloader', ade20k_copy)
    check = next(step for step in dataset.pipeline.transforms
                 if type(step).__name__ == 'CheckSegMap')

    def bug(results):
        raise AssertionError('a bug')
    monkeypatch.setattr(check, 'transform', bug)
    with pytest.raises(AssertionError, match='a bug'):
        dataset[0]


@pytest.mark.parametrize('loader, split', [('train_dataloader', 'training'),
                                           ('val_dataloader', 'validation')])
def test_an_image_without_its_label_map_is_named_when_the_dataset_is_built(ade20k_copy, loader,
                                                                          split):
    """mmseg lists the images and pairs each with a label map of the same name without looking
    for it: the missing file stopped training with a FileNotFoundError in a dataloader worker,
    whenever the sampler reached it (on ADE20K, anywhere in 160k iterations)."""
    missing = first_label_map(ade20k_copy, split)
    missing.unlink()
    image = ade20k_copy / 'images' / split / missing.with_suffix('.jpg').name
    with pytest.raises(ValueError, match=re.escape(
            f'{missing.parent}: no label map for 1 of the {1 if split == "validation" else 2} '
            f'images: {missing.name} (for {image})')):
        build(loader, ade20k_copy)


@pytest.mark.parametrize('suffix, found', [(None, 'an empty folder'), ('.png', '2 .png files')])
def test_an_image_folder_without_images_of_the_suffix_is_named(ade20k_copy, suffix, found):
    """mmseg built an empty dataset and stopped with 'ValueError: need at least one array to
    concatenate', which names neither the folder nor the suffix it looked for."""
    folder = ade20k_copy / 'images' / 'training'
    for image in folder.glob('*.jpg'):
        if suffix is None:
            image.unlink()
        else:
            image.rename(image.with_suffix(suffix))
    with pytest.raises(ValueError, match=re.escape(
            f"{folder}: no image ending in '.jpg' (img_suffix) in it: {found}")):
        build('train_dataloader', ade20k_copy)


def test_a_label_map_saved_in_colour_is_named(ade20k_copy):
    """A label PNG converted to RGB (an image editor, PIL's convert('RGB')) keeps valid values
    in each channel: mmseg loads it as (H, W, 3) and training stopped at the batch's stacking
    with 'stack expects each tensor to be equal size', naming no file."""
    path = first_label_map(ade20k_copy)
    Image.open(path).convert('RGB').save(path)
    dataset = build('train_dataloader', ade20k_copy)
    with pytest.raises(ValueError, match=re.escape(
            f'{path}: label map of 3 channels; a label map is a single-channel PNG of class '
            f'indices')):
        dataset[sample_of(dataset, path)]


def test_a_list_file_that_is_not_text_is_named(ade20k_copy):
    """mmseg reads ann_file as lines of image names: a binary file (an archive, a label map
    given by mistake) stopped with a bare UnicodeDecodeError naming no file."""
    ann_file = ade20k_copy / 'train.txt'
    ann_file.write_bytes(b'\x89PNG\r\n\x1a\n\xff\xfe')
    with pytest.raises(ValueError, match=re.escape(
            f'{ann_file}: not a list of image names (ann_file): not UTF-8 text (byte 0)')):
        build('train_dataloader', ade20k_copy, ann_file=str(ann_file))
