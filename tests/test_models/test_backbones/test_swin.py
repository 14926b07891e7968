"""SwinTransformer: NCHW features equal timm's NHWC ones, windows at 128 px, other input sizes;
and the mmdet / mmseg registration every backbone shares (Swin is their main downstream use)."""
import re
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import Registry
from timm.models.swin_transformer import SwinTransformer as TimmSwinTransformer
from timm.models.swin_transformer import SwinTransformerBlock as TimmSwinTransformerBlock

from fastmim.models.backbones import SwinTransformer, register_downstream
from fastmim.models.backbones.swin import is_original_layout, original_to_timm_names
from fastmim.registry import MODELS

TINY = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))


def tiny_swin(**kwargs):
    torch.manual_seed(0)
    return SwinTransformer(arch=TINY, img_size=128, window_size=4, **kwargs).eval()


def plain_timm_swin(img_size):
    """timm's Swin of the tiny arch without head, built at ``img_size``: the reference."""
    return TimmSwinTransformer(
        img_size=img_size, window_size=4, num_classes=0, global_pool='', **TINY).eval()


def timm_stage_maps(model, images):
    """timm's per-stage NHWC outputs, stage 3 through the final norm."""
    x = model.patch_embed(images)
    outputs = []
    for stage in model.layers:
        x = stage(x)
        outputs.append(x)
    outputs[-1] = model.norm(outputs[-1])
    return outputs


@pytest.mark.parametrize('size', [(128, 128), (256, 128)])
def test_nchw_features_equal_timm_nhwc_features_permuted(size):
    """At 128 and at another size whose grids are whole windows, every stage equals timm's Swin
    built at that size (same weights); intermediate stages go through their own fresh LayerNorm.
    (Where a grid needs padding, the windows follow the original Swin instead: below.)"""
    model = tiny_swin(out_indices=(0, 1, 2, 3))
    reference = plain_timm_swin(size)
    missing, unexpected = reference.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(key.startswith('out_norms.') for key in unexpected)
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        outputs = model(images)
        expected = timm_stage_maps(reference, images)
    for index, (output, nhwc) in enumerate(zip(outputs, expected)):
        if index < 3:
            nhwc = F.layer_norm(nhwc, nhwc.shape[-1:])
        stride = 2**(index + 2)
        assert output.shape == (2, 16 * 2**index, size[0] // stride, size[1] // stride)
        torch.testing.assert_close(output, nhwc.permute(0, 3, 1, 2), rtol=1e-4, atol=1e-4)
    assert model.out_channels == [16, 32, 64, 128] and model.out_strides == [4, 8, 16, 32]


def test_the_output_norms_are_what_a_classifier_swin_lacks_and_declared_optional():
    """A timm (classifier) Swin's weights have no ``out_norms``: those are what the backbone
    declares a checkpoint may lack (``checkpoint_optional_names``); with the last stage only,
    nothing."""
    dense = tiny_swin(out_indices=(0, 1, 2, 3))
    classifier_keys = set(plain_timm_swin((128, 128)).state_dict())
    assert dense.checkpoint_optional_names() == set(dense.state_dict()) - classifier_keys
    assert len(dense.checkpoint_optional_names()) == 6
    assert tiny_swin(out_indices=(3, )).checkpoint_optional_names() == set()


def test_windows_and_shifts_at_128():
    """128 px, window 4: stages of 32, 16, 8, 4 tokens; the last stage's window covers it, so
    its shifted blocks do not shift."""
    model = tiny_swin()
    assert [stage.blocks[1].window_size for stage in model.layers] == [(4, 4)] * 4
    assert [stage.blocks[1].shift_size for stage in model.layers] == [(2, 2)] * 3 + [(0, 0)]
    model(torch.randn(1, 3, 160, 160))
    assert model.layers[3].blocks[1].shift_size == (2, 2), '5x5 tokens exceed the window'


def test_size_change_round_trip_restores_the_model():
    model = tiny_swin()
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        before = model(images)[0]
        model(torch.randn(2, 3, 192, 160))
        after = model(images)[0]
    torch.testing.assert_close(before, after, rtol=0, atol=0)


@pytest.mark.parametrize('size, message', [((96, 128), 'window'), ((144, 128), 'total stride 32')])
def test_sizes_that_would_change_parameters_are_refused(size, message):
    with pytest.raises(ValueError, match=message):
        tiny_swin()(torch.randn(1, 3, *size))


def test_fused_attention_matches_unfused():
    model = tiny_swin()
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        fused = model(images)[0]
        for stage in model.layers:
            for block in stage.blocks:
                assert block.attn.fused_attn
                block.attn.fused_attn = False
        unfused = model(images)[0]
    torch.testing.assert_close(fused, unfused, rtol=1e-4, atol=1e-5)


def test_gradient_reaches_every_parameter(gradient_reaches_every_parameter):
    gradient_reaches_every_parameter(tiny_swin(out_indices=(1, 3)), torch.randn(2, 3, 128, 128))


def test_drop_path_is_applied_in_training_only(drop_path_is_applied_in_training_only):
    model = tiny_swin(drop_path_rate=0.3)
    assert model.layers[3].blocks[1].drop_path1.drop_prob == pytest.approx(0.3)
    drop_path_is_applied_in_training_only(model, torch.randn(2, 3, 128, 128))


def test_swin_base_construction():
    model = SwinTransformer(arch='b', img_size=128, window_size=4, weight_init='skip')
    assert [len(stage.blocks) for stage in model.layers] == [2, 2, 18, 2]
    assert [stage.blocks[0].attn.num_heads for stage in model.layers] == [4, 8, 16, 32]
    assert model.out_channels == [1024] and model.out_strides == [32]
    assert model.geometry() == dict(
        type='SwinTransformer', arch='b', img_size=128, patch_size=4, window_size=4,
        stage_window_sizes=[[4, 4]] * 4, embed_dim=128, depths=[2, 2, 18, 2],
        num_heads=[4, 8, 16, 32])


def test_mmengine_init_weights_keeps_weights_and_loads_init_cfg(tmp_path,
                                                               init_weights_keeps_weights):
    source = tiny_swin()
    checkpoint = tmp_path / 'swin.pth'
    torch.save(source.state_dict(), checkpoint)
    model = tiny_swin(init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))
    torch.manual_seed(3)
    model.layers[0].blocks[0].norm1.weight.data.normal_()
    model.init_weights()
    assert all(torch.equal(source.state_dict()[k], v) for k, v in model.state_dict().items())

    init_weights_keeps_weights(tiny_swin())


