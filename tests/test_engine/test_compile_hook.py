"""CompileModulesHook: the backbone and decoder run compiled, training and checkpoints unchanged.

TorchDynamo's ``eager`` backend traces exactly as the default one but skips code generation,
which keeps the test fast on a CPU; tools/analysis/gpu_check.sh runs the inductor path on CUDA.
"""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import fastmim  # noqa: F401  registers modules, safe checkpoint I/O
from fastmim.engine.hooks import CompileModulesHook
from fastmim.train_flags import apply_args

TRAIN_TOOL = Path(__file__).resolve().parents[2] / 'tools' / 'train.py'


def tiny_pretrain_config(tiny_pretraining, work_dir, modules=('backbone', 'neck', 'head')):
    return dict(
        **tiny_pretraining(work_dir, batch_size=2, num_samples=4, max_epochs=1),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        custom_hooks=[dict(type='CheckpointMetaHook'),
                      dict(type='CompileModulesHook', modules=modules, backend='eager')],
    )


def test_backbone_and_neck_train_compiled_and_checkpoint_keys_are_plain(tmp_path,
                                                                        tiny_pretraining):
    runner = Runner.from_cfg(tiny_pretrain_config(tiny_pretraining, tmp_path))
    model = runner.train()
    # nn.Module.compile keeps the module (and its state_dict keys); the call goes compiled.
    assert model.backbone._compiled_call_impl is not None
    assert model.neck._compiled_call_impl is not None
    assert model.target_generator._compiled_call_impl is None
    state = torch.load(tmp_path / 'epoch_1.pth', weights_only=True)['state_dict']
    assert 'backbone.patch_embed.proj.weight' in state
    assert not any('_orig_mod' in key for key in state)


def test_model_without_any_named_module_is_a_clear_error(tmp_path, tiny_pretraining):
    runner = Runner.from_cfg(tiny_pretrain_config(tiny_pretraining, tmp_path,
                                                  modules=('encoder', )))
    with pytest.raises(ValueError, match=r"FastMIM has none of the submodules \['encoder'\]"):
        runner.train()


def test_modules_must_be_a_list_of_names():
    with pytest.raises(ValueError, match='non-empty list'):
        CompileModulesHook(modules='backbone')


def test_train_flag_adds_the_hook(load_script):
    train_tool = load_script(TRAIN_TOOL)
    cfg = Config(dict(custom_hooks=[dict(type='CheckpointMetaHook')],
                      optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3))))
    apply_args(cfg, train_tool.parse_args(['x.py', '--compile', '--work-dir', 'w']))
    assert [hook['type'] for hook in cfg.custom_hooks] == [
        'CheckpointMetaHook', 'fastmim.CompileModulesHook']
    assert 'compile' not in cfg  # mmengine's whole-train_step compile stays off
