"""Every config under configs/ (and projects/*/configs/) builds and trains one iteration.

Sizes are shrunk through the same ``merge_from_dict`` that ``--cfg-options`` uses, never by
copying configs: the model, pipeline, optimiser and schedule are the config's own, only the data
(a few embedded real photos), the batch size and the length of the run change.
"""
import math
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from fastmim.engine.launch import adapt_to_device

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(
    path for pattern in ('configs/**/*.py', 'projects/*/configs/**/*.py')
    for path in ROOT.glob(pattern) if '_base_' not in path.parts)


def shrink_pretrain(cfg, work_dir):
    """One iteration of batch 2 on embedded real photos, through the config's own pipeline."""
    pipeline = cfg.train_dataloader.dataset.pipeline
    cfg.merge_from_dict({
        'work_dir': str(work_dir),
        'train_dataloader.batch_size': 2,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_dataloader.pin_memory': False,
        'train_dataloader.dataset': dict(type='EmbeddedPhotos', num_samples=2,
                                         pipeline=pipeline, _delete_=True),
        'train_cfg.max_epochs': 1,
        'default_hooks.checkpoint': None,
        'default_hooks.logger.interval': 1,
    })
    # Progressive-resolution stages state their own batch sizes: keep the update batch at 2.
    for hook in cfg.get('custom_hooks', []):
        for stage in hook.get('stages', []):
            stage['batch_size'] = 2 // stage.get('accumulative_counts', 1)
    return cfg


SHRINKERS = {'fastmim': shrink_pretrain}


@pytest.mark.parametrize('config', CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_trains_one_iteration(config, tmp_path):
    cfg = Config.fromfile(str(config))
    scope = cfg.get('default_scope', 'fastmim')
    assert scope in SHRINKERS, f'{config}: no shrinker for default_scope {scope!r}'
    cfg = SHRINKERS[scope](cfg, tmp_path)
    adapt_to_device(cfg)

    runner = Runner.from_cfg(cfg)
    runner.train()

    assert runner.iter == 1
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert math.isfinite(loss) and loss > 0
