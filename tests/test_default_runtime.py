"""What every fastmim config gets from configs/_base_/default_runtime.py."""
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.runner import Runner

from fastmim.engine.launch import adapt_to_device

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'


def test_a_config_with_its_own_custom_hooks_still_writes_the_geometry(tmp_path):
    """The demo replaces custom_hooks with its reconstruction hook; its checkpoints still hold
    plain types and meta['geometry'], because CheckpointMetaHook is a default hook."""
    cfg = Config.fromfile(str(CONFIGS / 'fastmim' / 'demo_vit_tiny_embedded.py'))
    assert [hook.type for hook in cfg.custom_hooks] == ['ReconstructionVisualizationHook']
    pipeline = cfg.train_dataloader.dataset.pipeline
    cfg.merge_from_dict({
        'work_dir': str(tmp_path),
        'train_dataloader.batch_size': 2,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_dataloader.dataset': dict(type='EmbeddedPhotos', num_samples=2,
                                         pipeline=pipeline, _delete_=True),
        'train_cfg.max_epochs': 1,
        'default_hooks.checkpoint.interval': 1,
    })
    adapt_to_device(cfg)
    Runner.from_cfg(cfg).train()

    checkpoint = torch.load(tmp_path / 'epoch_1.pth', weights_only=True)
    geometry = checkpoint['meta']['geometry']
    assert geometry['input_size'] == [128, 128] and geometry['block_size'] == 16
    assert geometry['target'] == 'HOGGenerator'


def test_seed_is_the_releases():
    """The release's main_pretrain.py / main_finetune.py seed each process with --seed (0)
    plus its rank; mmengine's diff_rank_seed adds the rank the same way."""
    cfg = Config.fromfile(str(CONFIGS / '_base_' / 'default_runtime.py'))
    assert cfg.randomness == dict(seed=0, diff_rank_seed=True)
