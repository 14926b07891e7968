"""tools/analysis/target_baseline.py: the loss of predicting the average target everywhere.

References computed here with numpy: the masked per-channel variance of the targets, and the
HOG of the crops from the float64 transcription of the definition in test_hog.py.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from fastmim.errors import LaunchError
from fastmim.models.algorithms.fastmim import FastMIM
from fastmim.models.losses import MaskedMSELoss

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'
# Four embedded photos, two a batch, loaded in the test's process.
TINY_DATA = {'train_dataloader.dataset.num_samples': 4, 'train_dataloader.batch_size': 2,
             'train_dataloader.num_workers': 0, 'train_dataloader.persistent_workers': False}


@pytest.fixture(scope='module')
def tool(load_script):
    return load_script(ROOT / 'tools' / 'analysis' / 'target_baseline.py')


@pytest.fixture(scope='module')
def reference_hog(load_script):
    test_hog = ROOT / 'tests' / 'test_models' / 'test_targets' / 'test_hog.py'
    return load_script(test_hog).reference_hog


def numpy_masked_variance(targets, masks):
    """Mean over channels of each channel's variance over the masked cells (ddof 0)."""
    targets = np.asarray(targets, dtype=np.float64)
    picked = targets.transpose(1, 0, 2, 3)[:, np.asarray(masks, dtype=bool)]  # (C, masked)
    return picked.var(axis=1).mean()


def random_targets(seed=0, shape=(6, 5, 8, 8)):
    """Targets with a different mean and scale per channel, and a random mask."""
    rng = np.random.default_rng(seed)
    channels = shape[1]
    targets = rng.normal(rng.uniform(-2, 2, (1, channels, 1, 1)),
                         rng.uniform(0.1, 1.0, (1, channels, 1, 1)), shape)
    masks = rng.random((shape[0],) + shape[2:]) < 0.75
    return torch.from_numpy(targets.astype(np.float32)), torch.from_numpy(masks)


def test_the_baseline_is_the_masked_per_channel_variance(tool):
    targets, masks = random_targets()
    loss, mean = tool.mean_target_loss(MaskedMSELoss(), targets, masks)
    assert loss == pytest.approx(numpy_masked_variance(targets, masks), rel=1e-5)
    picked = targets.numpy().transpose(1, 0, 2, 3)[:, masks.numpy()]
    np.testing.assert_allclose(mean.flatten().numpy(), picked.mean(axis=1), rtol=1e-5)


@pytest.mark.parametrize('offset', ['zero', 'median', 'unmasked mean', 'small shift'])
def test_any_other_constant_scores_higher(tool, offset):
    """The mean minimises the squared error: any other constant c scores the variance plus the
    channels' mean squared distance of c from the mean."""
    targets, masks = random_targets(seed=1)
    criterion = MaskedMSELoss()
    loss, mean = tool.mean_target_loss(criterion, targets, masks)
    other = {'zero': torch.zeros_like(mean),
             'median': targets.transpose(0, 1).flatten(1).median(dim=1).values.view_as(mean),
             'unmasked mean': targets.mean(dim=(0, 2, 3), keepdim=True),
             'small shift': mean + 0.01}[offset]
    other_loss = float(criterion(other.expand_as(targets), targets, masks))
    distance = ((other - mean).double() ** 2).mean().item()
    assert other_loss > loss
    assert other_loss == pytest.approx(numpy_masked_variance(targets, masks) + distance, rel=1e-5)


