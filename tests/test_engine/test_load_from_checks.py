"""A run started with ``load_from`` (no ``--resume``) from weights that do not fit its model:
mmengine's non-strict load only prints the mismatches to stdout and trains from random
weights with exit status 0."""
import pytest
import torch
from mmengine.runner import Runner

import fastmim  # noqa: F401  registers modules
from fastmim.errors import CheckpointError


def _run(tmp_path, tiny_pretraining, embed_dim, **extra):
    cfg = tiny_pretraining(tmp_path, batch_size=2, num_samples=4, max_epochs=1)
    cfg['model']['backbone']['arch']['embed_dim'] = embed_dim
    cfg['model']['neck']['embed_dim'] = embed_dim
    cfg['optim_wrapper'] = dict(optimizer=dict(type='AdamW', lr=1e-3))
    cfg['default_hooks'] = dict(checkpoint_meta=dict(type='CheckpointMetaHook'),
                                resume_checks=dict(type='ResumeChecksHook'))
    cfg.update(extra)
    return Runner.from_cfg(cfg)


@pytest.fixture
def load_messages(monkeypatch):
    """What the load_from check logs, as a list."""
    from fastmim.engine.hooks import load_from_checks
    messages = []
    monkeypatch.setattr(load_from_checks, 'print_log',
                        lambda message, **kwargs: messages.append(message))
    return messages


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tiny_pretraining):
    """The checkpoint of one epoch of the embed_dim-32 model."""
    folder = tmp_path_factory.mktemp('trained')
    _run(folder, tiny_pretraining, 32).train()
    return folder / 'epoch_1.pth'


def test_a_checkpoint_of_another_model_size_is_refused(tmp_path, tiny_pretraining, trained):
    runner = _run(tmp_path, tiny_pretraining, 64, load_from=str(trained))
    # mask_token (pixel values) and the decoder's output bias fit any model size
    with pytest.raises(CheckpointError, match=rf'{trained} gives the FastMIM only mask_token, '
                       r'neck\.predict\.bias \(load_from\): .*neck\.embed\.weight: '
                       r'checkpoint \(32, 32\) vs model '
                       r'\(64, 64\).*the config that wrote it.*init_cfg'):
        runner.train()


def test_a_file_of_unrelated_weights_is_refused(tmp_path, tiny_pretraining):
    from safetensors.torch import save_file
    path = tmp_path / 'other.safetensors'
    save_file({'foo.weight': torch.zeros(3)}, str(path))
    runner = _run(tmp_path / 'work', tiny_pretraining, 32, load_from=str(path))
    with pytest.raises(CheckpointError, match=r'other\.safetensors gives the FastMIM none of its '
                       r'weights \(load_from\): the file holds foo \(1\), the model mask_token'):
        runner.train()


def test_weights_that_do_not_fit_are_named_in_one_warning(tmp_path, tiny_pretraining, trained,
                                                          load_messages):
    """A COCO detector loaded with another num_classes: the head is left out, the rest loads,
    and the run goes on."""
    checkpoint = torch.load(trained, weights_only=True)
    checkpoint['state_dict']['neck.embed.weight'] = torch.zeros(5, 5)
    del checkpoint['state_dict']['neck.embed.bias']
    path = tmp_path / 'other_head.pth'
    torch.save(checkpoint, path)
    runner = _run(tmp_path / 'work', tiny_pretraining, 32, load_from=str(path))
    runner.train()
    assert runner.epoch == 1
    [message] = load_messages
    assert message.startswith(f'{path} does not fit FastMIM (load_from loads ')
    assert 'neck.embed.weight: checkpoint (5, 5) vs model (32, 32)' in message
    assert 'neck.embed.bias (32,)' in message


def test_a_checkpoint_of_the_same_model_loads_without_a_word(tmp_path, tiny_pretraining,
                                                              trained, load_messages):
    runner = _run(tmp_path, tiny_pretraining, 32, load_from=str(trained))
    runner.train()
    assert load_messages == []


def test_a_config_without_the_resume_checks_hook_still_refuses(tmp_path, tiny_pretraining,
                                                               trained):
    runner = _run(tmp_path, tiny_pretraining, 64, load_from=str(trained))
    runner._hooks = [hook for hook in runner.hooks if type(hook).__name__ != 'ResumeChecksHook']
    with pytest.raises(CheckpointError, match=r'gives the FastMIM only mask_token'):
        runner.train()


def test_train_py_refuses_a_load_from_of_unrelated_weights(tmp_path):
    """The run trained from random weights with exit status 0, the 'missing keys' printed to
    stdout only."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import save_file
    root = Path(__file__).resolve().parents[2]
    path = tmp_path / 'other.safetensors'
    save_file({'foo.weight': torch.zeros(3)}, str(path))
    env = {**os.environ, 'PYTHONPATH': str(root)}
    env.pop('FASTMIM_DEBUG', None)
    result = subprocess.run(
        [sys.executable, str(root / 'tools' / 'train.py'),
         'configs/fastmim/demo_vit_tiny_embedded.py', '--work-dir', str(tmp_path / 'work'),
         '--cfg-options', f'load_from={path}', 'train_dataloader.num_workers=0',
         'train_dataloader.persistent_workers=False'],
        cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    assert (f'error: CheckpointError: {path} gives the FastMIM none of its weights (load_from)'
            in result.stderr)
    assert not list((tmp_path / 'work').glob('*.pth'))
