"""Layer-wise lr decay: published layer ids and scales, weight-decay exemptions, mmengine build.

Expected ids are written out here from the published definitions (MAE / BEiT for ViT, SimMIM /
FastMIM for Swin, in the original Swin's numbering) or taken from timm's own
``param_groups_layer_decay``, never from the constructor's own output.
"""
import re
from collections import OrderedDict

import pytest
import timm
import torch
from mmengine.optim import DefaultOptimWrapperConstructor, build_optim_wrapper
from mmengine.registry import DefaultScope
from timm.optim import param_groups_layer_decay
from torch import nn

from fastmim.engine.optim_constructors import LayerDecayOptimWrapperConstructor
from fastmim.engine.optim_constructors.layer_decay import format_group_table
from fastmim.models.backbones import (CMT, EVA02, PyramidVisionTransformerV2, SwinTransformer,
                                      TimmBackbone, VisionTransformer)

TINY_DEPTHS = (1, 1, 2, 1)
NO_DECAY_TABLES = ('pos_embed', 'cls_token', 'relative_position_bias_table',
                   'relative_position_bias')


class Classifier(nn.Module):
    """What the constructor sees in fine-tuning: an algorithm with a backbone and a head."""

    def __init__(self, backbone: nn.Module, channels: int, num_classes: int = 5):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(channels, num_classes)


def optimizer_cfg(lr=1e-3, weight_decay=0.05, **kwargs):
    return dict(type='AdamW', lr=lr, weight_decay=weight_decay, **kwargs)


def build_groups(model, rate, lr=1e-3, weight_decay=0.05, **paramwise):
    constructor = LayerDecayOptimWrapperConstructor(
        dict(optimizer=optimizer_cfg(lr, weight_decay)), dict(layer_decay_rate=rate, **paramwise))
    return constructor(model).optimizer.param_groups


def test_fastmim_wrappers_build_outside_any_scope(monkeypatch):
    """A script (no Runner, no default scope) got 'GuardedOptimWrapper is not in the
    mmengine::optim_wrapper registry' once mmengine's __call__ built the wrapper."""
    monkeypatch.setattr(DefaultScope, '_instance_dict', OrderedDict())
    constructor = LayerDecayOptimWrapperConstructor(
        dict(type='GuardedOptimWrapper', optimizer=optimizer_cfg()), dict(layer_decay_rate=0.7))
    wrapper = constructor(Classifier(tiny_vit(), 16))
    assert type(wrapper).__name__ == 'GuardedOptimWrapper'
    assert DefaultScope.get_current_instance() is None


def ids_from_table(names, table):
    """Expected id of each name: the first ``(regex, id)`` row of ``table`` that matches."""
    expected = {}
    for name in names:
        matches = [layer_id for pattern, layer_id in table if re.match(pattern, name)]
        assert matches, f'{name} matches no row of the expected table'
        expected[name] = matches[0]
    return expected


def tiny_vit(**kwargs):
    return VisionTransformer(arch=dict(embed_dim=16, depth=3, num_heads=2), img_size=32, **kwargs)


def tiny_swin():
    return SwinTransformer(arch=dict(embed_dim=8, depths=TINY_DEPTHS, num_heads=(1, 1, 2, 2)),
                           img_size=64, window_size=2, out_indices=(0, 3))


def vit_expected_id(name, depth):
    """MAE's ``get_layer_id_for_vit`` with ``num_layers = depth + 1``."""
    if re.match(r'backbone\.(cls_token|pos_embed|patch_embed)', name):
        return 0
    block = re.match(r'backbone\.blocks\.(\d+)\.', name)
    return int(block[1]) + 1 if block else depth + 1


