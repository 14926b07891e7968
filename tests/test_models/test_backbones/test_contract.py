"""The backbone contract: every backbone keeps it, and any load path transfers resolution."""
import numpy as np
import pytest
import torch
from mmengine.runner.checkpoint import load_state_dict as mmengine_load_state_dict
from timm.layers import resample_abs_pos_embed
from torch import nn

from fastmim.engine.optim_constructors import backbone_layer_ids
from fastmim.models.backbones import (CMT, EVA02, PyramidVisionTransformerV2,
                                      SwinTransformer, TimmBackbone, VisionTransformer)
from fastmim.models.utils.backbone_contract import BackboneContract
from fastmim.registry import MODELS

TINY_VIT = dict(embed_dim=32, depth=2, num_heads=2)
TINY_SWIN = dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2))
TINY_PVT = dict(depths=(1, 1), embed_dims=(16, 32), num_heads=(1, 2))
TINY_CMT = dict(embed_dims=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                stem_channels=8, mlp_ratio=2.0)


BUILDERS = {
    'VisionTransformer': lambda: VisionTransformer(arch=TINY_VIT, img_size=64),
    'SwinTransformer': lambda: SwinTransformer(arch=TINY_SWIN, img_size=64, window_size=4,
                                               out_indices=(-1, )),
    'PyramidVisionTransformerV2': lambda: PyramidVisionTransformerV2(arch=TINY_PVT,
                                                                     out_indices=(-1, )),
    'CMT': lambda: CMT(arch=TINY_CMT, img_size=64),
    'EVA02': lambda: EVA02(arch=TINY_VIT, img_size=64),
    'TimmBackbone': lambda: TimmBackbone('resnet18', out_indices=(-1, )),
}


def test_every_registered_backbone_has_a_builder_here():
    """BUILDERS is written by hand: a backbone registered without an entry would skip the
    contract test without a word. (fastmim's own classes: other tests register small ones.)"""
    registered = {name for name, cls in MODELS.module_dict.items()
                  if isinstance(cls, type) and issubclass(cls, BackboneContract)
                  and cls.__module__.startswith('fastmim.')}
    missing = sorted(registered - set(BUILDERS))
    assert not missing, f'add a small build of {missing} to BUILDERS'


@pytest.mark.parametrize('rate', [-0.2, 1.0, '0.1'])
@pytest.mark.parametrize('backbone, kwargs', [
    (VisionTransformer, dict(arch=TINY_VIT, img_size=64)),
    (SwinTransformer, dict(arch=TINY_SWIN, img_size=64, window_size=4)),
    (PyramidVisionTransformerV2, dict(arch=TINY_PVT)),
    (CMT, dict(arch=TINY_CMT, img_size=64)),
    (EVA02, dict(arch=TINY_VIT, img_size=64)),
    (TimmBackbone, dict(model_name='resnet18')),
])
def test_a_drop_path_rate_outside_0_1_is_named_when_built(backbone, kwargs, rate):
    """--cfg-options model.backbone.drop_path_rate=-0.2 is refused when the backbone is built,
    not at the first training step in a traceback from torch's bernoulli_ naming no key."""
    with pytest.raises(ValueError, match=r'drop_path_rate must be a number in \[0, 1\)'):
        backbone(drop_path_rate=rate, **kwargs)


@pytest.mark.parametrize('rate', [np.float32(0.1), np.int64(0), 0, 0.3])
def test_numbers_of_any_real_type_are_drop_path_rates(rate):
    """A rate read from numpy (a sweep's np.linspace) is a number like any other."""
    VisionTransformer(arch=TINY_VIT, img_size=64, drop_path_rate=rate)


@pytest.mark.parametrize('name', sorted(BUILDERS))
def test_every_backbone_keeps_the_contract(name):
    backbone = BUILDERS[name]()
    assert isinstance(backbone, BackboneContract)
    assert len(backbone.out_channels) == len(backbone.out_strides) >= 1
    geometry = backbone.geometry()
    assert geometry['type'] == name
    ids, rest = backbone_layer_ids(backbone)
    assert set(ids) == {name for name, _ in backbone.named_parameters()}
    assert rest == backbone.num_layer_ids - 1 >= max(ids.values())
    assert min(ids.values()) == 0
    # Adapting a backbone's own weights changes nothing but what it rebuilds itself.
    state = backbone.state_dict()
    adapted = backbone.adapt_state_dict(state, geometry)
    assert all(torch.equal(adapted[key], state[key]) for key in adapted)
    # The entries that set its size are in what checkpoints record, so that a file of another
    # size can be named as such (load_pretrained asks size_keys, it keeps no list of its own).
    assert backbone.size_keys and set(backbone.size_keys) <= set(geometry)


