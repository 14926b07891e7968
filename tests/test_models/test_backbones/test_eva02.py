"""EVA-02 on the backbone contract: shapes, timm's own forward as reference, geometry, resolution
transfer (128 -> 224 through ``load_state_dict`` and ``load_pretrained``), foreign layouts,
FastMIM pre-training and layer decay.

References are independent of the backbone's code: timm's ``Eva`` forward and factories,
timm's ``resample_abs_pos_embed`` / ``resample_patch_embed``, hand-written name tables.
"""
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import OptimWrapper
from skimage import data as skdata
from skimage.transform import resize
from timm.layers import resample_abs_pos_embed, resample_patch_embed
from timm.models.eva import Eva
from torch import nn

from fastmim.models.backbones import EVA02

pytestmark = pytest.mark.usefixtures('one_thread')

TINY = dict(embed_dim=64, depth=3, num_heads=2)
# timm's factory of each published size (EVA-02 at patch 14; this backbone uses patch 16).
TIMM_FACTORIES = {'ti': 'eva02_tiny_patch14_224', 's': 'eva02_small_patch14_224',
                  'b': 'eva02_base_patch14_224', 'l': 'eva02_large_patch14_224'}


def tiny(**kwargs):
    torch.manual_seed(0)
    return EVA02(arch=kwargs.pop('arch', TINY), **kwargs).eval()


def photos(size, count=4):
    """Real photos from scikit-image as a uint8 (count, 3, size, size) batch."""
    images = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()][:count]
    batch = [resize(p, (size, size), anti_aliasing=True, preserve_range=True) for p in images]
    return torch.from_numpy(np.stack(batch).round().astype(np.uint8)).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('size', [128, 224, (96, 160)])