def swin_expected_id(name, depths):
    """SimMIM / FastMIM's Swin ids, in the original Swin's numbering, where
    ``layers.{s}.downsample`` closes stage ``s`` and gets ``sum(depths[:s + 1])``; timm's
    ``layers.{t}.downsample`` opens stage ``t``, i.e. it is the original ``layers.{t - 1}``."""
    if name.startswith('backbone.patch_embed'):
        return 0
    downsample = re.match(r'backbone\.layers\.(\d+)\.downsample\.', name)
    if downsample:
        original_stage = int(downsample[1]) - 1
        return sum(depths[:original_stage + 1])
    block = re.match(r'backbone\.layers\.(\d+)\.blocks\.(\d+)\.', name)
    if block:
        stage, index = int(block[1]), int(block[2])
        return sum(depths[:stage]) + index + 1
    return sum(depths) + 1


def test_vit_b_groups_carry_mae_ids_and_scales(groups_by_name):
    with torch.device('meta'):
        model = Classifier(VisionTransformer(arch='b', img_size=224), 768)
    groups = build_groups(model, 0.7, lr=6e-4)
    by_name = groups_by_name(model, groups)
    assert set(by_name) == {name for name, _ in model.named_parameters()}
    for name, group in by_name.items():
        expected = vit_expected_id(name, depth=12)
        assert group['layer_id'] == expected, name
        assert group['lr_scale'] == pytest.approx(0.7**(13 - expected)), name
        assert group['lr'] == pytest.approx(6e-4 * 0.7**(13 - expected)), name
    assert by_name['backbone.blocks.11.mlp.fc2.weight']['layer_id'] == 12
    assert by_name['backbone.norm.weight']['layer_id'] == 13
    assert by_name['head.weight']['lr'] == pytest.approx(6e-4)
    assert by_name['backbone.pos_embed']['lr'] == pytest.approx(6e-4 * 0.7**13)


def test_swin_b_ids_follow_simmim_with_timm_downsample_names(groups_by_name):
    with torch.device('meta'):
        model = Classifier(SwinTransformer(arch='b', img_size=224, window_size=7), 1024)
    by_name = groups_by_name(model, build_groups(model, 0.8))
    for name, group in by_name.items():
        expected = swin_expected_id(name, (2, 2, 18, 2))
        assert group['layer_id'] == expected, name
        assert group['lr_scale'] == pytest.approx(0.8**(25 - expected)), name
    spot_checks = {
        'backbone.patch_embed.proj.weight': 0,
        'backbone.layers.0.blocks.0.attn.qkv.weight': 1,
        'backbone.layers.1.downsample.reduction.weight': 2,
        'backbone.layers.2.downsample.reduction.weight': 4,
        'backbone.layers.2.blocks.17.mlp.fc1.weight': 22,
        'backbone.layers.3.downsample.reduction.weight': 22,
        'backbone.layers.3.blocks.1.attn.qkv.weight': 24,
        'backbone.norm.weight': 25,
        'head.weight': 25,
    }
    assert {name: by_name[name]['layer_id'] for name in spot_checks} == spot_checks


def test_tiny_swin_ids_blocks_downsamples_and_rest(groups_by_name):
    model = Classifier(tiny_swin(), 64)
    by_name = groups_by_name(model, build_groups(model, 0.8))
    table = [
        (r'backbone\.patch_embed\.', 0),
        (r'backbone\.layers\.0\.blocks\.0\.', 1),
        (r'backbone\.layers\.1\.downsample\.', 1),  # closes stage 0 in the original Swin
        (r'backbone\.layers\.1\.blocks\.0\.', 2),
        (r'backbone\.layers\.2\.downsample\.', 2),
        (r'backbone\.layers\.2\.blocks\.0\.', 3),
        (r'backbone\.layers\.2\.blocks\.1\.', 4),
        (r'backbone\.layers\.3\.downsample\.', 4),
        (r'backbone\.layers\.3\.blocks\.0\.', 5),
        (r'backbone\.(norm|out_norms)\.|head\.', 6),
    ]
    expected = ids_from_table(by_name, table)
    assert {name: group['layer_id'] for name, group in by_name.items()} == expected