@pytest.mark.parametrize('name', sorted(BUILDERS))
def test_checkpoints_of_the_published_setting_may_lack_nothing(name):
    """``checkpoint_optional_names()`` names keys the backbone has; in the setting of
    pre-training and classification (one output, no extra options) it names none, so that a
    file lacking any tensor there is an error."""
    backbone = BUILDERS[name]()
    assert backbone.checkpoint_optional_names() == set()


# The size ``geometry()['img_size']`` must record: what the resolution-dependent tensors of
# each BUILDERS entry were built for (None: the backbone has none, and no entry).
BUILT_IMG_SIZES = {'VisionTransformer': 64, 'SwinTransformer': 64, 'CMT': 64, 'EVA02': 64,
                   'PyramidVisionTransformerV2': None, 'TimmBackbone': None}


@pytest.mark.parametrize('name', sorted(BUILDERS))
def test_geometry_starts_with_type_and_records_the_built_img_size(name):
    """The entries central code reads (``fastmim.apis``' default input size, the size in
    checkpoint meta, the visualisation tool): ``type`` first, ``img_size`` where the backbone
    has resolution-dependent tensors."""
    geometry = BUILDERS[name]().geometry()
    assert next(iter(geometry)) == 'type'
    size = BUILT_IMG_SIZES[name]
    assert geometry.get('img_size') in ((None, ) if size is None else (size, [size, size]))


def test_a_timm_backbone_built_for_a_size_records_it():
    geometry = TimmBackbone('vit_tiny_patch16_224', img_size=64).geometry()
    assert geometry['img_size'] == 64


def test_plain_load_state_dict_resizes_the_vit_position_embedding():
    torch.manual_seed(0)
    low = VisionTransformer(arch=TINY_VIT, img_size=64, patch_size=16)   # 4x4 grid
    high = VisionTransformer(arch=TINY_VIT, img_size=112, patch_size=16)  # 7x7 grid
    high.load_state_dict(low.state_dict())
    expected = resample_abs_pos_embed(low.pos_embed.detach(), new_size=(7, 7), old_size=(4, 4),
                                      num_prefix_tokens=1, antialias=False)
    torch.testing.assert_close(high.pos_embed.detach(), expected)
    torch.testing.assert_close(high.blocks[0].attn.qkv.weight, low.blocks[0].attn.qkv.weight)


def test_mmengine_load_path_resizes_the_swin_tables_inside_a_model(release_table_resampling):
    """mmengine's own ``load_state_dict`` (used by ``load_checkpoint`` / ``load_from``) walks
    ``_load_from_state_dict``, so the backbone's pre-hook resizes there too, under a prefix."""
    torch.manual_seed(0)
    window4 = nn.Sequential()
    window4.add_module('backbone', SwinTransformer(arch=TINY_SWIN, img_size=64, window_size=4,
                                                   out_indices=(-1, )))
    window7 = nn.Sequential()
    window7.add_module('backbone', SwinTransformer(arch=TINY_SWIN, img_size=112, window_size=7,
                                                   out_indices=(-1, )))
    mmengine_load_state_dict(window7, window4.state_dict(), strict=True)

    source = window4.backbone.layers[1].blocks[1].attn.relative_position_bias_table.detach()
    torch.testing.assert_close(
        window7.backbone.layers[1].blocks[1].attn.relative_position_bias_table.detach(),
        release_table_resampling(source, 4, 7), rtol=0, atol=1e-5)


