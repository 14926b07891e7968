"""adapt_to_device on a machine without CUDA: which mixed precision each kind of config gets."""
import functools

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import AmpOptimWrapper

from fastmim.engine.launch import adapt_to_device
from fastmim.engine.optim_wrappers import AutocastOptimWrapper, GuardedAmpOptimWrapper


@pytest.fixture(autouse=True)
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)


def adapted_wrapper(default_scope, **optim_wrapper):
    cfg = Config(dict(default_scope=default_scope,
                      optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3), **optim_wrapper)))
    adapt_to_device(cfg)
    wrapper = cfg.optim_wrapper.to_dict()
    wrapper.pop('optimizer')
    return wrapper


@pytest.mark.parametrize('scope, wrapper', [
    ('fastmim', dict(type='GuardedAmpOptimWrapper', loss_scale='dynamic')),
    ('mmseg', dict(type='AmpOptimWrapper', loss_scale=512.)),
    ('mmseg', dict(type='fastmim.GuardedAmpOptimWrapper', dtype='float16')),
])
def test_amp_becomes_bf16_autocast_found_from_any_scope(scope, wrapper):
    assert adapted_wrapper(scope, **wrapper) == dict(type='fastmim.AutocastOptimWrapper',
                                                     dtype='bfloat16')


@pytest.mark.parametrize('wrapper_class', [AmpOptimWrapper, GuardedAmpOptimWrapper])
def test_amp_given_as_a_class_becomes_bf16_autocast_too(wrapper_class):
    """New-style configs name the class itself: it was left as it was, and mmengine stopped
    with 'AmpOptimizerWrapper is only available training on gpu'."""
    assert adapted_wrapper('fastmim', type=wrapper_class) == dict(
        type='fastmim.AutocastOptimWrapper', dtype='bfloat16')
    assert adapted_wrapper('mmdet', type=wrapper_class) == dict(type='fastmim.GuardedOptimWrapper')
    assert adapted_wrapper('mmdet', type=AutocastOptimWrapper) == dict(
        type='fastmim.GuardedOptimWrapper')


@pytest.mark.parametrize('wrapper', [
    dict(type='mmengine.AmpOptimWrapper', loss_scale='dynamic'),
    dict(type='fastmim.AutocastOptimWrapper', dtype='bfloat16'),  # tools/train.py --amp
])
def test_mmdet_trains_in_fp32(wrapper):
    assert adapted_wrapper('mmdet', **wrapper) == dict(type='fastmim.GuardedOptimWrapper')


def test_fp32_wrappers_stay():
    assert adapted_wrapper('mmdet', type='OptimWrapper') == dict(type='OptimWrapper')
    assert adapted_wrapper('fastmim', type='GuardedOptimWrapper') == dict(
        type='GuardedOptimWrapper')



@pytest.mark.parametrize('recipe, loaders', [
    ('configs/finetune/vit_b_ft_100e.py', ('train_dataloader', 'val_dataloader', 'test_dataloader')),
    ('configs/knn/vit_b_knn.py', ('test_dataloader', 'test_cfg.bank_dataloader')),
])
def test_dataloaders_stop_pinning_memory(recipe, loaders):
    """The published recipes pin memory for the GPU: without an accelerator torch warned
    "'pin_memory' argument is set as true but no accelerator is found" for each dataloader."""
    cfg = Config.fromfile(recipe)

    def pinned():
        return [functools.reduce(getattr, loader.split('.'), cfg).pin_memory for loader in loaders]
    assert pinned() == [True] * len(loaders)
    adapt_to_device(cfg)
    assert pinned() == [False] * len(loaders)