def test_pvtv2_and_cmt_ids_by_stage_and_block(groups_by_name):
    """The reference release's ids (util/lr_decay.py: get_layer_id_for_pvtv2 and _for_cmt):
    PVTv2's norm4 (the last stage's) is the rest's; CMT's patch_embed_<s> and relative_pos_<s>
    take the id of the stage's first block, stage a's included."""
    pvt = Classifier(PyramidVisionTransformerV2(
        arch=dict(depths=TINY_DEPTHS, embed_dims=(8, 16, 16, 32), num_heads=(1, 1, 1, 1))), 32)
    cmt = Classifier(CMT(arch=dict(embed_dims=[8, 16, 16, 32], depths=list(TINY_DEPTHS),
                                   num_heads=[1, 1, 1, 1], stem_channels=8, mlp_ratio=2.),
                         img_size=64), 32)
    pvt_table = [
        (r'backbone\.patch_embed\.', 0),
        (r'backbone\.stages\.0\.(blocks\.0|norm)\.', 1),
        (r'backbone\.stages\.1\.downsample\.', 1),
        (r'backbone\.stages\.1\.(blocks\.0|norm)\.', 2),
        (r'backbone\.stages\.2\.downsample\.', 2),
        (r'backbone\.stages\.2\.blocks\.0\.', 3),
        (r'backbone\.stages\.2\.(blocks\.1|norm)\.', 4),
        (r'backbone\.stages\.3\.downsample\.', 4),
        (r'backbone\.stages\.3\.blocks\.0\.', 5),
        (r'backbone\.stages\.3\.norm\.|head\.', 6),
    ]
    cmt_table = [
        (r'backbone\.stem\.', 0),
        (r'backbone\.stages\.0\.(downsample\.|relative_position_bias$|blocks\.0\.)', 1),
        (r'backbone\.stages\.1\.(downsample\.|relative_position_bias$|blocks\.0\.)', 2),
        (r'backbone\.stages\.2\.(downsample\.|relative_position_bias$|blocks\.0\.)', 3),
        (r'backbone\.stages\.2\.blocks\.1\.', 4),
        (r'backbone\.stages\.3\.(downsample\.|relative_position_bias$|blocks\.0\.)', 5),
        (r'head\.', 6),
    ]
    for model, table in ((pvt, pvt_table), (cmt, cmt_table)):
        by_name = groups_by_name(model, build_groups(model, 0.75))
        assert set(by_name) == {name for name, _ in model.named_parameters()}
        expected = ids_from_table(by_name, table)
        assert {name: group['layer_id'] for name, group in by_name.items()} == expected
        assert all(group['lr_scale'] == pytest.approx(0.75**(6 - group['layer_id']))
                   for group in by_name.values())


def published_no_decay(name, param):
    return (param.ndim <= 1 or name.endswith('.bias')
            or name.rsplit('.', 1)[-1] in NO_DECAY_TABLES)


@pytest.mark.parametrize('make_model', [
    lambda: Classifier(tiny_vit(), 16),
    lambda: Classifier(tiny_vit(rel_pos_bias=True), 16),  # the segmentation ViT's BEiT tables
    lambda: Classifier(tiny_swin(), 64),
    lambda: Classifier(CMT(arch='ti', img_size=64), 368),
])
def test_no_weight_decay_on_norms_biases_and_position_tables(make_model, groups_by_name):
    model = make_model()
    by_name = groups_by_name(model, build_groups(model, 0.7, weight_decay=0.05))
    for name, param in model.named_parameters():
        expected = 0. if published_no_decay(name, param) else 0.05
        assert by_name[name]['weight_decay'] == expected, name
    decay_free = {name for name, group in by_name.items() if group['weight_decay'] == 0}
    assert any('norm' in name and name.endswith('weight') for name in decay_free)
    assert 'head.weight' not in decay_free
    assert any(name.endswith(NO_DECAY_TABLES) and model.get_parameter(name).ndim > 1
               for name in decay_free)


