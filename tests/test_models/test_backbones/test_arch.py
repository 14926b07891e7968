"""The shared arch resolution of the backbones: names, aliases, dicts and their errors."""
import pytest

from fastmim.models.backbones._arch import resolve_arch
from fastmim.models.backbones.cmt import CMT
from fastmim.models.backbones.vit import ARCHS as VIT_ARCHS
from fastmim.models.backbones.vit import resolve_arch as resolve_vit_arch
from fastmim.registry import MODELS

ARCHS = {'b': dict(width=8, depth=2)}


def test_names_are_case_insensitive_aliases_resolve_and_results_are_copies():
    settings = resolve_arch('Net', 'BASE', ARCHS, ('width', 'depth'), aliases={'base': 'b'})
    assert settings == ARCHS['b'] and settings is not ARCHS['b']
    assert resolve_vit_arch('base') == VIT_ARCHS['b']


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match=r"Net: unknown arch 'huge'; expected one of \['b', "
                                         r"'base'\]"):
        resolve_arch('Net', 'huge', ARCHS, ('width', 'depth'), aliases={'base': 'b'})


def test_dict_needs_every_required_key_and_only_known_ones_when_asked():
    with pytest.raises(ValueError, match=r"lacks keys \['depth'\]; expected keys"):
        resolve_arch('Net', dict(width=8), ARCHS, ('width', 'depth'))
    custom = dict(width=8, depth=2, extra=1)
    assert resolve_arch('Net', custom, ARCHS, ('width', 'depth')) == custom
    with pytest.raises(ValueError, match=r"has unknown keys \['extra'\]"):
        resolve_arch('Net', custom, ARCHS, ('width', 'depth'), optional_keys=('ratio', ))


def test_other_types_are_rejected():
    with pytest.raises(TypeError, match='Net: arch must be a str or a dict, got int'):
        resolve_arch('Net', 3, ARCHS, ('width', 'depth'))


def test_cmt_rejects_a_misspelt_width():
    arch = dict(embed_dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
                stem_channels=8, mlp_ratio=2, reduction_ratio=(8, 4, 2, 1))
    with pytest.raises(ValueError, match=r"CMT: arch dict .* has unknown keys "
                                         r"\['reduction_ratio'\]"):
        CMT(arch=arch)


@pytest.mark.parametrize('backbone', ['VisionTransformer', 'EVA02'])
def test_plain_vit_arch_dict_whose_width_does_not_split_over_its_heads(backbone):
    """timm asserted it (a bare AssertionError); EVA-02 failed at the first forward."""
    with pytest.raises(ValueError, match=f'{backbone}: arch embed_dim 30 is not divisible by '
                       'num_heads 4'):
        MODELS.build(dict(type=backbone, arch=dict(embed_dim=30, depth=1, num_heads=4)))


def test_eva02_arch_dict_whose_heads_the_rotary_embedding_cannot_split():
    """RoPE splits each head over two axes, sin and cos: 40 / 4 = 10 channels was a shape error
    at the first forward."""
    with pytest.raises(ValueError, match=r'EVA02: arch embed_dim 40 / num_heads 4 = 10 channels '
                       r'per head, not a multiple of 4'):
        MODELS.build(dict(type='EVA02', arch=dict(embed_dim=40, depth=1, num_heads=4)))


def test_an_unknown_key_names_the_close_known_one():
    with pytest.raises(ValueError, match=r"has unknown keys \['widht'\] \(did you mean "
                                         r"'width'\?\); expected keys \['width', 'depth'\] "
                                         r"\(optionally \['ratio'\]\)"):
        resolve_arch('Net', dict(width=8, depth=2, widht=4), ARCHS, ('width', 'depth'),
                     optional_keys=('ratio', ))


@pytest.mark.parametrize('backbone, arch, key, close', [
    ('VisionTransformer', dict(embed_dim=32, depth=2, num_heads=2), 'embed_dims', 'embed_dim'),
    ('SwinTransformer', dict(embed_dim=16, depths=(1, 1), num_heads=(1, 2)), 'mlp_ration',
     'mlp_ratio'),
    ('PyramidVisionTransformerV2', dict(depths=(1, 1), embed_dims=(16, 32), num_heads=(1, 2)),
     'sr_ratio', 'sr_ratios')])