def test_on_the_demo_crops_it_is_the_masked_variance_of_their_hog(tool, reference_hog,
                                                                   monkeypatch):
    """End to end on four embedded photos, two passes: the crops the model's mask generator
    saw are the pipeline's 128-px crops, normalised; the masks cover 75% of the cells in whole
    mask blocks; and the baseline is the masked variance of the HOG of those crops, computed
    with the numpy reference."""
    from fastmim.engine.config_loading import load_config
    seen_inputs, seen_masks = [], []
    generate_mask, cell_mask = FastMIM.generate_mask, FastMIM.cell_mask

    def recording_generate_mask(self, inputs):
        seen_inputs.append(inputs.clone())
        return generate_mask(self, inputs)

    def recording_cell_mask(self, block_mask):
        seen_masks.append(cell_mask(self, block_mask))
        return seen_masks[-1]

    monkeypatch.setattr(FastMIM, 'generate_mask', recording_generate_mask)
    monkeypatch.setattr(FastMIM, 'cell_mask', recording_cell_mask)
    cfg = load_config(str(DEMO_CONFIG), TINY_DATA)
    baseline = tool.target_baseline(cfg, passes=2, seed=3)

    inputs = torch.cat(seen_inputs).numpy().astype(np.float64)
    masks = torch.cat(seen_masks).numpy()
    assert inputs.shape == (8, 3, 128, 128) and baseline['images'] == 8
    pixels = inputs * np.array([58.395, 57.12, 57.375])[:, None, None] + \
        np.array([123.675, 116.28, 103.53])[:, None, None]
    np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)  # uint8 crops, normalised
    assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3
    assert masks.shape == (8, 16, 16) and masks.mean(axis=(1, 2)).tolist() == [0.75] * 8
    k = cfg.model.block_size // 8  # cells of 8 px per mask block side (16-px blocks: 2)
    blocks = masks.reshape(8, 16 // k, k, 16 // k, k)
    assert k > 1 and (blocks == blocks[:, :, :1, :, :1]).all()

    hog = np.stack([reference_hog(image.astype(np.float32), 9, 8, True)[0] for image in inputs])
    assert baseline['loss'] == pytest.approx(numpy_masked_variance(hog, masks), rel=1e-3)
    assert baseline['channels'] == 27 and baseline['cells'] == (16, 16)
    assert baseline['mask_fraction'] == 0.75 and baseline['dataset_size'] == 4


def test_seeded_and_capped(tool):
    from fastmim.engine.config_loading import load_config
    cfg = load_config(str(DEMO_CONFIG), TINY_DATA)
    first = tool.target_baseline(cfg, passes=3, seed=5, max_images=5)
    again = tool.target_baseline(cfg, passes=3, seed=5, max_images=5)
    other_seed = tool.target_baseline(cfg, passes=3, seed=6, max_images=5)
    assert first['images'] == 5
    assert first['loss'] == again['loss'] != other_seed['loss']


def test_a_model_without_masks_and_targets_is_refused(tool):
    """A fine-tuning config's classifier has no mask generator nor target: one error naming
    what it lacks, before any data is read."""
    with pytest.raises(LaunchError, match=r'ft\.py: its model Linear is no masked image '
                       r'modeling model \(it lacks data_preprocessor, generate_mask, cell_mask, '
                       r'target_generator, criterion\)'):
        tool.check_masked_image_model(torch.nn.Linear(2, 2), 'ft.py')


def test_the_command_prints_the_baseline(tool, capsys):
    options = [f'{key}={value}' for key, value in TINY_DATA.items()]
    baseline = tool.main([str(DEMO_CONFIG), '--passes', '1', '--cfg-options', *options])
    out = capsys.readouterr().out
    assert f"everywhere: {baseline['loss']:.5f} (+-{baseline['batch_spread']:.5f} from one " \
           'batch of 2 to the next)' in out
    assert 'data: 4 training crops of a dataset of 4 (seed 0), 75% of cells masked' in out
    assert 'target: HOGGenerator, 27 channels on a 16 x 16 cell grid' in out


@pytest.mark.parametrize('seed, error', [('-1', 'must be 0 or more, got -1'),
                                         (str(2 ** 32), 'must be at most 4294967295')])
def test_a_seed_numpy_cannot_take_is_refused_where_it_is_typed(tool, capsys, seed, error):
    """numpy seeds with 0 to 2**32 - 1: another seed ended in its traceback after the config
    and model were loaded."""
    with pytest.raises(SystemExit):
        tool.parse_args([str(DEMO_CONFIG), '--seed', seed])
    assert f'argument --seed: {error}' in capsys.readouterr().err


def test_the_largest_seed_numpy_takes_is_accepted(tool):
    assert tool.parse_args([str(DEMO_CONFIG), '--seed', str(2 ** 32 - 1)]).seed == 2 ** 32 - 1