def test_every_trainable_parameter_in_exactly_one_group_frozen_left_out(groups_by_name):
    model = Classifier(tiny_vit(pos_embed_type='sincos'), 16)
    groups = build_groups(model, 0.7)
    by_name = groups_by_name(model, groups)
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert set(by_name) == trainable
    assert 'backbone.pos_embed' not in by_name
    assert sum(len(group['params']) for group in groups) == len(trainable)


def test_optimiser_step_applies_base_lr_times_scale():
    """Plain SGD, no momentum or decay: each update must be ``-lr * 0.7 ** (4 - id) * grad``."""
    torch.manual_seed(0)
    model = Classifier(tiny_vit(), 16)
    constructor = LayerDecayOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1)),
        dict(layer_decay_rate=0.7))
    wrapper = constructor(model)
    features = model.backbone(torch.randn(2, 3, 32, 32))[0].mean((2, 3))
    model.head(features).square().sum().backward()
    before = {name: (param.detach().clone(), param.grad.clone())
              for name, param in model.named_parameters()}
    wrapper.step()
    for name, param in model.named_parameters():
        old, grad = before[name]
        scale = 0.7**(4 - vit_expected_id(name, depth=3))
        torch.testing.assert_close(param.detach(), old - 0.1 * scale * grad, msg=name)


FROZEN_BACKBONES = {
    'vit': lambda: tiny_vit(frozen_stages=1),
    'eva02': lambda: EVA02(arch=dict(embed_dim=16, depth=3, num_heads=2), img_size=32,
                           frozen_stages=1),
    'swin': lambda: SwinTransformer(arch=dict(embed_dim=8, depths=TINY_DEPTHS,
                                              num_heads=(1, 1, 2, 2)),
                                    img_size=64, window_size=2, frozen_stages=2),
    'pvtv2': lambda: PyramidVisionTransformerV2(
        arch=dict(depths=(1, 1, 1, 1), embed_dims=(8, 16, 16, 16), num_heads=(1, 1, 1, 1)),
        frozen_stages=2),
    'cmt': lambda: CMT(arch=dict(embed_dims=[8, 16, 16, 16], depths=[1, 1, 1, 1],
                                 num_heads=[1, 1, 1, 1], stem_channels=8, mlp_ratio=2.),
                       img_size=32, frozen_stages=2),
    # (timm's zero-initialised last norm of each block would leave the others no gradient)
    'timm': lambda: TimmBackbone('resnet18', frozen_stages=2, zero_init_last=False),
}


@pytest.mark.parametrize('key', sorted(FROZEN_BACKBONES))
def test_a_step_leaves_frozen_stages_bit_identical_weight_decay_included(key):
    """Backbones built with ``frozen_stages``: AdamW with a large weight decay moves every
    trained parameter and none of the frozen ones (they are in no group, as mmengine's own
    constructor leaves them out of its parameter-wise groups)."""
    torch.manual_seed(0)
    backbone = FROZEN_BACKBONES[key]()
    model = Classifier(backbone, backbone.out_channels[-1])
    wrapper = LayerDecayOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=optimizer_cfg(lr=0.1, weight_decay=0.5)),
        dict(layer_decay_rate=0.7))(model)
    frozen = {name for name, param in model.named_parameters() if not param.requires_grad}
    assert frozen and len(frozen) < len(list(model.parameters()))
    grouped = {id(param) for group in wrapper.optimizer.param_groups for param in group['params']}
    assert not any(id(model.get_parameter(name)) in grouped for name in frozen)
    model.train()
    features = model.backbone(torch.randn(2, 3, 64, 64))[-1].mean((2, 3))
    model.head(features).square().sum().backward()
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    wrapper.step()
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]) == (name in frozen), name


