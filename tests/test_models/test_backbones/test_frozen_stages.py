"""``frozen_stages`` on every backbone: mmdet's / mmpretrain's meaning (-1 nothing, 0 the stem,
``n`` the stem and the first ``n`` stages, all of them the final norm too), frozen modules kept
in eval mode by every ``train()``, and out-of-range values refused at build.

The expected frozen names are written out here from that definition, stage by stage in each
architecture's own names, never read from the backbone's ``stage_of``; Swin and ResNet are also
compared with mmdet's own backbones built with the same architecture."""
import logging
import re

import pytest
import torch

from fastmim.models.backbones import (CMT, EVA02, PyramidVisionTransformerV2, SwinTransformer,
                                      TimmBackbone, VisionTransformer)

DEPTH = 3  # blocks of the tiny plain ViTs: their stages
SWIN_DEPTHS = (1, 1, 2, 1)
SWIN_HEADS = (1, 1, 2, 2)
SWIN_WIDTH = 8


def tiny_vit(**kwargs):
    return VisionTransformer(arch=dict(embed_dim=16, depth=DEPTH, num_heads=2), img_size=32,
                             **kwargs)


def tiny_eva02(**kwargs):
    return EVA02(arch=dict(embed_dim=16, depth=DEPTH, num_heads=2), img_size=32, **kwargs)


def tiny_swin(**kwargs):
    kwargs.setdefault('out_indices', (0, 1, 2, 3))
    return SwinTransformer(arch=dict(embed_dim=SWIN_WIDTH, depths=SWIN_DEPTHS,
                                     num_heads=SWIN_HEADS), img_size=64, window_size=2, **kwargs)


def tiny_pvtv2(**kwargs):
    return PyramidVisionTransformerV2(arch=dict(depths=(1, 1, 1, 1), embed_dims=(8, 16, 16, 16),
                                                num_heads=(1, 1, 1, 1)),
                                      out_indices=(0, 1, 2, 3), **kwargs)


def tiny_cmt(**kwargs):
    return CMT(arch=dict(embed_dims=[8, 16, 16, 16], depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                         stem_channels=8, mlp_ratio=2.), img_size=32, out_indices=(0, 1, 2, 3),
               **kwargs)


def resnet18(**kwargs):
    return TimmBackbone('resnet18', out_indices=(1, 2, 3, 4), **kwargs)


def _index(pattern):
    """A predicate: the name matches ``pattern``, whose group is a 0-based stage index."""
    return lambda name, stage: bool(re.match(pattern.format(stage), name))


# Per backbone: (builder, number of stages, stem names, names of stage ``s`` (1-based),
# names frozen with every stage only (the final norm)); all from the stated definition.
STAGED = {
    'vit': (tiny_vit, DEPTH, r'(patch_embed|cls_token|pos_embed|norm_pre)\b',
            lambda name, s: name.startswith(f'blocks.{s - 1}.'), r'norm\.'),
    'eva02': (tiny_eva02, DEPTH, r'(patch_embed|cls_token|pos_embed|norm_pre)\b',
              lambda name, s: name.startswith(f'blocks.{s - 1}.'), r'norm\.'),
    # mmdet groups the patch merging that closes stage s (timm's layers.s.downsample, which
    # opens the next) and the norm of stage s's output with stage s; the last stage's output
    # norm is timm's final norm.
    'swin': (tiny_swin, 4, r'patch_embed\.',
             lambda name, s: (name.startswith((f'layers.{s - 1}.blocks.', f'layers.{s}.downsample.',
                                               f'out_norms.{s - 1}.'))), r'norm\.'),
    'pvtv2': (tiny_pvtv2, 4, r'patch_embed\.',
              lambda name, s: name.startswith(f'stages.{s - 1}.'), r'$^'),
    'cmt': (tiny_cmt, 4, r'stem\.', lambda name, s: name.startswith(f'stages.{s - 1}.'), r'$^'),
    # mmdet's ResNet: conv1 + bn1 the stem, layer1 ... layer4 the stages.
    'timm_resnet18': (resnet18, 4, r'model\.(conv1|bn1)\.',
                      lambda name, s: name.startswith(f'model.layer{s}.'), r'$^'),
}


