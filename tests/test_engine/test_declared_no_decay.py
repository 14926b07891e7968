"""Pre-training's weight decay: every parameter the backbone or the algorithm declares exempt
gets none, every other weight of more than one dimension gets the recipe's, whatever the
backbone calls its tables (DeclaredNoDecayOptimWrapperConstructor, fastmim_adamw.py).

The models are built on the meta device: the groups depend on names and shapes only.
"""
import logging
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from torch import nn

import fastmim.engine  # noqa: F401
from fastmim.registry import MODELS

ROOT = Path(__file__).resolve().parents[2]
PRETRAINING = sorted((ROOT / 'configs' / 'fastmim').glob('**/*.py'))
SWIN_ABLATION = ROOT / 'configs' / 'fastmim' / 'ablations' / 'timm_convnext_t_hog_400e.py'
# What each published backbone exempts beyond 1-D parameters, as the recipes published it
# (docs/pretrain.md, section 3), with FastMIM's mask token: names, '.N.' for any index.
EXEMPT_BEYOND_1D = {
    'VisionTransformer': {'backbone.cls_token'},  # its sin-cos pos_embed is frozen
    'EVA02': {'backbone.cls_token', 'backbone.pos_embed'},
    'SwinTransformer': {'backbone.layers.N.blocks.N.attn.relative_position_bias_table'},
    'CMT': {'backbone.stages.N.relative_position_bias'},
    'PyramidVisionTransformerV2': set(),
    'TimmBackbone': set(),  # ConvNeXt-T and ResNet-50: no tables
}


def weight_decay_by_name(cfg):
    """``{parameter name: (lr, weight decay)}`` of the optimiser ``cfg`` builds for its model."""
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    optim_wrapper = cfg.optim_wrapper.to_dict()
    # fused AdamW refuses meta tensors; the loss scaler wants CUDA. Neither touches the groups.
    optim_wrapper.update(type='GuardedOptimWrapper')
    optim_wrapper['optimizer']['fused'] = False
    wrapper = build_optim_wrapper(model, optim_wrapper)
    name_of = {param: name for name, param in model.named_parameters()}
    return model, {name_of[param]: (group['lr'], group['weight_decay'])
                   for group in wrapper.optimizer.param_groups for param in group['params']}


def declared_exempt(model):
    """What the backbone and the algorithm say, asked directly."""
    return ({f'backbone.{name}' for name in model.backbone.no_weight_decay_names()}
            | model.no_weight_decay_names())


def check_weight_decay(model, groups, cfg):
    """Exempt: 1-D parameters (norms, biases) and what the model declares; decayed at the
    recipe's rate: every other weight. Every trainable parameter once, at the recipe's lr."""
    optimizer = cfg.optim_wrapper.optimizer
    trainable = {name: param for name, param in model.named_parameters() if param.requires_grad}
    assert sorted(groups) == sorted(trainable)
    exempt = declared_exempt(model)
    for name, (lr, weight_decay) in groups.items():
        expected = 0. if trainable[name].ndim <= 1 or name in exempt else optimizer.weight_decay
        assert weight_decay == expected, name
        assert lr == pytest.approx(optimizer.lr), name


@pytest.mark.parametrize('path', PRETRAINING, ids=lambda path: path.name)
def test_published_pretraining_decays_all_but_what_the_model_exempts(path):
    cfg = Config.fromfile(str(path))
    model, groups = weight_decay_by_name(cfg)
    check_weight_decay(model, groups, cfg)

    exempt_beyond_1d = {re.sub(r'\.\d+\.', '.N.', name)
                        for name, (_, weight_decay) in groups.items()
                        if weight_decay == 0 and model.get_parameter(name).ndim > 1}
    assert exempt_beyond_1d == EXEMPT_BEYOND_1D[cfg.model.backbone.type] | {'mask_token'}


def test_timm_swin_v2_tables_are_exempt_whatever_their_names():
    """timm's Swin-V2 exempts its continuous position-bias MLPs and logit scales
    (``attn.cpb_mlp``, ``attn.logit_scale``); a list of name fragments in the schedule decayed
    the 36 of them that are no biases."""
    cfg = Config.fromfile(str(SWIN_ABLATION))
    cfg.model.backbone.model_name = 'swinv2_tiny_window8_256'
    model, groups = weight_decay_by_name(cfg)
    check_weight_decay(model, groups, cfg)
    tables = [name for name in groups if 'cpb_mlp' in name or 'logit_scale' in name]
    assert all(groups[name][1] == 0 for name in tables)
    assert sum(model.get_parameter(name).ndim > 1 for name in tables) == 36


