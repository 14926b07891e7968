"""ResumableEpochBasedTrainLoop refuses an epoch of no batch in terms of the config."""
import pytest
from mmengine.runner import Runner

import fastmim  # noqa: F401  registers modules


def test_a_batch_larger_than_the_dataset_is_named_before_the_schedulers(tmp_path,
                                                                        tiny_pretraining):
    cfg = tiny_pretraining(tmp_path, batch_size=8, num_samples=4, max_epochs=1)
    cfg['train_cfg'] = dict(type='ResumableEpochBasedTrainLoop', max_epochs=1)
    cfg['optim_wrapper'] = dict(optimizer=dict(type='AdamW', lr=1e-3))
    # mmengine's own failure for this case is an assertion inside this scheduler's build
    cfg['param_scheduler'] = dict(type='CosineAnnealingLR', by_epoch=True, T_max=1,
                                  convert_to_iter_based=True)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=r'no batch per epoch: the dataset has 4 images, 4 per '
                       r'process on 1 process\(es\), fewer than '
                       r'train_dataloader.batch_size=8 with drop_last=True'):
        runner.train()
