"""Exact resume of the Fashion-MNIST fine-tuning configs (fashion_mnist_finetune.py and the
linear probe and scratch run built on it).

They trained with mmengine's InfiniteSampler and IterBasedTrainLoop, which seed nothing per
iteration: a resumed run drew other drop-path masks than the uninterrupted one (its generators
had not been moved by the iterations before the checkpoint), so with drop_path_rate=0.1 a run of
8 iterations resumed at 4 ended with weights up to 3e-3 away, while docs/experiments.md
promises bit for bit. Here the config, shrunk through --cfg-options to 6 iterations of batch 4
on 60 synthetic images with drop path on, is resumed from its interval checkpoint of iteration
3 and must end as the uninterrupted run does, bit for bit.
"""
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from fastmim.datasets.fashion_mnist import SPLIT_FILES

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / 'configs' / 'experiments'
FINETUNE = EXPERIMENTS / 'fashion_mnist_finetune.py'
ITERATIONS = 6
ONE_THREAD = {'OMP_NUM_THREADS': '1'}  # bitwise equality needs the same threads in every run


def write_idx(path, array):
    """The idx layout of unsigned bytes: 0, 0, 0x08, rank, big-endian uint32 sizes, values."""
    header = bytes([0, 0, 0x08, array.ndim]) + b''.join(
        size.to_bytes(4, 'big') for size in array.shape)
    with gzip.open(path, 'wb') as file:
        file.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    """60 train images (6 per class) and 20 test images of 28x28 noise."""
    root = tmp_path_factory.mktemp('fashion_mnist')
    rng = np.random.default_rng(0)
    for split, labels in {'train': rng.permutation(np.repeat(np.arange(10), 6)),
                          'test': np.repeat(np.arange(10), 2)}.items():
        write_idx(root / SPLIT_FILES[split][0], rng.integers(0, 256, (len(labels), 28, 28)))
        write_idx(root / SPLIT_FILES[split][1], labels)
    return root


def options(data_root):
    """Two blocks, batches of 4, drop path 0.1, a checkpoint every 3 iterations, no
    validation, no pre-trained weights."""
    return ['model.backbone.init_cfg=None', 'model.backbone.arch.depth=2',
            'model.backbone.drop_path_rate=0.1', 'randomness.seed=0',
            *(f'{loader}.dataset.data_root={data_root}'
              for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')),
            'train_dataloader.dataset.label_fraction=1.0', 'train_dataloader.batch_size=4',
            f'train_cfg.max_iters={ITERATIONS}', f'train_cfg.val_interval={ITERATIONS + 1}',
            'default_hooks.checkpoint.interval=3', 'default_hooks.checkpoint.max_keep_ckpts=2',
            'default_hooks.logger.interval=1', 'log_processor.window_size=1']


def test_a_fine_tuning_with_drop_path_resumed_from_an_interval_checkpoint_is_exact(
        tmp_path, runs, data_root):
    args = [str(FINETUNE), '--cfg-options', *options(data_root)]
    reference = tmp_path / 'reference'
    result = runs.run(args + ['--work-dir', str(reference)], env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]

    resumed = tmp_path / 'resumed'
    resumed.mkdir()
    (resumed / 'iter_3.pth').write_bytes((reference / 'iter_3.pth').read_bytes())
    (resumed / 'last_checkpoint').write_text(str(resumed / 'iter_3.pth'))
    result = runs.run(args + ['--work-dir', str(resumed), '--resume'], env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]

    final = torch.load(resumed / f'iter_{ITERATIONS}.pth', weights_only=True)
    expected = torch.load(reference / f'iter_{ITERATIONS}.pth', weights_only=True)
    assert final['meta']['iter'] == expected['meta']['iter'] == ITERATIONS
    for key in ('state_dict', 'optimizer', 'param_schedulers'):
        runs.assert_same_state(final[key], expected[key], key)
    expected_losses = runs.losses(reference)
    resumed_losses = runs.losses(resumed)
    assert sorted(resumed_losses) == list(range(4, ITERATIONS + 1))
    assert resumed_losses == {step: expected_losses[step] for step in resumed_losses}


@pytest.mark.parametrize('name', ['fashion_mnist_finetune.py', 'fashion_mnist_linear_probe.py',
                                  'fashion_mnist_finetune_scratch.py'])
def test_every_fine_tuning_config_trains_with_the_resumable_loop_and_sampler(name):
    """The linear probe and the scratch run inherit the loop and sampler of the fine-tuning
    config, whose exact resume the test above checks."""
    cfg = Config.fromfile(str(EXPERIMENTS / name))
    assert cfg.train_cfg.type == 'fastmim.ResumableIterBasedTrainLoop'
    assert cfg.train_dataloader.sampler.type == 'fastmim.ResumableInfiniteSampler'