def test_maps_and_strides_follow_the_input(size):
    model = tiny(img_size=128, out_indices=(0, -1))
    height, width = (size, size) if isinstance(size, int) else size
    with torch.no_grad():
        outputs = model(torch.randn(2, 3, height, width))
    assert model.out_strides == [16, 16] and model.out_channels == [64, 64]
    assert [tuple(o.shape) for o in outputs] == [(2, 64, height // 16, width // 16)] * 2


def test_input_not_a_multiple_of_the_patch_raises():
    with pytest.raises(ValueError, match='multiples of the patch size 16'):
        tiny()(torch.randn(1, 3, 120, 128))


def timm_eva(img_size, state):
    """timm's own EVA-02 model (tiny widths, patch 16, RoPE over an 8x8 reference grid)."""
    model = Eva(img_size=img_size, patch_size=16, num_classes=0, global_pool='',
                mlp_ratio=4 * 2 / 3, swiglu_mlp=True, use_rot_pos_emb=True,
                ref_feat_shape=(8, 8), **TINY).eval()
    model.load_state_dict(state)
    return model


@pytest.mark.parametrize('size', [128, 224])
def test_last_map_is_timms_eva_forward_on_the_same_weights(size):
    """timm's ``Eva.forward_features`` (final norm, class token first) built for the input size
    is the reference; at 224 it gets the 8x8 ``pos_embed`` resized by timm's function."""
    model = tiny(img_size=128)
    state = model.state_dict()
    grid = size // 16
    state['pos_embed'] = resample_abs_pos_embed(state['pos_embed'], new_size=(grid, grid),
                                                old_size=(8, 8), antialias=False)
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ours = model(images)[-1]
        tokens = timm_eva(size, state).forward_features(images)[:, 1:]
    torch.testing.assert_close(ours, tokens.reshape(2, grid, grid, -1).permute(0, 3, 1, 2))


def test_timm_forward_features_is_the_backbone_forward_on_a_smaller_grid():
    """timm's ``forward_features`` on this backbone embeds as ``forward`` does (timm's own
    ``Eva`` resizes pos_embed with anti-aliasing, which changes it on a smaller grid)."""
    model = tiny(img_size=96)
    images = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        (expected, ) = model(images)
        tokens = model.forward_features(images)[:, 1:]
    torch.testing.assert_close(tokens.reshape(2, 2, 3, -1).permute(0, 3, 1, 2), expected,
                               rtol=0, atol=0)


@pytest.mark.parametrize('arch', sorted(TIMM_FACTORIES))
def test_published_sizes_are_timms_eva02_with_patch_16(arch):
    """Same tensors (names and shapes) as timm's EVA-02 of that size built with patch 16."""
    with torch.device('meta'):
        ours = EVA02(arch=arch, img_size=128)
        reference = timm.create_model(TIMM_FACTORIES[arch], patch_size=16, img_size=128,
                                      num_classes=0, global_pool='')
    shapes = {key: tuple(value.shape) for key, value in ours.state_dict().items()}
    assert shapes == {key: tuple(value.shape) for key, value in reference.state_dict().items()}
    assert ours.rope.ref_feat_shape == (8, 8)


def test_final_norm_off_leaves_the_last_block_output():
    model = tiny(final_norm=False)
    assert isinstance(model.norm, nn.Identity) and 'norm.weight' not in model.state_dict()


@pytest.mark.parametrize('kwargs, message', [
    (dict(arch='xl'), "unknown arch 'xl'"),
    (dict(arch=dict(TINY, mlp_ration=3.)), r"unknown keys \['mlp_ration'\]"),
    (dict(global_pool='avg'), r"arguments \['global_pool'\] are fixed"),
    (dict(embed_dim=32), r"arguments \['embed_dim'\] are fixed by this backbone \(give them in "
     r"arch\)"),
    (dict(out_indices=(3, )), 'out index 3 is out of range for 3 blocks'),
    (dict(img_size=120), r'model\.backbone\.img_size 120 is no multiple of 16 '
                         r'\(model\.backbone\.patch_size\).*: use 112 or 128'),
    (dict(rope_ref_grid=(8, 0)), 'rope_ref_grid must be a positive int'),
])
def test_bad_arguments_raise_naming_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EVA02(**dict(dict(arch=TINY), **kwargs))


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------
def test_geometry_is_plain_and_rebuilds_the_same_backbone(tmp_path):
    model = tiny(img_size=(128, 96), rope_ref_grid=(8, 8))
    geometry = model.geometry()
    assert next(iter(geometry)) == 'type' and geometry['type'] == 'EVA02'
    assert geometry['pos_embed_grid'] == [8, 6] and geometry['rope_ref_grid'] == [8, 8]
    assert json.loads(json.dumps(geometry)) == geometry
    torch.save({'meta': {'geometry': geometry}}, tmp_path / 'meta.pth')
    assert torch.load(tmp_path / 'meta.pth', weights_only=True)['meta']['geometry'] == geometry
    rebuilt = EVA02(arch=geometry['arch'], img_size=geometry['img_size'],
                    patch_size=geometry['patch_size'], rope_ref_grid=geometry['rope_ref_grid'])
    assert rebuilt.geometry() == geometry
    state = model.state_dict()  # its own weights with its own geometry: nothing to change
    adapted = model.adapt_state_dict(state, geometry)
    assert adapted.keys() == state.keys()
    assert all(torch.equal(adapted[key], state[key]) for key in state)


def test_default_rope_reference_is_the_construction_grid():
    assert tiny(img_size=224).geometry()['rope_ref_grid'] == [14, 14]
    assert tiny(img_size=224).rope.ref_feat_shape == (14, 14)


# --------------------------------------------------------------------------------------------
# Resolution transfer and foreign layouts through load_state_dict (the pre-hook)
# --------------------------------------------------------------------------------------------
def assert_is_the_128_model_run_at_224(finetune, pretrained):
    """``finetune`` (224 px, loaded from the 128-px ``pretrained``) holds ``pretrained``'s
    position embedding resized as timm resizes it, and so gives ``pretrained``'s outputs run at
    224 px."""
    expected = resample_abs_pos_embed(pretrained.pos_embed.detach(), new_size=(14, 14),
                                      old_size=(8, 8), num_prefix_tokens=1, antialias=False)
    torch.testing.assert_close(finetune.pos_embed.detach(), expected, rtol=0, atol=0)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(finetune(images), pretrained(images))


def test_128_weights_load_at_224_and_equal_the_128_model_run_at_224():
    pretrained = tiny(img_size=128)
    finetune = tiny(img_size=224, rope_ref_grid=8)
    finetune.load_state_dict(pretrained.state_dict())
    assert_is_the_128_model_run_at_224(finetune, pretrained)


def original_eva02_names(state):
    """timm's names -> the original EVA-02 release's, written out by hand."""
    renames = [('.mlp.norm.', '.mlp.ffn_ln.'), ('.attn.norm.', '.attn.inner_attn_ln.'),
               ('.mlp.fc1_g.', '.mlp.w1.'), ('.mlp.fc1_x.', '.mlp.w2.'), ('.mlp.fc1.', '.mlp.w12.'),
               ('.mlp.fc2.', '.mlp.w3.'), ('.attn.q_proj.bias', '.attn.q_bias'),
               ('.attn.v_proj.bias', '.attn.v_bias')]
    renamed = {}
    for key, value in state.items():
        for new, old in renames:
            key = key.replace(new, old)
        renamed[key] = value
    return renamed


@pytest.mark.parametrize('arch', [TINY, dict(TINY, qkv_fused=False, scale_mlp=True)],
                         ids=['fused-qkv-glu', 'separate-qkv-swiglu'])
def test_original_eva02_layout_loads(arch):
    source = tiny(arch=arch)
    state = original_eva02_names(source.state_dict())
    renamed = set(state) - set(source.state_dict())
    assert renamed and all('.mlp.' in key or '.attn.' in key for key in renamed)
    state['rope.freqs_cos'] = torch.zeros(64, 16)  # the release's RoPE buffer
    assert set(EVA02.rename_foreign_keys(state)) == set(source.state_dict())  # no instance
    target = tiny(arch=arch)
    target.load_state_dict(state)
    images = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(target(images), source(images))


def test_timm_patch14_eva02_weights_load_into_the_patch16_backbone():
    """timm's own EVA-02 (patch 14, 224 px: a 16x16 grid) -> patch 16 at 128 px (8x8)."""
    torch.manual_seed(1)
    reference = timm.create_model('eva02_tiny_patch14_224', num_classes=0, global_pool='',
                                  **TINY)
    state = reference.state_dict()
    model = tiny(img_size=128)
    model.load_state_dict(state)
    torch.testing.assert_close(model.patch_embed.proj.weight.detach(),
                               resample_patch_embed(state['patch_embed.proj.weight'], [16, 16]))
    torch.testing.assert_close(
        model.pos_embed.detach(),
        resample_abs_pos_embed(state['pos_embed'], new_size=(8, 8), old_size=(16, 16),
                               num_prefix_tokens=1, antialias=False))
    torch.testing.assert_close(model.blocks[2].mlp.fc1.weight, reference.blocks[2].mlp.fc1.weight)


def test_weights_fit_a_plain_timm_eva02_for_export():
    """``tools/convert/to_timm.py --arch`` calls the rule on timm's own model: patch 16 at 128 px
    -> timm's patch-14 EVA-02 at 224 px, loaded strictly."""
    model = tiny(img_size=128)
    reference = timm.create_model('eva02_tiny_patch14_224', num_classes=0, global_pool='',
                                  **TINY)
    fitted = EVA02.adapt_state_dict(reference, model.state_dict(), model.geometry())
    reference.load_state_dict(fitted, strict=True)
    assert reference.patch_embed.proj.weight.shape[-2:] == (14, 14)
    assert reference.pos_embed.shape == (1, 1 + 16 * 16, 64)


@pytest.fixture
def current_log(caplog):
    """Records of mmengine's current logger (where ``print_log(logger='current')`` writes)."""
    logger = MMLogger.get_current_instance()
    logger.addHandler(caplog.handler)  # MMLogger calls its own handlers only
    yield caplog
    logger.removeHandler(caplog.handler)


def test_another_rope_reference_is_reported(current_log):
    pretrained = tiny(img_size=128)
    finetune = tiny(img_size=224)  # rope_ref_grid left at 14: not what the weights learnt
    adapted = finetune.adapt_state_dict(pretrained.state_dict(), pretrained.geometry())
    assert adapted['pos_embed'].shape == finetune.pos_embed.shape
    assert any('rope_ref_grid [8, 8], this model has [14, 14]' in record.getMessage()
               for record in current_log.records)
    current_log.clear()
    tiny(img_size=224, rope_ref_grid=8).adapt_state_dict(pretrained.state_dict(),
                                                         pretrained.geometry())
    assert not current_log.records


def test_untransferable_tensors_come_back_unchanged():
    model = tiny(img_size=128)
    odd = torch.randn(1, 1 + 7 * 5, 64)  # not a square grid and no geometry to say which
    wrong_width = torch.randn(1, 65, 32)
    for pos_embed in (odd, wrong_width):
        assert model.adapt_state_dict({'pos_embed': pos_embed})['pos_embed'] is pos_embed
    assert model.adapt_state_dict({'head.weight': odd})['head.weight'] is odd


# --------------------------------------------------------------------------------------------
# Pre-training with FastMIM
# --------------------------------------------------------------------------------------------
def tiny_fastmim():
    from fastmim.registry import MODELS
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='FastMIM',
        backbone=dict(type='EVA02', arch=TINY, img_size=64),
        neck=dict(type='MIMDecoder', embed_dim=32, depth=1, num_heads=4),
        target_generator=dict(type='HOGGenerator'),
        block_size=16))