def test_custom_keys_and_no_decay_names_override(groups_by_name):
    model = Classifier(tiny_vit(), 16)
    by_name = groups_by_name(model, build_groups(
        model, 0.7, lr=1e-3, weight_decay=0.05, no_decay_names=(),
        custom_keys={'head': dict(lr_mult=10., decay_mult=0.5)}))
    assert by_name['head.weight']['lr'] == pytest.approx(1e-2)
    assert by_name['head.weight']['weight_decay'] == pytest.approx(0.025)
    assert by_name['head.bias']['weight_decay'] == 0.  # biases stay exempt
    assert by_name['backbone.pos_embed']['weight_decay'] == 0.05  # no longer exempt by name
    assert by_name['backbone.blocks.0.norm1.weight']['weight_decay'] == 0.  # 1-D stays exempt


def test_custom_keys_take_mmengines_precedence(groups_by_name):
    """Longest matching key first, alphabetical among equal lengths: every parameter's lr
    multiplier (layer decay off) is the one mmengine's own constructor gives the same keys."""
    custom_keys = {'backbone': dict(lr_mult=0.1), 'backbone.pos_embed': dict(lr_mult=10.),
                   'blocks.0': dict(lr_mult=3.), 'blocks.1.mlp': dict(lr_mult=5.),
                   'head': dict(lr_mult=2.)}
    model = Classifier(tiny_vit(), 16)
    by_name = groups_by_name(model, build_groups(model, 1.0, lr=1e-3, custom_keys=custom_keys))
    reference = DefaultOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=optimizer_cfg(lr=1e-3)),
        dict(custom_keys=custom_keys))(model).optimizer.param_groups
    reference_lr = {name: group['lr'] for name, group in groups_by_name(model, reference).items()}
    assert {name: group['lr'] for name, group in by_name.items()} == pytest.approx(reference_lr)
    # The cases the keys were chosen for, written out: the longer key wins, and of the two
    # 8-letter keys in a block-0 name, 'backbone' comes first.
    assert by_name['backbone.pos_embed']['lr'] == pytest.approx(1e-2)
    assert by_name['backbone.blocks.1.mlp.fc1.weight']['lr'] == pytest.approx(5e-3)
    assert by_name['backbone.blocks.0.attn.qkv.weight']['lr'] == pytest.approx(1e-4)
    assert by_name['head.weight']['lr'] == pytest.approx(2e-3)


def test_no_decay_names_match_a_full_name_or_a_dotted_suffix_only(groups_by_name):
    """``'proj'`` names a module ``proj`` at the end of a name, not every name containing
    the letters (``attn.proj.weight`` ends in ``.weight``; ``patch_embed.proj`` neither)."""
    model = Classifier(tiny_vit(), 16)
    by_name = groups_by_name(model, build_groups(
        model, 0.7, weight_decay=0.05, no_decay_names=['proj', 'attn.qkv.weight', 'cls_token']))
    assert by_name['backbone.blocks.0.attn.proj.weight']['weight_decay'] == 0.05
    assert by_name['backbone.patch_embed.proj.weight']['weight_decay'] == 0.05
    assert by_name['backbone.blocks.0.attn.qkv.weight']['weight_decay'] == 0.
    assert by_name['backbone.cls_token']['weight_decay'] == 0.
    assert by_name['backbone.pos_embed']['weight_decay'] == 0.05


@pytest.mark.parametrize('constructor,scope', [
    ('fastmim.LayerDecayOptimWrapperConstructor', None),  # any config, e.g. mmseg's
    ('LayerDecayOptimWrapperConstructor', 'fastmim'),  # configs with default_scope='fastmim'
])
def test_build_optim_wrapper_from_config_dict(constructor, scope, groups_by_name):
    model = Classifier(tiny_swin(), 64)
    with DefaultScope.overwrite_default_scope(scope):
        wrapper = build_optim_wrapper(_wrapped(model), dict(
            type='OptimWrapper',
            accumulative_counts=2,
            optimizer=optimizer_cfg(lr=1e-3, betas=(0.9, 0.999)),
            constructor=constructor,
            paramwise_cfg=dict(layer_decay_rate=0.8)))
    assert isinstance(wrapper.optimizer, torch.optim.AdamW)
    assert wrapper._accumulative_counts == 2
    groups = wrapper.optimizer.param_groups
    assert all(group['betas'] == (0.9, 0.999) for group in groups)
    assert sorted({group['layer_id'] for group in groups}) == list(range(sum(TINY_DEPTHS) + 2))
    assert len(groups_by_name(model, groups)) == len(list(model.parameters()))


