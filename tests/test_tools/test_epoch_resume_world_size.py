"""An epoch-based run saved by 2 processes and resumed by 1, as a requeued job that gets fewer
nodes: under DDP and under ``--fsdp`` it starts from the saved weights and optimiser state, bit
for bit, at the saved iteration, trains the rest of the epoch's images, and says that each
update now averages over half the images at the checkpoint's lr.

The demo recipe shrunk to a 2-block ViT, 8 photos, batch 2 per process (2 iterations per epoch
on 2 processes, 4 on 1), trained on gloo. A hook writes what the process holds when training
starts (after the resume) and the dataset indices each iteration trains.
"""
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'

LOADED_HOOK = '''
import json

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from fastmim.registry import HOOKS


@HOOKS.register_module()
class LoadedStateHook(Hook):
    """Saves the weights and optimiser state held when training starts to loaded.pth (rank 0;
    whole under FSDP, gathered by every rank) and appends (iteration, dataset indices) of each
    iteration to samples.rank<r>."""
    priority = 'LOWEST'

    def before_train(self, runner):
        strategy = getattr(runner, 'strategy', None)
        if strategy is not None:
            state = dict(state_dict=strategy.model_state_dict(),
                         optimizer=strategy.optim_state_dict())
        else:
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            state = dict(state_dict=model.state_dict(),
                         optimizer=runner.optim_wrapper.state_dict())
        if get_rank() == 0:
            torch.save(dict(state, iter=runner.iter, epoch=runner.epoch),
                       f'{runner.work_dir}/loaded.pth')

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        indices = [int(s.metainfo['sample_idx']) for s in data_batch['data_samples']]
        with open(f'{runner.work_dir}/samples.rank{get_rank()}', 'a') as f:
            f.write(json.dumps([runner.iter, indices]) + '\\n')
'''

CONFIG = f'''
_base_ = [{str(DEMO)!r}]
custom_imports = dict(imports=['loaded_state_hook'], allow_failed_imports=False)
model = dict(backbone=dict(arch=dict(embed_dim=32, depth=2, num_heads=2)),
             neck=dict(embed_dim=32, num_heads=2))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(num_samples=8))
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=-1))
randomness = dict(seed=0)
custom_hooks = [dict(type='LoadedStateHook')]
'''


@pytest.fixture(scope='module')
def runs(load_script):
    """tests/test_tools/test_train.py: ``run`` of tools/train.py and tools/dist_train.sh."""
    return load_script(Path(__file__).with_name('test_train.py'))


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    folder = tmp_path_factory.mktemp('config')
    (folder / 'loaded_state_hook.py').write_text(LOADED_HOOK)
    (folder / 'epoch_based.py').write_text(CONFIG)
    return folder


def _train(runs, config, work_dir, processes, epochs, *args):
    result = runs.run([str(config / 'epoch_based.py'), str(processes), '--work-dir',
                       str(work_dir), *args, '--cfg-options', f'train_cfg.max_epochs={epochs}'],
                      env={'PYTHONPATH': f'{ROOT}:{config}'}, script='dist_train.sh')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _tensors(value, prefix=''):
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f'{prefix}.{key}')
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, f'{prefix}.{index}')


def _trained(work_dir):
    """{iteration: the dataset indices the job trained at it, over its ranks}."""
    trained = {}
    for path in sorted(work_dir.glob('samples.rank*')):
        for line in path.read_text().splitlines():
            iteration, indices = json.loads(line)
            trained.setdefault(iteration, []).extend(indices)
    return trained


@pytest.mark.parametrize('flags', [[], ['--fsdp']], ids=['ddp', 'fsdp'])
def test_two_processes_resumed_by_one_load_the_saved_state_and_say_the_batch_halved(
        runs, config, tmp_path, flags):
    saved_dir, resumed_dir = tmp_path / 'two', tmp_path / 'one'
    _train(runs, config, saved_dir, 2, 1, *flags)
    log = _train(runs, config, resumed_dir, 1, 2, *flags, '--resume',
                 str(saved_dir / 'epoch_1.pth'))
    saved = torch.load(saved_dir / 'epoch_1.pth', weights_only=False)
    loaded = torch.load(resumed_dir / 'loaded.pth', weights_only=False)
    assert (loaded['iter'], loaded['epoch']) == (2, 1)
    for key in ('state_dict', 'optimizer'):  # a whole state dict under FSDP too
        ours, theirs = dict(_tensors(loaded[key])), dict(_tensors(saved[key]))
        assert ours.keys() == theirs.keys() and ours, key
        assert all(torch.equal(ours[name], theirs[name]) for name in ours), key
    trained = _trained(resumed_dir)
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