@pytest.mark.parametrize('kwargs, message', [
    (dict(arch='huge'), 'unknown arch'),
    (dict(arch=dict(embed_dim=16, depths=(2, 2))), 'lacks keys'),
    (dict(arch=TINY, out_indices=(4, )), 'out of range'),
    (dict(arch=TINY, strict_img_size=False), 'fixed by this backbone'),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SwinTransformer(img_size=128, **kwargs)


def test_timm_built_off_the_patch_size_ignores_the_last_pixels():
    """Why a construction size off the total stride is refused (below): timm's patch
    convolution takes whole patches only, so a Swin built at 225 px never sees the last pixel
    row and column of its inputs."""
    images = torch.randn(1, 3, 225, 225)
    edited = images.clone()
    edited[..., -1, :] = edited[..., :, -1] = 5.
    reference = plain_timm_swin(225)
    with torch.no_grad():
        assert torch.equal(reference(images), reference(edited))


@pytest.mark.parametrize('img_size, patch_size, message', [
    (225, 4, r'img_size 225 is no multiple of 32 \(its total stride: '
             r'model\.backbone\.patch_size 4 x 2\^3.*: use 224 or 256'),
    (136, 4, r'img_size 136 is no multiple of 32 .*: use 128 or 160'),
    ((128, 130), 4, r'img_size \(128, 130\) is no multiple of 32 .*: use \(128, 128\) or '
                    r'\(128, 160\)'),
    (3, 4, r'img_size 3 is no multiple of 32 .*: use 32'),
    (72, 2, r'img_size 72 is no multiple of 16 \(its total stride: '
            r'model\.backbone\.patch_size 2 x 2\^3.*: use 64 or 80'),
])
def test_a_construction_size_off_the_total_stride_is_refused(img_size, patch_size, message):
    """Built at such a size the model dropped the pixels past the last whole patch without a
    word (above), and its forward skipped the size check at the size it was built for, while
    every other size off the total stride is refused there, and a config's crops at load."""
    with pytest.raises(ValueError, match=rf'^SwinTransformer: model\.backbone\.{message}$'):
        SwinTransformer(arch=TINY, img_size=img_size, patch_size=patch_size, window_size=4)


@pytest.mark.parametrize('img_size, patch_size', [(160, 4), ((128, 96), 4), (80, 2)])
def test_construction_sizes_that_are_multiples_of_the_total_stride_are_built(img_size,
                                                                             patch_size):
    model = SwinTransformer(arch=TINY, img_size=img_size, patch_size=patch_size, window_size=4)
    side = (img_size, img_size) if isinstance(img_size, int) else img_size
    assert model.img_size == side
    model(torch.randn(1, 3, *side))


@pytest.mark.parametrize('library', ['mmdet', 'mmseg'])
def test_built_by_downstream_config_through_the_fastmim_scope(library):
    """mmdet / mmseg configs name ``fastmim.SwinTransformer``; plain ``SwinTransformer`` keeps
    meaning the library's own class, before and after ``register_downstream``."""
    pytest.importorskip(f'{library}.models')
    library_models = pytest.importorskip(f'{library}.registry').MODELS
    from mmengine.registry import DefaultScope

    registered = register_downstream(libraries=(library, ))
    assert 'SwinTransformer' not in registered[library]
    with DefaultScope.overwrite_default_scope(library):
        model = library_models.build(
            dict(type='fastmim.SwinTransformer', arch=TINY, out_indices=(1, 2, 3)))
        assert type(model) is SwinTransformer
        assert library_models.get('SwinTransformer').__module__.startswith(library)
        assert library_models.get('TimmBackbone') is MODELS.get('TimmBackbone')
    outputs = model(torch.randn(1, 3, 128, 128))
    assert [o.shape[1] for o in outputs] == [32, 64, 128]


def test_registry_name():
    assert MODELS.get('SwinTransformer') is SwinTransformer


def test_register_downstream_adds_free_plain_names_only(monkeypatch):
    """A library's own classes keep their names; fastmim's fill the free ones, once."""
    library_models = Registry('model', scope='fakelib')

    @library_models.register_module(name='SwinTransformer')
    class LibrarySwin(torch.nn.Module):
        pass

    for name, attributes in [('fakelib', {}), ('fakelib.models', {}),
                             ('fakelib.registry', dict(MODELS=library_models))]:
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)

    registered = register_downstream(libraries=('fakelib', 'not_installed_lib'))
    assert set(registered) == {'fakelib'}
    assert {'VisionTransformer', 'PyramidVisionTransformerV2', 'TimmBackbone'} <= set(
        registered['fakelib'])
    assert 'SwinTransformer' not in registered['fakelib']
    assert library_models.get('SwinTransformer') is LibrarySwin
    assert library_models.get('TimmBackbone') is MODELS.get('TimmBackbone')
    assert register_downstream(libraries=('fakelib', )) == {'fakelib': []}
    assert register_downstream(libraries=('not_installed_lib', ), import_models=True) == {}


@pytest.mark.parametrize('window_size, problem', [
    ((4, 4, 4), r'Expected 4 stage window sizes, got \(4, 4, 4\)'),
    (0, 'Window sizes must be positive'),
])
def test_window_size_timm_cannot_expand_is_named(window_size, problem):
    """timm asserted both (a bare AssertionError with a traceback)."""
    with pytest.raises(ValueError, match=rf'SwinTransformer: window_size '
                       rf'{re.escape(repr(window_size))}: {problem}'):
        SwinTransformer(arch=dict(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)),
                        window_size=window_size)