def expected_frozen(key, names, frozen_stages):
    _, num_stages, stem, in_stage, final = STAGED[key]
    if frozen_stages < 0:
        return set()
    return {name for name in names
            if re.match(stem, name)
            or any(in_stage(name, s) for s in range(1, frozen_stages + 1))
            or (frozen_stages == num_stages and re.match(final, name))}


def frozen_names(model):
    return {name for name, param in model.named_parameters() if not param.requires_grad}


@pytest.mark.parametrize('key', sorted(STAGED))
def test_frozen_parameters_follow_the_stated_stages(key):
    build, num_stages, *_ = STAGED[key]
    names = [name for name, _ in build().named_parameters()]
    for frozen_stages in range(-1, num_stages + 1):
        model = build(frozen_stages=frozen_stages)
        assert frozen_names(model) == expected_frozen(key, names, frozen_stages), frozen_stages
    assert frozen_names(build(frozen_stages=num_stages)) == set(names)  # every stage: all


@pytest.mark.parametrize('key', sorted(STAGED))
@pytest.mark.parametrize('value', ['too_low', 'too_high', 'not_an_int'])
def test_out_of_range_values_are_refused_at_build(key, value):
    build, num_stages, *_ = STAGED[key]
    given = {'too_low': -2, 'too_high': num_stages + 1, 'not_an_int': 1.5}[value]
    with pytest.raises(ValueError) as refused:
        build(frozen_stages=given)
    message = str(refused.value)
    owner = type(build()).__name__
    assert message.startswith(f'{owner}: frozen_stages {given!r}')
    assert f'-1 ... {num_stages}' in message


@pytest.mark.parametrize('key', sorted(STAGED))
def test_frozen_modules_stay_in_eval_mode_after_train(key):
    """mmdet's ``train()`` override: a parent's ``model.train()`` would put the frozen stages
    back into training mode (dropout, drop path, BatchNorm statistics)."""
    build, num_stages, *_ = STAGED[key]
    model = build(frozen_stages=1)
    model.eval()
    model.train()
    frozen = frozen_names(model)
    for name, module in model.named_modules():
        params = [f'{name}.{p}' if name else p for p, _ in module.named_parameters()]
        if params and all(p in frozen for p in params):
            assert not module.training, name
    assert model.training
    assert any(module.training for module in model.modules())  # the later stages train


DROP_PATH_BUILDERS = {
    'vit': lambda **kw: tiny_vit(drop_path_rate=0.5, **kw),
    'eva02': lambda **kw: tiny_eva02(drop_path_rate=0.5, **kw),
    'swin': lambda **kw: tiny_swin(drop_path_rate=0.5, **kw),
    'pvtv2': lambda **kw: tiny_pvtv2(drop_path_rate=0.5, **kw),
    'cmt': lambda **kw: tiny_cmt(drop_path_rate=0.5, **kw),
}


def _two_seeds_agree(model, images):
    with torch.no_grad():
        torch.manual_seed(1)
        first = model(images)
        torch.manual_seed(2)
        second = model(images)
    return all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize('key', sorted(DROP_PATH_BUILDERS))
def test_drop_path_is_off_in_frozen_stages_after_train(key):
    """With every stage frozen, a model in training mode is deterministic (its stochastic depth
    is off); with one stage fewer, the last stage still drops paths."""
    _, num_stages, *_ = STAGED[key]
    build = DROP_PATH_BUILDERS[key]
    images = torch.randn(2, 3, 64, 64)
    assert _two_seeds_agree(build(frozen_stages=num_stages).train(), images)
    assert not _two_seeds_agree(build(frozen_stages=num_stages - 1).train(), images)


@pytest.mark.parametrize('key', ['cmt', 'timm_resnet18'])
def test_batchnorm_statistics_of_frozen_stages_stay(key):
    build, *_ = STAGED[key]
    model = build(frozen_stages=1).train()
    stem_norm = next(module for name, module in model.named_modules()
                     if isinstance(module, torch.nn.BatchNorm2d))
    before = stem_norm.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(stem_norm.running_mean, before)