def test_timm_backbones_refuse_an_arch_key_their_timm_model_does_not_take(backbone, arch, key,
                                                                          close):
    """``--cfg-options model.backbone.arch.embed_dims=96`` (mmpretrain's spelling) reached timm
    as ``TypeError: __init__() got an unexpected keyword argument 'embed_dims'``, naming
    neither arch nor embed_dim."""
    with pytest.raises(ValueError, match=rf"{backbone}: arch dict .* has unknown keys "
                                         rf"\['{key}'\] \(did you mean '{close}'\?\)"):
        MODELS.build(dict(type=backbone, arch={**arch, key: 2}, out_indices=(1, )))


@pytest.mark.parametrize('backbone, arch', [
    ('VisionTransformer', dict(embed_dim=32, depth=2, num_heads=2, mlp_ratio=2., qkv_bias=False)),
    ('SwinTransformer', dict(embed_dim=16, depths=(1, 1), num_heads=(1, 2), mlp_ratio=2.)),
    ('PyramidVisionTransformerV2', dict(depths=(1, 1), embed_dims=(16, 32), num_heads=(1, 2),
                                        sr_ratios=(2, 1), linear=True))])
def test_timm_arguments_in_an_arch_dict_still_build(backbone, arch):
    MODELS.build(dict(type=backbone, arch=arch, out_indices=(1, )))


TINY_ARCHS = {
    'VisionTransformer': dict(embed_dim=32, depth=2, num_heads=2),
    'EVA02': dict(embed_dim=32, depth=2, num_heads=2),
    'SwinTransformer': dict(embed_dim=16, depths=(1, 1), num_heads=(1, 2)),
    'PyramidVisionTransformerV2': dict(depths=(1, 1), embed_dims=(16, 32), num_heads=(1, 2)),
}


@pytest.mark.parametrize('backbone, key, value', [
    ('VisionTransformer', 'img_size', 64), ('VisionTransformer', 'patch_size', 8),
    ('VisionTransformer', 'final_norm', False), ('VisionTransformer', 'drop_path_rate', .1),
    ('EVA02', 'img_size', 64), ('EVA02', 'patch_size', 8), ('EVA02', 'drop_path_rate', .1),
    ('SwinTransformer', 'img_size', 64), ('SwinTransformer', 'window_size', 2),
    ('SwinTransformer', 'drop_path_rate', .1), ('SwinTransformer', 'always_partition', True),
    ('PyramidVisionTransformerV2', 'drop_path_rate', .1)])
def test_an_arch_key_the_backbone_sets_from_its_own_argument_is_refused(backbone, key, value):
    """The backbone hands timm ``img_size`` (and the others) from its own argument: the same key
    in the arch dict reached timm as ``__init__() got multiple values for keyword argument
    'img_size'``, naming neither arch nor the backbone's argument."""
    with pytest.raises(ValueError, match=rf"{backbone}: arch dict sets '{key}', which the "
                                         rf"backbone sets from its own argument {key}; give "
                                         rf"{key}={value!r} as the backbone's argument instead"):
        MODELS.build(dict(type=backbone, arch={**TINY_ARCHS[backbone], key: value},
                          out_indices=(1, )))


@pytest.mark.parametrize('backbone, key, value', [
    ('VisionTransformer', 'mlp_ratio', 2.), ('SwinTransformer', 'mlp_ratio', 2.),
    ('PyramidVisionTransformerV2', 'linear', True)])
def test_a_timm_argument_given_both_in_arch_and_to_the_backbone_is_refused(backbone, key, value):
    """Both reached timm's constructor: ``got multiple values for keyword argument``. (EVA02
    takes its arch keys in arch only, and says so.)"""
    with pytest.raises(ValueError, match=rf"{backbone}: .*'{key}'.* both in arch and as the "
                                         rf"backbone's argument"):
        MODELS.build(dict(type=backbone, arch={**TINY_ARCHS[backbone], key: value},
                          out_indices=(1, ), **{key: value}))


def test_an_arch_block_fn_with_rel_pos_bias_is_refused():
    with pytest.raises(ValueError, match='rel_pos_bias=True sets the block class; block_fn '
                                         'cannot be combined with it'):
        MODELS.build(dict(type='VisionTransformer', rel_pos_bias=True,
                          arch={**TINY_ARCHS['VisionTransformer'], 'block_fn': None}))