def test_stage_width_that_does_not_split_over_its_heads_is_named():
    """Swin-T's heads with embed_dim 64: timm floored 64 / 3 to 21 channels per head and
    silently gave stage 0 an attention 63 wide. head_dim, timm's own choice, is left alone."""
    arch = dict(embed_dim=64, depths=(1, 1, 1, 1), num_heads=(3, 6, 12, 24))
    with pytest.raises(ValueError, match=r'SwinTransformer: stage 0 is 64 wide \(arch embed_dim '
                       r'64 x 2\^0\), not divisible by its 3 heads \(arch num_heads\[0\]\)'):
        SwinTransformer(arch=arch)
    model = SwinTransformer(arch=arch, head_dim=16)
    assert model.layers[0].blocks[0].attn.qkv.out_features == 3 * 3 * 16


def original_swin_attention(block, tokens):
    """mmdet's shifted-window attention (the original Swin's order, which the reference
    release's detection backbone keeps) with ``block``'s weights, on NHWC ``tokens``."""
    from mmdet.models.backbones.swin import ShiftWindowMSA
    channels = tokens.shape[-1]
    reference = ShiftWindowMSA(channels, block.attn.num_heads, block.window_size[0],
                               shift_size=block.shift_size[0]).eval()
    weights = {name: block.attn.state_dict()[name]
               for name in ('qkv.weight', 'qkv.bias', 'proj.weight', 'proj.bias',
                            'relative_position_bias_table')}
    reference.w_msa.load_state_dict(weights, strict=False)
    height, width = tokens.shape[1:3]
    flat = reference(tokens.reshape(len(tokens), -1, channels), (height, width))
    return flat.view(tokens.shape)


