"""An epoch-based run saved by 2 processes and resumed by 1, as a requeued job that gets fewer
nodes: under DDP and under ``--fsdp`` it starts from the saved weights and optimiser state, bit
for bit, at the saved iteration, trains the rest of the epoch's images, and says that each
update now averages over half the images at the checkpoint's lr.

The demo recipe shrunk to a 2-block ViT, 8 photos, batch 2 per process (2 iterations per epoch
on 2 processes, 4 on 1), trained on gloo. LoadedStateHook (recording_hooks.py) writes what the
process holds when training starts (after the resume) and the dataset indices each iteration
trains.
"""
import pytest
import torch

# Added to the shrunk demo (tiny_demo.pretraining: 8 photos, batch 2).
RECORDED = '''
custom_imports = dict(imports=['recording_hooks'], allow_failed_imports=False)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=-1))
randomness = dict(seed=0)
custom_hooks = [dict(type='LoadedStateHook')]
'''


@pytest.fixture(scope='module')
def config(tmp_path_factory, tiny_demo):
    path = tmp_path_factory.mktemp('config') / 'epoch_based.py'
    path.write_text(tiny_demo.pretraining() + RECORDED)
    return path


def _tensors(value, prefix=''):
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f'{prefix}.{key}')
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, f'{prefix}.{index}')


@pytest.mark.parametrize('flags', [[], ['--fsdp']], ids=['ddp', 'fsdp'])
def test_two_processes_resumed_by_one_load_the_saved_state_and_say_the_batch_halved(
        train_job, trained_samples, config, tmp_path, flags):
    saved_dir, resumed_dir = tmp_path / 'two', tmp_path / 'one'
    train_job(config, saved_dir, *flags, '--cfg-options', 'train_cfg.max_epochs=1', processes=2)
    log = train_job(config, resumed_dir, *flags, '--resume', str(saved_dir / 'epoch_1.pth'),
                    '--cfg-options', 'train_cfg.max_epochs=2', processes=1)
    saved = torch.load(saved_dir / 'epoch_1.pth', weights_only=False)
    loaded = torch.load(resumed_dir / 'loaded.pth', weights_only=False)
    assert (loaded['iter'], loaded['epoch']) == (2, 1)
    for key in ('state_dict', 'optimizer'):  # a whole state dict under FSDP too
        ours, theirs = dict(_tensors(loaded[key])), dict(_tensors(saved[key]))
        assert ours.keys() == theirs.keys() and ours, key
        assert all(torch.equal(ours[name], theirs[name]) for name in ours), key
    trained = trained_samples(resumed_dir)
    assert sorted(trained) == [2, 3, 4, 5]  # epoch 2: 4 iterations of 1 x 2 images
    assert sorted(i for batch in trained.values() for i in batch) == list(range(8))
    assert ('resuming with 2 images per optimiser update (train_dataloader.batch_size=2 x 1 '
            'processes x 1 accumulated); the checkpoint was written at 4 (2 x 2 processes x 1)'
            ) in log
    assert ("the lr stays the checkpoint's (auto_scale_lr does not rescale a resumed run)"
            in log)
    assert ('each update averages 2 images instead of 4 at the same lr. To train on as the '
            "checkpoint's run did, resume with 2 processes, or set train_dataloader.batch_size=4, "
            'or optim_wrapper.accumulative_counts=2') in log
