"""fastmim.CheckedADE20KDataset names a label map that does not fit its image or the classes,
where mmseg fails at the batch's stacking (no file named) or inside the loss."""
import re
import shutil
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


def build(loader, data_root):
    """The recipe's dataset of ``loader`` (its own pipeline) on ``data_root``."""
    init_default_scope('mmseg')
    dataset = Config.fromfile(str(SEGMENTATION))[loader].dataset
    dataset.data_root = str(data_root)
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


def test_a_label_value_that_is_no_class_is_named(ade20k_copy):
    path = first_label_map(ade20k_copy, 'validation')
    label = np.array(Image.open(path))
    label[:2, :2] = 200  # 199 after reduce_zero_label: ADE20K has 150 classes
    Image.fromarray(label).save(path)
    dataset = build('val_dataloader', ade20k_copy)
    with pytest.raises(ValueError, match=rf'{path.name}: label values \[199\] are no class '
                       r'\(0..149 after reduce_zero_label, or 255 to ignore\)'):
        dataset[sample_of(dataset, path)]


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