def test_fastmim_pretraining_loss_falls_and_every_parameter_learns():
    model = tiny_fastmim()
    assert model.neck.out_channels == 27 * 2 * 2  # a 16-px token covers 2x2 HOG cells
    optim_wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    batch = dict(inputs=photos(64))
    losses = [model.train_step(batch, optim_wrapper)['loss'].item() for _ in range(12)]
    assert all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    unchanged = [name for name, p in model.named_parameters()
                 if p.requires_grad and torch.equal(p.detach(), before[name])]
    assert not unchanged
    assert model.geometry()['backbone'] == model.backbone.geometry()


def test_bf16_autocast_gives_a_finite_loss_and_gradients():
    """Mixed precision (bf16 on CPUs, as fp16 on GPUs): timm builds RoPE in fp32 and casts the
    rotated queries and keys back; the loss and every backbone gradient stay finite."""
    model = tiny_fastmim()
    inputs = model.data_preprocessor(dict(inputs=photos(64, count=2)))['inputs']
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outputs = model.reconstruct(inputs)
        loss = model.criterion(outputs['prediction'], outputs['target'], outputs['mask'])
    assert outputs['prediction'].dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.backbone.parameters())


# --------------------------------------------------------------------------------------------
# Fine-tuning: 128-px checkpoint -> 224-px classifier through load_pretrained / FastMIMPretrained
# --------------------------------------------------------------------------------------------
def save_pretraining_checkpoint(backbone, path):
    """What a FastMIM pre-training run saves: backbone, decoder, mask token, geometry."""
    state = {'backbone.' + key: value for key, value in backbone.state_dict().items()}
    state.update({'neck.proj.weight': torch.randn(8, 64), 'mask_token': torch.zeros(1, 3, 1, 1)})
    torch.save({'state_dict': state, 'meta': {'geometry': {'backbone': backbone.geometry()}}},
               path)


