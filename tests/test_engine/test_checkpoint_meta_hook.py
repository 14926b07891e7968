"""CheckpointMetaHook refuses to resume a checkpoint of another model in one line."""
import pytest
from mmengine.runner import Runner

import fastmim  # noqa: F401  registers modules
from fastmim.errors import CheckpointError


def _run(tmp_path, tiny_pretraining, embed_dim, **extra):
    cfg = tiny_pretraining(tmp_path, batch_size=2, num_samples=4, max_epochs=1)
    cfg['model']['backbone']['arch']['embed_dim'] = embed_dim
    cfg['model']['neck']['embed_dim'] = embed_dim
    cfg['optim_wrapper'] = dict(optimizer=dict(type='AdamW', lr=1e-3))
    cfg['custom_hooks'] = [dict(type='CheckpointMetaHook')]
    cfg.update(extra)
    return Runner.from_cfg(cfg)


def test_resuming_a_checkpoint_of_another_model_size_is_refused(tmp_path, tiny_pretraining):
    _run(tmp_path / 'a', tiny_pretraining, 32).train()
    # the same work dir, by --resume without a path: mmengine finds the checkpoint itself
    runner = _run(tmp_path / 'a', tiny_pretraining, 64, resume=True,
                  train_cfg=dict(by_epoch=True, max_epochs=2))
    with pytest.raises(CheckpointError, match=r'a/epoch_1.pth does not fit FastMIM \(--resume '
                       r'continues the model it holds\):\n  shape mismatches.*\n    '
                       r'neck\.embed\.weight: checkpoint \(32, 32\) vs model \(64, 64\)'):
        runner.train()


def test_resuming_a_checkpoint_of_a_deeper_model_names_its_extra_blocks(tmp_path,
                                                                       tiny_pretraining):
    _run(tmp_path / 'a', tiny_pretraining, 32).train()
    runner = _run(tmp_path / 'a', tiny_pretraining, 32, resume=True,
                  train_cfg=dict(by_epoch=True, max_epochs=2))
    runner.model.backbone.blocks = runner.model.backbone.blocks[:0]  # a ViT of no block
    with pytest.raises(CheckpointError, match=r'unexpected keys .*: \d+\n    '
                       r'backbone\.blocks\.0\.norm1\.weight \(32,\)'):
        runner.train()


def test_resuming_the_same_model_still_works(tmp_path, tiny_pretraining):
    _run(tmp_path / 'a', tiny_pretraining, 32).train()
    runner = _run(tmp_path / 'a', tiny_pretraining, 32, resume=True,
                  train_cfg=dict(by_epoch=True, max_epochs=2))
    runner.train()
    assert runner.epoch == 2
