"""tools/train.py's --amp / --amp-dtype: which optimiser wrapper each device and dtype gets."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from fastmim.train_flags import apply_args

TRAIN_TOOL = Path(__file__).resolve().parents[2] / 'tools' / 'train.py'


def wrapper_after(load_script, monkeypatch, flags, cuda, **optim_wrapper):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    train_tool = load_script(TRAIN_TOOL)
    cfg = Config(dict(optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3),
                                         **optim_wrapper)))
    apply_args(cfg, train_tool.parse_args(['x.py', '--work-dir', 'w', *flags]))
    return cfg.optim_wrapper.to_dict()


@pytest.mark.parametrize('flags, cuda, expected', [
    # fp16 needs loss scaling: mmengine's AmpOptimWrapper (with the non-finite guard).
    (['--amp'], True,
     dict(type='fastmim.GuardedAmpOptimWrapper', dtype='float16', loss_scale='dynamic')),
    (['--amp-dtype', 'float16'], True,
     dict(type='fastmim.GuardedAmpOptimWrapper', dtype='float16', loss_scale='dynamic')),
    # bf16 runs as autocast without a scaler, on CUDA too.
    (['--amp-dtype', 'bfloat16'], True,
     dict(type='fastmim.AutocastOptimWrapper', dtype='bfloat16')),
    (['--amp'], False, dict(type='fastmim.AutocastOptimWrapper', dtype='bfloat16')),
])
def test_dtype_picks_the_wrapper(load_script, monkeypatch, flags, cuda, expected):
    wrapper = wrapper_after(load_script, monkeypatch, flags, cuda)
    assert {key: wrapper.get(key) for key in ('type', 'dtype', 'loss_scale')} == \
        {'loss_scale': None, **expected}


def test_bf16_drops_the_configs_loss_scale(load_script, monkeypatch):
    """The pre-training configs already hold fp16 AMP with a dynamic loss scale."""
    wrapper = wrapper_after(load_script, monkeypatch, ['--amp-dtype', 'bfloat16'], True,
                            type='GuardedAmpOptimWrapper', loss_scale='dynamic')
    assert wrapper['type'] == 'fastmim.AutocastOptimWrapper' and 'loss_scale' not in wrapper


def test_fp16_on_the_cpu_is_refused(load_script, monkeypatch):
    with pytest.raises(ValueError, match='float16 needs CUDA'):
        wrapper_after(load_script, monkeypatch, ['--amp-dtype', 'float16'], False)
    # A config's fp16 becomes the CPU's bf16, as adapt_to_device does for AMP configs.
    wrapper = wrapper_after(load_script, monkeypatch, ['--amp'], False, dtype='float16')
    assert (wrapper['type'], wrapper['dtype']) == ('fastmim.AutocastOptimWrapper', 'bfloat16')


def test_amp_keeps_a_dtype_the_config_names(load_script, monkeypatch):
    wrapper = wrapper_after(load_script, monkeypatch, ['--amp'], True, dtype='bfloat16')
    assert (wrapper['type'], wrapper['dtype']) == ('fastmim.AutocastOptimWrapper', 'bfloat16')


def test_without_amp_flags_the_config_stays(load_script, monkeypatch):
    wrapper = wrapper_after(load_script, monkeypatch, [], True,
                            type='GuardedAmpOptimWrapper', loss_scale='dynamic')
    assert wrapper == dict(type='GuardedAmpOptimWrapper', loss_scale='dynamic',
                           optimizer=dict(type='AdamW', lr=1e-3))
