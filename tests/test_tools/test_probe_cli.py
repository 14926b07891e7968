"""Linear probing (tools/train.py) and kNN (tools/test.py) from a pre-training checkpoint, run
as a user runs them, on the demo configs and the embedded real photos."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from fastmim.registry import MODELS

ROOT = Path(__file__).resolve().parents[2]


def run(tool, args):
    return subprocess.run([sys.executable, str(ROOT / 'tools' / tool), *args], cwd=ROOT,
                          env={**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'},
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def pretraining_checkpoint(tmp_path_factory, tiny_demo):
    """A FastMIM checkpoint of a 2-block, 32-wide ViT at the demo's 128 px, as training saves
    it: state dict plus geometry."""
    torch.manual_seed(0)
    init_default_scope('fastmim')  # module-scoped: runs before the per-test fixture sets it
    model = MODELS.build(dict(
        type='FastMIM',
        backbone=dict(type='VisionTransformer', arch=dict(tiny_demo.arch),
                      img_size=128, patch_size=16, pos_embed_type='sincos'),
        neck=dict(type='MIMDecoder', embed_dim=32, depth=1, num_heads=2),
        target_generator=dict(type='HOGGenerator'),
        block_size=16))
    model.init_weights()
    path = tmp_path_factory.mktemp('pretrain') / 'epoch_1.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(geometry=model.geometry())), path)
    return path


@pytest.fixture(scope='module')
def finetuned_checkpoint(tmp_path_factory, tiny_demo):
    """What the demo's fine-tuning config saves, 2 blocks and 32 wide: a ViT without its final
    norm, the classifier's norm after pooling (``head.fc_norm``) and its linear layer."""
    torch.manual_seed(0)
    init_default_scope('fastmim')
    cfg = Config.fromfile(ROOT / 'configs' / 'finetune' / 'demo_vit_tiny_embedded_ft.py')
    cfg.model.backbone.update(arch=dict(tiny_demo.arch), init_cfg=None)
    model = MODELS.build(cfg.model)
    path = tmp_path_factory.mktemp('finetune') / 'epoch_10.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(geometry=model.geometry())), path)
    return path


def test_knn_of_a_finetuned_checkpoint_says_what_it_is_and_what_to_set(finetuned_checkpoint,
                                                                       tiny_demo, tmp_path):
    """It was refused with a list of two missing keys, norm.weight and norm.bias."""
    result = run('test.py', ['configs/knn/demo_vit_tiny_embedded_knn.py',
                             str(finetuned_checkpoint), '--work-dir', str(tmp_path),
                             '--cfg-options', *tiny_demo.arch_options])
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
    error = result.stderr.splitlines()[-1]
    assert error.startswith(f'error: CheckpointError: {finetuned_checkpoint} does not fit '
                            'VisionTransformer: a fine-tuned checkpoint (it has '
                            'head.fc_norm.weight'), error
    assert error.endswith('(--cfg-options model.backbone.final_norm=False)'), error


def test_linear_probe_trains_the_head_of_the_frozen_checkpoint(pretraining_checkpoint, tiny_demo,
                                                               tmp_path):
    result = run('train.py', [
        'configs/finetune/demo_vit_tiny_embedded_linear.py', '--work-dir', str(tmp_path),
        '--cfg-options', *tiny_demo.arch_options,
        f'model.backbone.init_cfg.checkpoint={pretraining_checkpoint}',
        'train_dataloader.dataset.num_samples=8', 'train_dataloader.batch_size=4',
        'val_dataloader.dataset.num_samples=4', 'val_dataloader.batch_size=4',
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=1'])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'accuracy/top1' in result.stdout + result.stderr

    pretrained = torch.load(pretraining_checkpoint, weights_only=True)['state_dict']
    probed = torch.load(tmp_path / 'epoch_1.pth', weights_only=True)['state_dict']
    backbone = [key for key in probed if key.startswith('backbone.')]
    assert len(backbone) == len([key for key in pretrained if key.startswith('backbone.')])
    for key in backbone:  # loaded, then left untouched by two updates
        torch.testing.assert_close(probed[key], pretrained[key], msg=key)
    assert {'head.fc.weight', 'head.fc.bias', 'head.fc_norm.running_mean'} <= set(probed)
    assert probed['head.fc.bias'].abs().sum() > 0  # the head (initialised to zero bias) trained


def test_knn_evaluates_the_checkpoint(pretraining_checkpoint, tiny_demo, tmp_path):
    metrics_file = tmp_path / 'metrics.json'
    result = run('test.py', [
        'configs/knn/demo_vit_tiny_embedded_knn.py', str(pretraining_checkpoint),
        '--work-dir', str(tmp_path), '--out', str(metrics_file), '--cfg-options',
        *tiny_demo.arch_options, 'test_cfg.bank_dataloader.dataset.num_samples=78'])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    # patch embedding 2 + class token + position table (the checkpoint's, as fine-tuning loads
    # it) + 2 blocks x 12 + final norm 2
    assert f'loaded 30 tensors of {pretraining_checkpoint}' in log
    assert 'kNN bank: 78 features of dimension 32' in log
    metrics = json.loads(metrics_file.read_text())
    assert 0 <= metrics['knn/top1'] <= metrics['knn/top5'] <= 100


def test_knn_refuses_a_checkpoint_of_another_model(pretraining_checkpoint, tmp_path):
    # The demo's default ViT is 192 wide: the 32-wide weights must not load silently.
    result = run('test.py', ['configs/knn/demo_vit_tiny_embedded_knn.py',
                             str(pretraining_checkpoint), '--work-dir', str(tmp_path)])
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    message = result.stderr[result.stderr.index('error: CheckpointError'):]
    assert str(pretraining_checkpoint) in message and 'shape' in message


def test_evaluating_a_classifier_config_with_the_pretraining_checkpoint_is_refused(
        pretraining_checkpoint, tiny_demo, tmp_path):
    """mmengine loads it non-strictly: the untrained head used to report a top-1 with exit 0."""
    result = run('test.py', ['configs/finetune/demo_vit_tiny_embedded_linear.py',
                             str(pretraining_checkpoint), '--work-dir', str(tmp_path),
                             '--cfg-options', *tiny_demo.arch_options,
                             'model.backbone.init_cfg=None'])
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert (f'error: CheckpointError: {pretraining_checkpoint} holds no weights for head of '
            'the ImageClassifier') in result.stderr