class Backbone(nn.Module):

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(4, 4))
        self.table = nn.Parameter(torch.zeros(4, 4))

    def no_weight_decay_names(self):
        return {'table'}


class Algorithm(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = Backbone()
        self.token = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.head = nn.Linear(4, 4)

    def no_weight_decay_names(self):
        return {'token'}


@pytest.mark.parametrize('paramwise_cfg', [None, dict(bias_decay_mult=0.)])
def test_declared_exemptions_hold_with_any_paramwise_cfg(paramwise_cfg):
    """Even without paramwise_cfg, where mmengine would hand the optimiser all parameters in
    one group; the rest follows mmengine's rules (a bias is decayed unless the config says)."""
    model = Algorithm()
    wrapper = build_optim_wrapper(model, dict(
        type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
        constructor='DeclaredNoDecayOptimWrapperConstructor', paramwise_cfg=paramwise_cfg))
    name_of = {param: name for name, param in model.named_parameters()}
    decay = {name_of[param]: group['weight_decay']
             for group in wrapper.optimizer.param_groups for param in group['params']}
    bias_decay = 0. if paramwise_cfg else 0.05
    assert decay == {'backbone.weight': 0.05, 'backbone.table': 0., 'token': 0.,
                     'head.weight': 0.05, 'head.bias': bias_decay}


CONSTRUCTORS = {
    'declared_no_decay': dict(constructor='DeclaredNoDecayOptimWrapperConstructor'),
    'layer_decay': dict(constructor='LayerDecayOptimWrapperConstructor',
                        paramwise_cfg=dict(layer_decay_rate=0.75)),
}


def build_for(model, constructor):
    return build_optim_wrapper(model, dict(
        type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
        **CONSTRUCTORS[constructor]))


def vit_and_head(**backbone):
    model = nn.Module()
    model.backbone = MODELS.build(dict(type='VisionTransformer', img_size=32, patch_size=16,
                                       arch=dict(embed_dim=32, depth=2, num_heads=2),
                                       **backbone))
    model.head = nn.Linear(2, 2)
    return model


def test_a_table_the_backbone_fixes_is_named_as_fixed_not_as_frozen(log_records):
    """mmengine warned 'backbone.pos_embed is skipped since its requires_grad=False' on every
    pre-training run for the ViT's sin-cos table, which the backbone fixes by design."""
    model = vit_and_head(pos_embed_type='sincos')
    build_for(model, 'declared_no_decay')
    assert not [message for level, message in log_records.messages
                if level >= logging.WARNING], log_records.messages
    assert (logging.INFO, 'not trained, fixed by the backbone: backbone.pos_embed') in \
        log_records.messages
    assert not [message for _, message in log_records.messages if 'without gradient' in message]


@pytest.mark.parametrize('constructor', sorted(CONSTRUCTORS))
def test_frozen_parameters_are_counted_in_one_line(constructor, log_records):
    """mmengine's constructor warned once per frozen parameter (150+ lines for a frozen ViT-B);
    the layer-decay constructor said nothing. Both say it in one line, with the numbers
    counted here from requires_grad."""
    model = vit_and_head(frozen_stages=1)
    model.head.weight.requires_grad_(False)
    log_records.messages.clear()
    build_for(model, constructor)
    frozen = [param for param in model.parameters() if not param.requires_grad]
    assert not [message for level, message in log_records.messages
                if level >= logging.WARNING], log_records.messages
    lines = [message for level, message in log_records.messages
             if level == logging.INFO and 'without gradient' in message]
    assert lines == [f'left out of the optimiser, without gradient (requires_grad=False): '
                     f'{len(frozen)} parameters, {sum(p.numel() for p in frozen):,} elements']


@pytest.mark.parametrize('constructor', sorted(CONSTRUCTORS))
def test_a_model_with_nothing_to_train_is_refused_naming_the_setting(constructor):
    model = vit_and_head(frozen_stages=2)
    model.head.requires_grad_(False)
    with pytest.raises(ValueError, match=r'no parameter of the model has a gradient.*'
                                         r'model\.backbone\.frozen_stages=2'):
        build_for(model, constructor)


def test_a_frozen_backbone_is_named_when_nothing_trains():
    model = MODELS.build(dict(
        type='ImageClassifier', frozen_backbone=True,
        backbone=dict(type='VisionTransformer', img_size=32, patch_size=16,
                      arch=dict(embed_dim=32, depth=1, num_heads=2)),
        head=dict(type='LinearClsHead', num_classes=2)))
    model.head.requires_grad_(False)
    with pytest.raises(ValueError, match=r'model\.frozen_backbone=True'):
        build_for(model, 'declared_no_decay')