def test_gradient_reaches_the_stages_after_frozen_ones_with_activation_checkpointing():
    """A frozen stem gives the first trained block an input without gradient: re-entrant
    checkpointing would then give that block's parameters none."""
    for build in (tiny_vit, tiny_swin, tiny_pvtv2, tiny_cmt):
        model = build(frozen_stages=1, with_cp=True).train()
        sum(output.sum() for output in model(torch.randn(2, 3, 64, 64))).backward()
        trained = [name for name, param in model.named_parameters() if param.requires_grad]
        assert all(model.get_parameter(name).grad is not None for name in trained)


@pytest.fixture(scope='module')
def mmdet_models():
    mmdet_backbones = pytest.importorskip('mmdet.models.backbones')
    return mmdet_backbones


def trainable(model):
    return sum(param.numel() for param in model.parameters() if param.requires_grad)


def test_swin_trainable_counts_equal_mmdets_for_every_value(mmdet_models):
    """mmdet's SwinTransformer of the same widths, depths, heads and window, with one output
    norm per stage as ours has (out_norms, and timm's final norm for the last)."""
    def theirs(frozen_stages):  # mmdet's Swin freezes in train(), not when built
        swin = mmdet_models.SwinTransformer(
            embed_dims=SWIN_WIDTH, depths=SWIN_DEPTHS, num_heads=SWIN_HEADS, window_size=2,
            pretrain_img_size=64, out_indices=(0, 1, 2, 3), frozen_stages=frozen_stages)
        swin.train()
        return swin
    assert sum(p.numel() for p in tiny_swin().parameters()) == \
        sum(p.numel() for p in theirs(-1).parameters())
    for frozen_stages in range(-1, 5):
        assert trainable(tiny_swin(frozen_stages=frozen_stages)) == \
            trainable(theirs(frozen_stages)), frozen_stages


def test_timm_resnet_trainable_counts_equal_mmdets_resnet_for_every_value(mmdet_models):
    def theirs(frozen_stages):
        return mmdet_models.ResNet(depth=18, frozen_stages=frozen_stages, norm_eval=False)
    assert sum(p.numel() for p in resnet18().parameters()) == \
        sum(p.numel() for p in theirs(-1).parameters())
    for frozen_stages in range(-1, 5):
        assert trainable(resnet18(frozen_stages=frozen_stages)) == \
            trainable(theirs(frozen_stages)), frozen_stages


def test_frozen_stages_is_no_part_of_the_checkpoint_geometry():
    assert tiny_swin(frozen_stages=2).geometry() == tiny_swin().geometry()
    assert tiny_vit(frozen_stages=2).geometry() == tiny_vit().geometry()


def timm_vit_with_dropout_after_the_embedding(**kwargs):
    """timm's ViT applies ``pos_drop`` (a module without parameters) to the embedding; no other
    dropout or drop path is on."""
    return TimmBackbone('vit_tiny_patch16_224', img_size=32, out_indices=(-1, ),
                        pos_drop_rate=0.5, **kwargs)


def test_timm_dropout_after_a_frozen_stem_is_off_after_train():
    """A module without parameters has no timm group; it belongs to the stage the input passes
    before reaching it. Independent check: the only dropout of the model is that one, so with
    the stem frozen a model in training mode gives the same output under any seed."""
    images = torch.randn(2, 3, 32, 32)
    frozen_stem = timm_vit_with_dropout_after_the_embedding(frozen_stages=0).train()
    assert not frozen_stem.model.model.pos_drop.training
    assert frozen_stem.model.model.blocks[0].training
    assert _two_seeds_agree(frozen_stem, images)
    assert not _two_seeds_agree(timm_vit_with_dropout_after_the_embedding().train(), images)


@pytest.mark.parametrize('key', ['vit', 'swin', 'timm_resnet18'])
def test_building_with_frozen_stages_logs_what_it_froze_once(key, log_records):
    build, *_ = STAGED[key]
    model = build(frozen_stages=1)
    model.train()
    frozen = sum(param.numel() for param in model.parameters() if not param.requires_grad)
    total = sum(param.numel() for param in model.parameters())
    lines = [message for level, message in log_records.messages
             if level == logging.INFO and 'frozen_stages=1' in message]
    assert len(lines) == 1, log_records.messages
    assert lines[0].startswith(type(model).__name__)
    assert f'{frozen:,} of {total:,}' in lines[0]
    log_records.messages.clear()
    build()
    assert not [message for _, message in log_records.messages if 'frozen_stages' in message]
