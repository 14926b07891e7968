"""adapt_to_device on a machine without CUDA: which mixed precision each kind of config gets."""
import pytest
import torch
from mmengine.config import Config

from fastmim.engine.launch import adapt_to_device


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