@pytest.mark.parametrize('size', [(320, 320), (288, 352)])
def test_windows_of_a_grid_off_the_window_pad_before_the_shift_as_the_original_swin(size):
    """Detection feeds Swin 1024 px with window 7: no stage's grid (256, 128, 64, 32) is a
    multiple of 7. The original Swin (and mmdet, the release's detection backbone) pads the map,
    then shifts it, so a window never joins the two ends of the image; timm shifts first and
    pads after, so the rows it wraps around attend to the other end. Every block's attention
    equals mmdet's at grids that need padding; timm's own order does not."""
    torch.manual_seed(0)
    model = SwinTransformer(arch=TINY, img_size=224, window_size=7).eval()
    with torch.no_grad():
        model(torch.randn(1, 3, *size))  # windows, shifts and masks for this size
        for index, stage in enumerate(model.layers[:2]):
            grid = (size[0] // 2**(index + 2), size[1] // 2**(index + 2))
            tokens = torch.randn(2, *grid, stage.blocks[0].dim)
            assert grid[0] % 7 or grid[1] % 7, 'the grid needs padding'
            for block in stage.blocks:
                expected = original_swin_attention(block, tokens)
                torch.testing.assert_close(block._attn(tokens), expected, rtol=1e-4, atol=1e-5)
            shifted = stage.blocks[1]
            timm_order = TimmSwinTransformerBlock._attn(shifted, tokens)
            assert not torch.allclose(timm_order, original_swin_attention(shifted, tokens),
                                      rtol=1e-4, atol=1e-5)


def timm_to_original_names(state):
    """fastmim's (timm's) layout -> Microsoft's original Swin layout, the inverse of
    ``original_to_timm_names``: the patch merging that opens stage ``s`` in timm
    (``layers.s.downsample``) closes stage ``s - 1`` there."""
    return {re.sub(r'^layers\.(\d+)\.downsample\.',
                   lambda match: f'layers.{int(match[1]) - 1}.downsample.', key): value
            for key, value in state.items()}


def mmdet_swin_with_weights_of(model):
    """mmdet's own SwinTransformer (the reference release's detection backbone) with ``model``'s
    weights, carried as a user's checkpoint would be: fastmim -> Microsoft's layout -> mmdet's
    ``swin_converter`` (which also reorders the patch mergings' channels for its ``nn.Unfold``).
    Our output norms become mmdet's ``norm0..norm3`` (stage 3's is timm's final ``norm``)."""
    from mmdet.models.backbones import SwinTransformer as MMDetSwinTransformer
    from mmdet.models.backbones.swin import swin_converter

    state = model.state_dict()
    original = timm_to_original_names(state)
    assert is_original_layout(original)
    assert original_to_timm_names(original).keys() == state.keys()
    converted = {}
    for key, value in swin_converter(original).items():
        assert key.startswith('backbone.'), key
        converted[key[len('backbone.'):]] = value
    for part in ('weight', 'bias'):  # the converter passes the norms through unchanged
        for stage in range(3):
            converted[f'norm{stage}.{part}'] = converted.pop(f'out_norms.{stage}.{part}')
        converted[f'norm3.{part}'] = converted.pop(f'norm.{part}')

    settings = model.arch_cfg
    reference = MMDetSwinTransformer(
        embed_dims=settings['embed_dim'], depths=settings['depths'],
        num_heads=settings['num_heads'], window_size=model.stage_windows[0][0], mlp_ratio=4,
        qkv_bias=True, drop_path_rate=0., out_indices=(0, 1, 2, 3))
    reference.eval()  # mmdet's Swin.train returns None: no chaining
    missing, unexpected = reference.load_state_dict(converted, strict=False)
    computed = {name for name, _ in reference.named_buffers()
                if name.endswith('.relative_position_index')}
    assert not unexpected and set(missing) == computed, (unexpected, set(missing) - computed)
    return reference


def randomise(model):
    """Weights whose every part matters: attention that is far from uniform, norms that are
    not the identity (the patch mergings' channel order shows), biases and tables non-zero."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2 and 'relative_position_bias_table' not in name:
                parameter.normal_(0, parameter.shape[1]**-0.5)
            elif 'norm' in name and name.endswith('weight'):
                parameter.normal_(1, 0.5)
            else:
                parameter.normal_(0, 0.5)
    return model


@pytest.mark.parametrize('size', [(320, 320), (288, 352)])
def test_every_stage_equals_mmdet_swin_at_grids_off_the_window(size):
    """The whole backbone against mmdet 3.3's own Swin (an independent implementation, the one
    the reference release's detection used), same weights carried through Microsoft's layout
    and mmdet's converter, window 7 at sizes whose stage grids (80, 40, 20, 10 / 72x88 ...
    9x11) are no multiple of it, as every stage of a 1024 px detection input. All four NCHW
    maps agree to ~4e-6; with timm's shift-then-pad order (``SwinTransformerBlock._attn``)
    every stage differs by 0.8 to 2.6 (the maps reach 4 to 7)."""
    pytest.importorskip('mmdet.models')
    torch.manual_seed(0)
    model = randomise(SwinTransformer(arch=TINY, img_size=224, window_size=7,
                                      out_indices=(0, 1, 2, 3)).eval())
    reference = mmdet_swin_with_weights_of(model)
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        outputs = model(images)
        expected = reference(images)
    assert len(outputs) == len(expected) == 4
    for index, (output, target) in enumerate(zip(outputs, expected)):
        stride = 2**(index + 2)
        grid = (size[0] // stride, size[1] // stride)
        assert grid[0] % 7 or grid[1] % 7, 'the grid needs padding'
        assert output.shape == target.shape == (2, 16 * 2**index, *grid)
        torch.testing.assert_close(output, target, rtol=1e-4, atol=1e-4,
                                   msg=lambda text: f'stage {index} at {size}: {text}')


@pytest.mark.parametrize('size', [(224, 224), (1024, 160)])
def test_always_partition_is_mmdet_swin_where_a_stage_is_no_larger_than_its_window(size):
    """Detection tests at 1666 x 1024 keeping the aspect ratio, so a wide image can leave the
    last stage a grid of the window's size (224 px: 7 tokens) or smaller (160 px: 5).
    Microsoft's classification Swin and timm make such a stage one window without shift, and a
    smaller grid shrinks the window (refused here: it would resize the tables); mmdet's Swin,
    the release's detection backbone, pads every stage to whole windows and shifts as elsewhere.
    ``always_partition=True``, the detection config's, does what mmdet does."""
    torch.manual_seed(0)
    model = randomise(SwinTransformer(arch=TINY, img_size=224, window_size=7,
                                      out_indices=(0, 1, 2, 3), always_partition=True).eval())
    reference = mmdet_swin_with_weights_of(model)
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        outputs = model(images)
        expected = reference(images)
    assert min(size) // 32 <= 7
    for index, (output, target) in enumerate(zip(outputs, expected)):
        torch.testing.assert_close(output, target, rtol=1e-4, atol=1e-4,
                                   msg=lambda text: f'stage {index} at {size}: {text}')
    classification_order = randomise(SwinTransformer(arch=TINY, img_size=224, window_size=7,
                                                     out_indices=(0, 1, 2, 3)).eval())
    classification_order.load_state_dict(model.state_dict())
    with torch.no_grad():
        if min(size) // 32 < 7:
            with pytest.raises(ValueError, match='window'):
                classification_order(images)
        else:  # the last stage unshifted
            assert not torch.allclose(classification_order(images)[3], expected[3],
                                      rtol=1e-4, atol=1e-4)