def _wrapped(model):
    """A DDP-like wrapper: the constructor must look through ``.module``."""
    wrapper = nn.Module()
    wrapper.module = model
    return wrapper


@pytest.mark.parametrize('model_name,timm_name', [
    ('resnet18', lambda name: name),
    ('convnext_atto', lambda name: re.sub(r'^(stem|stages)_(\d+)', r'\1.\2', name)),
    ('vit_tiny_patch16_224', lambda name: name.removeprefix('model.')),
    # timm exempts Swin-V2's logit scales and continuous-bias MLPs by name (no_weight_decay):
    # more than 1-D tensors whose names no fixed list holds.
    ('swinv2_tiny_window8_256', lambda name: re.sub(r'^layers_(\d+)', r'layers.\1', name)),
])
def test_timm_backbone_matches_timm_param_groups_layer_decay(model_name, timm_name,
                                                             groups_by_name):
    with torch.device('meta'):
        backbone = TimmBackbone(model_name)
        full = timm.create_model(model_name)
    model = Classifier(backbone, backbone.out_channels[-1])
    by_name = groups_by_name(model, build_groups(model, 0.8, weight_decay=0.05))

    no_decay = full.no_weight_decay() if hasattr(full, 'no_weight_decay') else ()  # as timm does
    timm_groups = param_groups_layer_decay(
        full, weight_decay=0.05, no_weight_decay_list=no_decay, layer_decay=0.8)
    timm_settings = {id(p): group for group in timm_groups for p in group['params']}
    timm_by_name = {name: timm_settings[id(p)] for name, p in full.named_parameters()}
    for name, group in by_name.items():
        if name.startswith('head.'):
            assert group['lr_scale'] == 1.
            continue
        reference = timm_by_name[timm_name(name.removeprefix('backbone.model.'))]
        assert group['lr_scale'] == pytest.approx(reference['lr_scale']), name
        assert group['weight_decay'] == reference['weight_decay'], name
    assert min(group['lr_scale'] for group in by_name.values()) < 0.2


def test_group_table_has_one_row_per_group():
    model = Classifier(tiny_vit(), 16)
    groups = build_groups(model, 0.7)
    rows = format_group_table(groups).splitlines()
    assert len(rows) == len(groups) + 1
    assert [int(row.split()[0]) for row in rows[1:]] == [group['layer_id'] for group in groups]


@pytest.mark.parametrize('paramwise,message', [
    (dict(), 'layer_decay_rate'),
    (dict(layer_decay_rate=1.5), 'layer_decay_rate'),
    (dict(layer_decay_rate=0.7, norm_decay_mult=0.), 'norm_decay_mult'),
    (dict(layer_decay_rate=0.7, custom_keys={'head': dict(lr=1.)}), "custom_keys\\['head'\\]"),
    (dict(layer_decay_rate=0.7, no_decay_names='pos_embed'), 'no_decay_names'),
])
def test_bad_paramwise_cfg_is_named(paramwise, message):
    with pytest.raises((ValueError, TypeError), match=message):
        LayerDecayOptimWrapperConstructor(dict(optimizer=optimizer_cfg()), paramwise)


def test_unsupported_backbone_is_named():
    constructor = LayerDecayOptimWrapperConstructor(
        dict(optimizer=optimizer_cfg()), dict(layer_decay_rate=0.7))
    with pytest.raises(TypeError, match='Linear'):
        constructor(Classifier(nn.Linear(3, 4), 4))