def test_plain_load_state_dict_resizes_the_cmt_bias_and_keeps_a_sincos_table():
    torch.manual_seed(0)
    low, high = CMT(arch=TINY_CMT, img_size=64), CMT(arch=TINY_CMT, img_size=128)
    high.load_state_dict(low.state_dict())
    assert high.stages[0].relative_position_bias.shape == (1, 32 * 32, 32 * 32 // 64)
    # The resized bias is what the 64-px model itself uses when it runs at 128 px.
    torch.testing.assert_close(high.stages[1].relative_position_bias.detach(),
                               low.stages[1].bias_for((16, 16)).detach())

    sincos_low = VisionTransformer(arch=TINY_VIT, img_size=64, pos_embed_type='sincos')
    sincos_high = VisionTransformer(arch=TINY_VIT, img_size=128, pos_embed_type='sincos')
    own_table = sincos_high.pos_embed.detach().clone()
    sincos_high.load_state_dict(sincos_low.state_dict())
    assert torch.equal(sincos_high.pos_embed, own_table)


def test_negative_out_indices_count_from_the_end_for_every_staged_backbone():
    assert CMT(arch=TINY_CMT, img_size=64, out_indices=(-2, -1)).out_indices == [2, 3]
    assert SwinTransformer(arch=TINY_SWIN, img_size=64, out_indices=(-1, )).out_indices == [1]
    assert PyramidVisionTransformerV2(arch=TINY_PVT, out_indices=(-2, )).out_indices == [0]
    with pytest.raises(ValueError, match='CMT: out index 4 is out of range for 4 stages'):
        CMT(arch=TINY_CMT, img_size=64, out_indices=(4, ))


def test_layer_decay_asks_the_backbone_and_refuses_one_without_ids():

    class TwoLayers(nn.Module):

        def __init__(self):
            super().__init__()
            self.first, self.second = nn.Linear(2, 2), nn.Linear(2, 2)

        def layer_id(self, name):
            return 0 if name.startswith('first') else 1

        num_layer_ids = 3

    ids, rest = backbone_layer_ids(TwoLayers())
    assert ids == {'first.weight': 0, 'first.bias': 0, 'second.weight': 1, 'second.bias': 1}
    assert rest == 2
    with pytest.raises(TypeError, match='Linear has no layer_id'):
        backbone_layer_ids(nn.Linear(2, 2))


@pytest.mark.parametrize('backbone, kwargs', [
    (VisionTransformer, dict(arch=TINY_VIT, img_size=64)),
    (EVA02, dict(arch=TINY_VIT, img_size=64)),
    (SwinTransformer, dict(arch=TINY_SWIN, img_size=64)),
    (PyramidVisionTransformerV2, dict(arch=TINY_PVT)),
    (CMT, dict(arch=TINY_CMT, img_size=64)),
    (TimmBackbone, dict(model_name='resnet18')),
], ids=lambda value: getattr(value, '__name__', None))
def test_one_int_out_index_is_that_index_for_every_backbone(backbone, kwargs):
    """``--cfg-options model.backbone.out_indices=-2`` gives an int (mmpretrain's backbones
    take one): one index, not ``TypeError: 'int' object is not iterable``."""
    one = backbone(out_indices=-2, **kwargs)
    assert one.out_indices == backbone(out_indices=(-2, ), **kwargs).out_indices
    assert len(one.out_channels) == 1


@pytest.mark.parametrize('backbone, timm_model', [
    (VisionTransformer, 'vit_tiny_patch16_224'), (SwinTransformer, 'swin_tiny_patch4_window7_224'),
    (PyramidVisionTransformerV2, 'pvt_v2_b0'), (EVA02, 'eva02_tiny_patch14_224')])
def test_the_classifier_name_is_the_timm_family_s(backbone, timm_model):
    """tools/convert/to_timm.py names a fine-tuned head after the backbone's timm_classifier
    when no --arch gives a timm model to ask."""
    import timm
    with torch.device('meta'):
        model = timm.create_model(timm_model, pretrained=False)
    assert isinstance(model, backbone.__mro__[1:])
    assert backbone.timm_classifier == model.pretrained_cfg['classifier']


@pytest.mark.parametrize('backbone, timm_model', [
    (VisionTransformer, 'vit_tiny_patch16_224'), (EVA02, 'eva02_tiny_patch14_224')])
def test_the_pooled_norm_is_where_the_timm_family_normalises_pooled_features(backbone,
                                                                              timm_model):
    """tools/convert/to_timm.py writes a classifier's pooled-features norm under the backbone's
    timm_pooled_norm, for the timm model built with average pooling."""
    import timm
    with torch.device('meta'):
        model = timm.create_model(timm_model, pretrained=False, global_pool='avg')
    assert isinstance(model.get_submodule(backbone.timm_pooled_norm), nn.LayerNorm)
