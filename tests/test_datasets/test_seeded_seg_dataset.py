"""fastmim.SeededSegDataset (fastmim/datasets/seeded_seg.py): mmseg's BaseSegDataset whose
training samples are flipped from their SeededIndex's seed, built from the dense-task config.
(tests/test_tools/test_fashion_mnist_dense_resume.py resumes the config's runs.)"""
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

from fastmim.datasets import SeededIndex

ROOT = Path(__file__).resolve().parents[2]
UPERNET = ROOT / 'configs' / 'experiments' / 'fashion_mnist_upernet.py'


@pytest.fixture
def dataset(tmp_path):
    """The config's training dataset on 4 left-right asymmetric 8x8 canvases."""
    from mmseg.registry import DATASETS
    for kind in ('images', 'annotations'):
        (tmp_path / kind / 'training').mkdir(parents=True)
    for index in range(4):
        image = np.zeros((8, 8), np.uint8)
        image[:, :index + 1] = 200  # the left columns: a flip moves them right
        Image.fromarray(image).save(tmp_path / 'images' / 'training' / f'{index:06d}.png')
        label = (image > 0).astype(np.uint8)
        Image.fromarray(label).save(tmp_path / 'annotations' / 'training' / f'{index:06d}.png')
    cfg = Config.fromfile(str(UPERNET))
    assert cfg.train_dataloader.dataset.type == 'fastmim.SeededSegDataset'
    assert cfg.train_dataloader.sampler.type == 'fastmim.ResumableInfiniteSampler'
    assert cfg.train_cfg.type == 'fastmim.ResumableIterBasedTrainLoop'
    assert cfg.default_hooks.preemption.type == 'fastmim.PreemptionHook'
    init_default_scope('mmseg')
    return DATASETS.build(dict(cfg.train_dataloader.dataset, data_root=str(tmp_path) + '/'))


def flipped(sample) -> bool:
    return bool(sample['inputs'][0, 0, -1] > 0)  # the top right pixel, left only unflipped


def test_a_seeded_sample_is_flipped_by_its_seed_alone(dataset):
    """The same SeededIndex flips image and label map the same way whatever state the
    generators are in (mmseg's dataset flips from them); over seeds both outcomes occur."""
    from fastmim.datasets.seeded_seg import SeededSegDataset
    assert type(dataset) is SeededSegDataset

    outcomes = []
    for seed in range(16):
        fetched = []
        for state in (seed, 1000 + seed):
            torch.manual_seed(state)
            np.random.seed(state)
            fetched.append(dataset[SeededIndex(2, seed=seed)])
        first, again = fetched
        assert torch.equal(first['inputs'], again['inputs'])
        assert torch.equal(first['data_samples'].gt_sem_seg.data,
                           again['data_samples'].gt_sem_seg.data)
        assert flipped(first) == bool(first['data_samples'].gt_sem_seg.data[0, 0, -1])
        outcomes.append(flipped(first))
    assert set(outcomes) == {False, True}


def test_the_generators_are_left_as_they_were(dataset):
    torch.manual_seed(7)
    np.random.seed(7)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    dataset[SeededIndex(1, seed=3)]
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)


def test_a_plain_index_is_mmseg_s_sample(dataset):
    """Validation's DefaultSampler yields plain ints: mmseg's BaseSegDataset behaviour."""
    sample = dataset[0]
    assert sample['inputs'].shape == (3, 8, 8)
    assert sample['data_samples'].gt_sem_seg.data.shape == (1, 8, 8)