def test_128_checkpoint_fine_tunes_at_224_through_load_pretrained(tmp_path, current_log):
    from fastmim.models.utils import load_pretrained
    pretrained = tiny(img_size=128)
    save_pretraining_checkpoint(pretrained, tmp_path / 'epoch_800.pth')
    finetune = tiny(img_size=224, rope_ref_grid=8)
    load_pretrained(finetune, str(tmp_path / 'epoch_800.pth'))
    assert_is_the_128_model_run_at_224(finetune, pretrained)
    assert not [r for r in current_log.records if 'rope_ref_grid' in r.getMessage()]


def test_fine_tuning_classifier_loads_the_checkpoint_on_init_weights(tmp_path):
    """The fine-tuning config's path: ``init_cfg=FastMIMPretrained`` on a 224-px classifier whose
    backbone has no final norm (the head's fc_norm follows the pooling)."""
    from fastmim.registry import MODELS
    pretrained = tiny(img_size=128)
    save_pretraining_checkpoint(pretrained, tmp_path / 'epoch_800.pth')
    classifier = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='EVA02', arch=TINY, img_size=224, rope_ref_grid=8, final_norm=False,
                      init_cfg=dict(type='FastMIMPretrained',
                                    checkpoint=str(tmp_path / 'epoch_800.pth'))),
        head=dict(type='LinearClsHead', num_classes=5, pre_norm='ln')))
    classifier.init_weights()
    backbone = classifier.backbone
    torch.testing.assert_close(
        backbone.pos_embed.detach(),
        resample_abs_pos_embed(pretrained.pos_embed.detach(), new_size=(14, 14), old_size=(8, 8),
                               antialias=False))
    for name, value in pretrained.state_dict().items():
        if name not in ('pos_embed', 'norm.weight', 'norm.bias'):
            torch.testing.assert_close(backbone.state_dict()[name], value, msg=name)
    assert classifier(torch.randn(2, 3, 224, 224)).shape == (2, 5)


# --------------------------------------------------------------------------------------------
# Layer-wise lr decay
# --------------------------------------------------------------------------------------------
class Classifier(nn.Module):
    """What the layer-decay constructor sees in fine-tuning: a backbone and a head."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_channels[-1], 5)


# EVA-02 with 3 blocks, written out by hand (MAE / BEiT's ViT ids): first match wins.
LAYER_TABLE = [
    (r'backbone\.(cls_token|pos_embed|patch_embed\.)', 0),
    (r'backbone\.blocks\.0\.', 1),
    (r'backbone\.blocks\.1\.', 2),
    (r'backbone\.blocks\.2\.', 3),
    (r'backbone\.norm\.', 4),
    (r'head\.', 4),
]


def test_layer_decay_follows_the_vit_table(groups_by_name):
    """MAE / BEiT ids (final norm and head share ``depth + 1``). timm's ``Eva.group_matcher``
    is no reference here: it puts the final norm with the last block."""
    from fastmim.engine.optim_constructors import LayerDecayOptimWrapperConstructor
    model = Classifier(tiny(img_size=224, arch=dict(TINY, qkv_fused=False, scale_mlp=True)))
    constructor = LayerDecayOptimWrapperConstructor(
        dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05)),
        dict(layer_decay_rate=0.7))
    by_name = groups_by_name(model, constructor(model).optimizer.param_groups)
    assert set(by_name) == {name for name, _ in model.named_parameters()}
    for name, group in by_name.items():
        layer_id = next(i for pattern, i in LAYER_TABLE if re.match(pattern, name))
        assert group['lr_scale'] == pytest.approx(0.7**(4 - layer_id)), name
        assert group['lr'] == pytest.approx(1e-3 * 0.7**(4 - layer_id)), name
    assert model.backbone.num_layer_ids == 5


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('eva02, vit', [
    ('configs/fastmim/eva02_b_hog_800e.py', 'configs/fastmim/vit_b_hog_800e.py'),
    ('configs/finetune/eva02_b_ft_100e.py', 'configs/finetune/vit_b_ft_100e.py'),
])
def test_configs_are_the_vit_b_recipes_with_another_backbone(eva02, vit):
    """Same width, depth and token grid as ViT-B/16, so the ViT-B recipes apply unchanged:
    everything but the backbone is equal; the backbone is EVA-02-B at the same sizes."""
    root = Path(__file__).resolve().parents[3]
    ours, reference = (Config.fromfile(str(root / path)).to_dict() for path in (eva02, vit))
    backbone, vit_backbone = ours['model'].pop('backbone'), reference['model'].pop('backbone')
    assert ours == reference
    assert backbone['type'] == 'EVA02' and backbone['arch'] == 'b'
    for key in ('img_size', 'patch_size'):
        assert backbone[key] == vit_backbone[key]
    with torch.device('meta'):
        model = EVA02(**{key: value for key, value in backbone.items()
                         if key not in ('type', 'init_cfg')})
    assert model.patch_embed.grid_size == (backbone['img_size'] // 16, ) * 2
    assert model.rope_ref_grid == (8, 8)  # the 128-px pre-training grid, also at 224
