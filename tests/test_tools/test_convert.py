"""tools/convert: fastmim -> timm, and reference-release (ggjy/FastMIM.pytorch) -> fastmim.

Reference checkpoints cannot be downloaded here, so they are built from models with the key
names of the release (MAE's ViT, the original Microsoft Swin and PVTv2 layouts, the release's
CMT), written out in this file.
"""
import argparse
import os
import re
import sys
from functools import partial
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

import fastmim  # noqa: F401  registers modules, safe checkpoint I/O
import fastmim.models  # noqa: F401
from fastmim.apis import get_model
from fastmim.errors import CheckpointError
from fastmim.models.utils import load_pretrained
from fastmim.registry import MODELS

pytestmark = pytest.mark.usefixtures('one_thread')

TOOLS = Path(__file__).resolve().parents[2] / 'tools' / 'convert'


@pytest.fixture(scope='module')
def to_timm(load_script):
    return load_script(TOOLS / 'to_timm.py')


@pytest.fixture(scope='module')
def from_reference(load_script):
    return load_script(TOOLS / 'from_reference.py')


def build(cfg):
    torch.manual_seed(0)
    return MODELS.build(cfg).eval()


def tiny_vit_checkpoint(path):
    """A pre-training checkpoint of a 2-block, 32-wide ViT at 128 px."""
    return fastmim_checkpoint(build(dict(type='VisionTransformer', img_size=128,
                                         arch=dict(embed_dim=32, depth=2, num_heads=2))), path)


def fastmim_checkpoint(backbone, path, extra=None):
    state = {'backbone.' + key: value for key, value in backbone.state_dict().items()}
    state.update({'neck.decoder_embed.weight': torch.randn(8, 4),
                  'mask_token': torch.zeros(1, 3, 1, 1), **(extra or {})})
    torch.save({'state_dict': state, 'meta': {'geometry': {'backbone': backbone.geometry()}}},
               path)
    return str(path)


# --- fastmim -> timm ----------------------------------------------------------------------------
def test_vit_tiny_pretrained_at_128_converts_to_timm_vit_tiny_at_224(tmp_path, capsys, to_timm):
    source = build(dict(type='VisionTransformer', arch=dict(embed_dim=192, depth=12, num_heads=3),
                        img_size=128))
    checkpoint = fastmim_checkpoint(source, tmp_path / 'pre.pth')
    out = tmp_path / 'vit_timm.pth'

    to_timm.main([checkpoint, str(out), '--arch', 'vit_tiny_patch16_224'])

    assert 'resized pos_embed: (1, 65, 192) -> (1, 197, 192)' in capsys.readouterr().out
    state = torch.load(out, weights_only=True)
    model = timm.create_model('vit_tiny_patch16_224', pretrained=False).eval()
    result = model.load_state_dict(state, strict=False)
    assert sorted(result.missing_keys) == ['head.bias', 'head.weight']
    assert result.unexpected_keys == []
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        tokens = model.forward_features(images)[:, 1:]
        # fastmim's ViT run at 224 resizes its 8x8 embedding the same way, on the fly.
        expected = source(images)[0].flatten(2).transpose(1, 2)
    torch.testing.assert_close(tokens, expected, rtol=0, atol=1e-5)


def test_fine_tuned_swin_tiny_converts_to_timm_with_identical_logits(tmp_path, capsys, to_timm):
    backbone = build(dict(type='SwinTransformer', arch='t', img_size=224, window_size=7))
    head_weight, head_bias = torch.randn(10, 768) * 0.02, torch.randn(10)
    checkpoint = fastmim_checkpoint(backbone, tmp_path / 'ft.pth', extra={
        'head.fc.weight': head_weight, 'head.fc.bias': head_bias})
    out = tmp_path / 'swin_timm.pth'

    to_timm.main([checkpoint, str(out), '--safetensors'])

    printed = capsys.readouterr().out
    assert 'left out 2 tensors timm has no place for: mask_token, neck' in printed
    from safetensors.torch import load_file
    state = torch.load(out, weights_only=True)
    safetensors_state = load_file(str(tmp_path / 'swin_timm.safetensors'))
    assert state.keys() == safetensors_state.keys()
    assert all(torch.equal(state[key], safetensors_state[key]) for key in state)
    # readable as the .pth is (the umask's mode), not mkstemp's 0600
    modes = {path.suffix: path.stat().st_mode & 0o777 for path in tmp_path.glob('swin_timm.*')}
    umask = os.umask(0o022)
    os.umask(umask)
    assert modes['.safetensors'] == modes['.pth'] == 0o666 & ~umask
    model = timm.create_model('swin_tiny_patch4_window7_224', pretrained=False,
                              num_classes=10).eval()
    model.load_state_dict(state, strict=True)
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        features = backbone(images)[0]
        expected = F.linear(features.mean(dim=(2, 3)), head_weight, head_bias)
        torch.testing.assert_close(model.forward_features(images).permute(0, 3, 1, 2), features,
                                   rtol=0, atol=1e-5)
        torch.testing.assert_close(model(images), expected, rtol=0, atol=1e-5)


def test_pvtv2_checkpoint_converts_to_the_timm_arch_it_names(tmp_path, to_timm):
    """--arch pvt_v2_b0 fits the weights to timm's own PVTv2, which has none of fastmim's
    methods: the rename rule runs through the fastmim class, not on timm's model (else
    "'PyramidVisionTransformerV2' object has no attribute 'rename_foreign_keys'")."""
    backbone = build(dict(type='PyramidVisionTransformerV2', arch='b0'))
    checkpoint = fastmim_checkpoint(backbone, tmp_path / 'pvt.pth')
    out = tmp_path / 'pvt_timm.pth'

    to_timm.main([checkpoint, str(out), '--arch', 'pvt_v2_b0'])

    model = timm.create_model('pvt_v2_b0', pretrained=False, num_classes=0).eval()
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(images), backbone(images)[0],
                                   rtol=0, atol=1e-5)


def pooled_norm_classifier(classes=10, width=32):
    """LinearClsHead(pre_norm='ln')'s weights: a norm of the pooled features, then ``fc``."""
    return {'head.fc_norm.weight': torch.rand(width), 'head.fc_norm.bias': torch.rand(width),
            'head.fc.weight': torch.randn(classes, width), 'head.fc.bias': torch.randn(classes)}


def test_a_vit_classifier_s_pooled_norm_becomes_timm_s_fc_norm(tmp_path, to_timm):
    backbone = build(dict(type='VisionTransformer', arch=dict(embed_dim=32, depth=2, num_heads=2),
                          img_size=64, final_norm=False))
    extra = pooled_norm_classifier()
    checkpoint = fastmim_checkpoint(backbone, tmp_path / 'ft.pth', extra=extra)
    out = tmp_path / 'vit_timm.pth'

    to_timm.main([checkpoint, str(out)])

    state = torch.load(out, weights_only=True)
    assert torch.equal(state['fc_norm.weight'], extra['head.fc_norm.weight'])
    model = timm.models.VisionTransformer(img_size=64, embed_dim=32, depth=2, num_heads=2,
                                          global_pool='avg', num_classes=10)
    model.load_state_dict(state, strict=True)


@pytest.mark.parametrize('arch', [[], ['--arch', 'pvt_v2_b0']])
def test_to_timm_refuses_a_pooled_norm_timm_s_model_has_no_place_for(tmp_path, to_timm, arch):
    """A PVTv2 classifier with LinearClsHead(pre_norm='ln') has a norm after pooling that
    timm's PVTv2 has no place for: written as ViT's fc_norm.* with global_pool='avg' (which
    timm's PVTv2 does not take), or called 'unexpected keys' by --arch, it would not say why,
    so the conversion is refused with the reason."""
    backbone = build(dict(type='PyramidVisionTransformerV2', arch='b0'))
    checkpoint = fastmim_checkpoint(backbone, tmp_path / 'ft.pth',
                                    extra=pooled_norm_classifier(width=256))
    out = tmp_path / 'pvt_timm.pth'
    with pytest.raises(CheckpointError, match=r'ft\.pth: its classifier normalises the pooled '
                       r'features \(head\.fc_norm\.bias, head\.fc_norm\.weight\), and timm\'s '
                       r'model of PyramidVisionTransformerV2 has no norm after pooling'):
        to_timm.main([checkpoint, str(out), *arch])
    assert not out.exists()


@pytest.mark.parametrize('arch, file_sizes, arch_sizes', [
    (dict(embed_dim=32, depth=12, num_heads=2), 'embed_dim 32, num_heads 2',
     'embed_dim 192, num_heads 3'),  # vit_tiny's depth, another width
    (dict(embed_dim=192, depth=2, num_heads=3), 'depth 2', 'depth 12'),
    (dict(embed_dim=32, depth=2, num_heads=2), 'embed_dim 32, depth 2, num_heads 2',
     'embed_dim 192, depth 12, num_heads 3'),
])
def test_to_timm_names_the_sizes_that_do_not_fit_the_timm_model(tmp_path, to_timm, arch,
                                                               file_sizes, arch_sizes):
    """Another width, depth or heads is named in one line with the sizes of both, as
    fine-tuning's loader names them, where a list of every tensor's two shapes never says the
    sizes (vit_tiny_patch16_224 is 192 wide, 12 blocks of 3 heads)."""
    checkpoint = fastmim_checkpoint(build(dict(type='VisionTransformer', img_size=128,
                                               arch=arch)), tmp_path / 'small.pth')
    with pytest.raises(CheckpointError) as error:
        to_timm.main([checkpoint, str(tmp_path / 'out.pth'), '--arch', 'vit_tiny_patch16_224'])
    assert str(error.value) == (
        f"{checkpoint} does not fit --arch vit_tiny_patch16_224: the file's VisionTransformer "
        f"has {file_sizes}, --arch vit_tiny_patch16_224's {arch_sizes}: give --arch a timm "
        "model of the file's size, or leave --arch out to convert the tensors unchecked")
    assert not (tmp_path / 'out.pth').exists()


def timm_model_args(arch, monkeypatch):
    """The arguments timm's factory of ``arch`` builds its model with (the ``model_args`` of
    its source, published sizes included), caught where the factory hands them on."""
    captured = {}

    class Caught(Exception):
        pass

    def catch(model_class, variant, pretrained, **kwargs):
        captured.update(kwargs)
        raise Caught

    factory = timm.models.model_entrypoint(arch)
    with monkeypatch.context() as patch, pytest.raises(Caught):
        patch.setattr(sys.modules[factory.__module__], 'build_model_with_cfg', catch)
        factory(pretrained=False)
    return captured


def swin(**arch):
    return dict(type='SwinTransformer', img_size=64, window_size=2, arch=arch)


def pvtv2(**arch):
    return dict(type='PyramidVisionTransformerV2', arch=arch)


@pytest.mark.parametrize('backbone, arch, differ', [
    (swin(embed_dim=32, depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8)),
     'swin_tiny_patch4_window7_224', ('embed_dim', 'num_heads')),  # Swin-T's depths, narrower
    (swin(embed_dim=96, depths=(1, 1, 1, 1), num_heads=(3, 6, 12, 24)),
     'swin_tiny_patch4_window7_224', ('depths', )),
    (pvtv2(embed_dims=(16, 32, 80, 128), depths=(2, 2, 2, 2), num_heads=(1, 2, 5, 8)),
     'pvt_v2_b0', ('embed_dims', )),  # PVTv2-b0's depths and heads, narrower
    (pvtv2(embed_dims=(32, 64, 160, 256), depths=(1, 2, 2, 2), num_heads=(1, 2, 5, 8)),
     'pvt_v2_b0', ('depths', )),
])
def test_to_timm_names_the_sizes_of_a_staged_backbone_that_do_not_fit(
        tmp_path, monkeypatch, to_timm, backbone, arch, differ):
    """A Swin or PVTv2 file of another width, depth or heads than --arch's model is named in
    the words of a ViT's (the test above): one line with the sizes of both, which a list of
    every tensor's two shapes leaves the user to work out. The file's sizes are those it is
    built with, --arch's those timm's factory builds its model with."""
    published = timm_model_args(arch, monkeypatch)
    checkpoint = fastmim_checkpoint(build(backbone), tmp_path / 'other_size.pth')
    with pytest.raises(CheckpointError) as error:
        to_timm.main([checkpoint, str(tmp_path / 'out.pth'), '--arch', arch])

    def words(sizes):  # as a geometry records them: tuples as lists
        values = {key: list(value) if isinstance(value, tuple) else value
                  for key, value in sizes.items()}
        return ', '.join(f'{key} {values[key]}' for key in differ)
    assert str(error.value) == (
        f"{checkpoint} does not fit --arch {arch}: the file's {backbone['type']} has "
        f"{words(backbone['arch'])}, --arch {arch}'s {words(published)}: give --arch a timm "
        "model of the file's size, or leave --arch out to convert the tensors unchecked")
    assert not (tmp_path / 'out.pth').exists()


def test_to_timm_refuses_an_arch_timm_does_not_know_before_reading(tmp_path, to_timm):
    with pytest.raises(ValueError, match=r"--arch 'vit_tiny_foo' is not a timm model"):
        to_timm.main([str(tmp_path / 'absent.pth'), str(tmp_path / 'out.pth'),
                      '--arch', 'vit_tiny_foo'])


@pytest.mark.parametrize('tool, flag, name, close', [
    ('to_timm.py', '--arch', 'vit_tiny_patch16_244', 'vit_tiny_patch16_224'),
    ('from_timm.py', '--model-name', 'resnet5O', 'resnet50')])
def test_the_converters_name_the_close_timm_models(tmp_path, load_script, tool, flag, name,
                                                   close):
    """As TimmBackbone does for its model_name: a misspelt name is answered with the names
    timm knows that are close to it."""
    with pytest.raises(ValueError, match=rf"{flag} '{name}' is not a timm model; did you mean "
                       rf"'{close}'"):
        load_script(TOOLS / tool).main([str(tmp_path / 'absent.pth'),
                                        str(tmp_path / 'out.pth'), flag, name])


def test_from_timm_refuses_a_model_name_timm_does_not_know_before_reading(tmp_path,
                                                                          load_script):
    """A wrong name is refused before the weights (hundreds of MB) are read, and named itself
    rather than a missing file."""
    with pytest.raises(ValueError, match=r"--model-name 'resnet_foo' is not a timm model"):
        load_script(TOOLS / 'from_timm.py').main([
            str(tmp_path / 'absent.pth'), str(tmp_path / 'out.pth'),
            '--model-name', 'resnet_foo'])


def test_to_timm_names_an_arch_of_another_family(tmp_path, to_timm):
    """A Swin --arch for a ViT checkpoint is named as such, not left to an AttributeError
    (no pos_embed) in the ViT's resize rule."""
    checkpoint = tiny_vit_checkpoint(tmp_path / 'vit.pth')
    with pytest.raises(CheckpointError, match=r'vit\.pth holds a VisionTransformer backbone, '
                       r'but --arch names a timm SwinTransformer; expected a timm '
                       r'VisionTransformer'):
        to_timm.main([checkpoint, str(tmp_path / 'out.pth'),
                      '--arch', 'swin_tiny_patch4_window7_224'])
    assert not (tmp_path / 'out.pth').exists()


def test_to_timm_writes_both_files_or_neither(tmp_path, to_timm):
    """A folder where the .safetensors copy goes is refused in one line, and the .pth is not
    written either (not a SafetensorError traceback after the .pth is written)."""
    checkpoint = tiny_vit_checkpoint(tmp_path / 'vit.pth')
    (tmp_path / 'out.safetensors').mkdir()
    with pytest.raises(CheckpointError, match=r'cannot write .*out\.safetensors: it is a '
                       r'folder; nothing was written'):
        to_timm.main([checkpoint, str(tmp_path / 'out.pth'), '--safetensors'])
    assert sorted(path.name for path in tmp_path.iterdir()) == ['out.safetensors', 'vit.pth']

    to_timm.main([checkpoint, str(tmp_path / 'new' / 'out.pth'), '--safetensors'])
    assert sorted(path.name for path in (tmp_path / 'new').iterdir()) == [
        'out.pth', 'out.safetensors']


@pytest.mark.parametrize('wrap', [
    lambda state: state,
    lambda state: {'model': state, 'epoch': 300},  # DeiT's and other releases' files
    lambda state: {'state_dict': {'backbone.' + key: value for key, value in state.items()},
                   'meta': {'epoch': 12}}],  # an mmengine checkpoint of another codebase
    ids=['plain', 'model', 'state_dict'])
def test_to_timm_says_a_file_naming_no_backbone_was_checked_against_nothing(tmp_path, capsys,
                                                                            to_timm, wrap):
    """A file that names no backbone, plain or wrapped (``{'model': ...}``,
    ``{'state_dict': ...}``), could be of any architecture: the tool says that nothing checked
    its tensors."""
    torch.save(wrap({'conv1.weight': torch.zeros(4, 3, 3, 3)}), tmp_path / 'resnet.pth')
    to_timm.main([str(tmp_path / 'resnet.pth'), str(tmp_path / 'out.pth')])
    assert "resnet.pth records no fastmim backbone (no meta['geometry']): its tensors were " \
        'copied under their own names and checked against no model' in capsys.readouterr().out
    assert torch.load(tmp_path / 'out.pth', weights_only=True).keys() == {'conv1.weight'}

def test_to_timm_checks_a_plain_state_dict_against_arch(tmp_path, capsys, to_timm):
    """The note above recommends --arch for a plain state dict, which names no backbone type:
    --arch checks it against timm's model (no lookup of an empty type in the registry, which
    mmengine answers with 'RuntimeError: Failed to get')."""
    torch.manual_seed(0)
    source = timm.create_model('vit_tiny_patch16_224', pretrained=False, num_classes=5)
    torch.save(source.state_dict(), tmp_path / 'vit.pth')
    to_timm.main([str(tmp_path / 'vit.pth'), str(tmp_path / 'out.pth'),
                  '--arch', 'vit_tiny_patch16_224'])
    assert 'checked against no model' not in capsys.readouterr().out
    state = torch.load(tmp_path / 'out.pth', weights_only=True)
    assert state.keys() == source.state_dict().keys()
    assert all(torch.equal(state[key], value) for key, value in source.state_dict().items())

    with pytest.raises(CheckpointError, match=r'vit\.pth does not fit timm ResNet'):
        to_timm.main([str(tmp_path / 'vit.pth'), str(tmp_path / 'other.pth'),
                      '--arch', 'resnet18'])
    assert not (tmp_path / 'other.pth').exists()


def test_timm_weights_round_trip_through_from_timm_and_to_timm(tmp_path, load_script, to_timm):
    """A TimmBackbone checkpoint (from_timm's output) converts to the names of the timm model
    it wraps (not fastmim's ``model.conv1.weight``, classifier ``head``, which no timm model
    loads), and --arch checks it against that model's family."""
    torch.manual_seed(0)
    source = timm.create_model('resnet18', pretrained=False, num_classes=10)
    torch.save(source.state_dict(), tmp_path / 'timm.pth')
    load_script(TOOLS / 'from_timm.py').main([str(tmp_path / 'timm.pth'),
                                              str(tmp_path / 'fastmim.pth'),
                                              '--model-name', 'resnet18', '--num-classes', '10'])
    to_timm.main([str(tmp_path / 'fastmim.pth'), str(tmp_path / 'back.pth')])
    state = torch.load(tmp_path / 'back.pth', weights_only=True)
    assert state.keys() == source.state_dict().keys()
    assert all(torch.equal(state[key], value) for key, value in source.state_dict().items())

    with pytest.raises(CheckpointError, match=r"fastmim\.pth holds a TimmBackbone\('resnet18'\) "
                       r'backbone, but --arch names a timm VisionTransformer; expected a timm '
                       r'ResNet'):
        to_timm.main([str(tmp_path / 'fastmim.pth'), str(tmp_path / 'other.pth'),
                      '--arch', 'vit_tiny_patch16_224'])


def test_timm_feature_extractor_converts_under_the_full_models_names(tmp_path, to_timm):
    """timm's features_only wrapper flattens ConvNeXt's ``stages.0`` into ``stages_0``; a
    FastMIM pre-training of a TimmBackbone converts to the full model's names."""
    backbone = build(dict(type='TimmBackbone', model_name='convnext_atto'))
    checkpoint = fastmim_checkpoint(backbone, tmp_path / 'pre.pth')
    to_timm.main([checkpoint, str(tmp_path / 'convnext.pth')])

    model = timm.create_model('convnext_atto', pretrained=False).eval()
    result = model.load_state_dict(torch.load(tmp_path / 'convnext.pth', weights_only=True),
                                   strict=False)
    assert result.unexpected_keys == []
    assert all(key.startswith('head.') for key in result.missing_keys)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(images), backbone(images)[-1],
                                   rtol=0, atol=1e-6)


@pytest.mark.parametrize('num_classes', [0, 10])
def test_to_timm_prints_the_timm_call_that_loads_the_file_whole(tmp_path, capsys, to_timm,
                                                                num_classes):
    """The printed call loads the output whole: with pretrained=True and the file overlaid
    only, a pre-training file fails (no head.weight), and a 10-class one given num_classes=10
    loses its classifier without a word."""
    backbone = build(dict(type='VisionTransformer', img_size=224,
                          arch=dict(embed_dim=192, depth=12, num_heads=3)))
    extra = ({'head.fc.weight': torch.randn(num_classes, 192), 'head.fc.bias':
              torch.randn(num_classes)} if num_classes else {})
    checkpoint = fastmim_checkpoint(backbone, tmp_path / 'in.pth', extra=extra)
    out = tmp_path / 'vit.pth'
    to_timm.main([checkpoint, str(out), '--arch', 'vit_tiny_patch16_224'])

    call = capsys.readouterr().out.splitlines()[-1]
    assert call == (f"load it with timm.create_model('vit_tiny_patch16_224', pretrained=True, "
                    f"num_classes={num_classes}, pretrained_cfg_overlay=dict(file={str(out)!r}, "
                    f"num_classes={num_classes}))")
    model = timm.create_model('vit_tiny_patch16_224', pretrained=True, num_classes=num_classes,
                              pretrained_cfg_overlay=dict(file=str(out), num_classes=num_classes))
    written = torch.load(out, weights_only=True)
    assert model.state_dict().keys() == written.keys()
    assert all(torch.equal(value, written[key]) for key, value in model.state_dict().items())


@pytest.mark.parametrize('options', [[], ['--safetensors']])
def test_to_timm_refuses_a_safetensors_name_for_its_torch_file(tmp_path, to_timm, options):
    """OUT named .safetensors held a torch pickle that safetensors and timm cannot read (with
    --safetensors the copy replaced it, 'written' twice)."""
    checkpoint = tiny_vit_checkpoint(tmp_path / 'vit.pth')
    with pytest.raises(ValueError, match=r'OUT .*out\.safetensors is written with torch\.save: '
                       r'give it a \.pth name and add --safetensors'):
        to_timm.main([checkpoint, str(tmp_path / 'out.safetensors'), *options])
    assert [path.name for path in tmp_path.iterdir()] == ['vit.pth']


def test_to_timm_names_the_backbone_modules_it_leaves_out(tmp_path, capsys, to_timm):
    """A detection Swin's out_norms are named as the modules left out, not as 'left out ...:
    backbone', which reads as if the backbone were not converted."""
    backbone = build(dict(type='SwinTransformer', img_size=64, window_size=4,
                          out_indices=(0, 1, 2, 3),
                          arch=dict(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))))
    checkpoint = fastmim_checkpoint(backbone, tmp_path / 'det.pth')
    to_timm.main([checkpoint, str(tmp_path / 'out.pth')])
    assert ('left out 8 tensors timm has no place for: backbone.out_norms, mask_token, neck'
            in capsys.readouterr().out.splitlines())


def test_to_timm_refuses_a_backbone_timm_has_no_model_of(tmp_path, to_timm):
    """A CMT checkpoint is refused: timm has no CMT, and a 'timm state dict' of it would be a
    file no timm model loads."""
    torch.save({'state_dict': {'backbone.stem_conv1.weight': torch.zeros(16, 3, 3, 3)},
                'meta': {'geometry': {'backbone': {'type': 'CMT', 'arch': 's'}}}},
               tmp_path / 'cmt.pth')
    with pytest.raises(CheckpointError, match=r'cmt\.pth holds a CMT backbone, of which timm has '
                       r'no model'):
        to_timm.main([str(tmp_path / 'cmt.pth'), str(tmp_path / 'out.pth')])
    assert not (tmp_path / 'out.pth').exists()


def test_to_timm_refuses_a_vit_with_relative_position_tables(tmp_path, to_timm):
    """The segmentation ViT's BEiT tables have no place in timm's VisionTransformer ('Unexpected
    key(s) ... relative_position_bias_table'), and without them the model computes something
    else: no timm ViT takes these weights, so the conversion is refused."""
    backbone = build(dict(type='VisionTransformer', img_size=32, patch_size=8, rel_pos_bias=True,
                          arch=dict(embed_dim=32, depth=2, num_heads=2)))
    checkpoint = fastmim_checkpoint(backbone, tmp_path / 'seg.pth')
    with pytest.raises(CheckpointError, match=r'seg\.pth holds a VisionTransformer with '
                       r'relative-position tables \(rel_pos_bias=True: blocks\.0\.'):
        to_timm.main([checkpoint, str(tmp_path / 'out.pth')])
    assert not (tmp_path / 'out.pth').exists()


# --- reference release -> fastmim ---------------------------------------------------------------
def release_name_in_fastmim(key):
    """Where a key of the release's decoder goes in fastmim's MIMDecoder (``neck``)."""
    for release, fastmim_name in (('decoder_embed.', 'embed.'), ('decoder_blocks.', 'blocks.'),
                                  ('decoder_norm.', 'norm.'), ('decoder_pred.', 'predict.')):
        if key.startswith(release):
            return 'neck.' + fastmim_name + key[len(release):]
    raise KeyError(key)


def save_reference(path, model_state, with_args=False):
    """MAE-style file of the release; ``args`` is the pickled argparse.Namespace it holds."""
    checkpoint = {'model': model_state, 'epoch': 799}
    if with_args:
        checkpoint['args'] = argparse.Namespace(model='mim_vit_base', input_size=128)
    torch.save(checkpoint, path)
    return str(path)


@pytest.fixture(scope='module')
def convert(from_reference):
    """``convert(tmp_path, reference, backbone, *options)``: tools/convert/from_reference.py
    run on ``reference``; the path of its output and the output loaded."""
    def run(tmp_path, reference, backbone, *options):
        out = tmp_path / 'converted.pth'
        from_reference.main([reference, str(out), '--backbone', backbone, *options])
        return str(out), torch.load(out, weights_only=True)
    return run


def assert_same_outputs(model_a, model_b, size):
    images = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(model_a(images)[0], model_b(images)[0], rtol=0, atol=1e-5)


def test_reference_vit_converts_and_fine_tunes_at_224(tmp_path, convert, release_decoder):
    arch = dict(embed_dim=32, depth=2, num_heads=2)
    source = build(dict(type='VisionTransformer', arch=arch, img_size=128))
    # MAE's names are timm's: the encoder sits at the top level of `model`.
    reference = save_reference(tmp_path / 'mim_vit.pth',
                               {**source.state_dict(), **release_decoder(32, 108)}, with_args=True)

    # The hint is one this tool takes: the converters' flag is bare, only tools/train.py
    # takes a file ('pass --trust-checkpoint FILE' would be refused by argparse here).
    with pytest.raises(CheckpointError, match=r'Namespace.*if you trust its origin, pass '
                       r'--trust-checkpoint \(tools/train\.py takes the file with it: '
                       r'--trust-checkpoint '
                       rf'{reference}\)\. An argparse\.Namespace .*from_reference\.py'):
        convert(tmp_path, reference, 'vit')
    out, converted = convert(tmp_path, reference, 'vit', '--trust-checkpoint')

    state = converted['state_dict']
    decoder = [key for key in release_decoder(32, 108) if key.startswith('decoder_')]
    assert sorted(state) == sorted(['backbone.' + key for key in source.state_dict()] +
                                   ['mask_token'] + [release_name_in_fastmim(key)
                                                     for key in decoder])
    geometry = converted['meta']['geometry']
    assert geometry['input_size'] == [128, 128]
    assert geometry['backbone']['pos_embed_grid'] == [8, 8]
    assert geometry['backbone']['embed_dim'] == 32 and geometry['backbone']['depth'] == 2
    target = build(dict(type='VisionTransformer', arch=arch, img_size=224))
    load_pretrained(target, out)
    assert_same_outputs(target, source, 224)


def test_reference_checkpoint_loads_directly_with_load_pretrained(tmp_path, release_decoder):
    arch = dict(embed_dim=32, depth=2, num_heads=2)
    source = build(dict(type='VisionTransformer', arch=arch, img_size=128))
    reference = save_reference(tmp_path / 'mim_vit.pth',
                               {**source.state_dict(), **release_decoder(32, 108)})
    target = build(dict(type='VisionTransformer', arch=arch, img_size=224))

    summary = load_pretrained(target, reference)

    assert summary.resized == {'pos_embed': ((1, 65, 32), (1, 197, 32))}
    assert_same_outputs(target, source, 224)


def original_swin_state(model):
    """timm layout -> original Microsoft layout: patch merging at the END of stage i - 1, and
    the index / mask buffers saved with the weights."""
    state = {}
    for key, value in {**model.state_dict(), **dict(model.named_buffers())}.items():
        key = re.sub(r'^layers\.(\d+)\.downsample',
                     lambda match: f'layers.{int(match[1]) - 1}.downsample', key)
        state['encoder.' + key] = value
    return state


def test_reference_swin_converts_with_timm_filter(tmp_path, convert, release_decoder):
    arch = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
    source = build(dict(type='SwinTransformer', arch=arch, img_size=128, window_size=4))
    reference_state = {**original_swin_state(source), **release_decoder(128, 432)}
    assert 'encoder.layers.0.downsample.reduction.weight' in reference_state
    assert 'encoder.layers.0.blocks.1.attn_mask' in reference_state
    reference = save_reference(tmp_path / 'mim_swin.pth', reference_state)

    out, converted = convert(tmp_path, reference, 'swin')

    backbone = converted['meta']['geometry']['backbone']
    assert backbone['img_size'] == 128 and backbone['window_size'] == 4
    assert backbone['num_heads'] == [1, 2, 2, 4]
    same = build(dict(type='SwinTransformer', arch=arch, img_size=128, window_size=4))
    torch.nn.init.zeros_(same.layers[1].downsample.reduction.weight)
    load_pretrained(same, out)
    assert_same_outputs(same, source, 128)
    window_7 = build(dict(type='SwinTransformer', arch=arch, img_size=224, window_size=7))
    summary = load_pretrained(window_7, out)
    assert len(summary.resized) == 8


def test_original_swin_classifier_release_loads_with_its_head_left_out(tmp_path):
    """Microsoft's Swin files are {'model': original layout + head}: not a FastMIM reference
    pre-training, a state dict in another layout that Swin's own rule renames."""
    arch = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
    source = build(dict(type='SwinTransformer', arch=arch, img_size=128, window_size=4))
    state = {key[len('encoder.'):]: value for key, value in original_swin_state(source).items()}
    state.update({'head.weight': torch.randn(10, 128), 'head.bias': torch.randn(10)})
    path = save_reference(tmp_path / 'swin_release.pth', state)
    target = build(dict(type='SwinTransformer', arch=arch, img_size=128, window_size=4))
    torch.nn.init.zeros_(target.layers[3].downsample.reduction.weight)

    summary = load_pretrained(target, path)

    assert summary.left_out == ['head.bias', 'head.weight']  # the file's own names
    assert_same_outputs(target, source, 128)


def original_pvtv2_state(model):
    """timm layout -> original PVTv2 layout (patch_embed1..4, block1..4, norm1..4)."""
    state = {}
    for key, value in model.state_dict().items():
        key = re.sub(r'^patch_embed\.', 'patch_embed1.', key)
        key = re.sub(r'^stages\.(\d+)\.downsample\.',
                     lambda match: f'patch_embed{int(match[1]) + 1}.', key)
        key = re.sub(r'^stages\.(\d+)\.blocks\.(\d+)\.',
                     lambda match: f'block{int(match[1]) + 1}.{match[2]}.', key)
        key = re.sub(r'^stages\.(\d+)\.norm\.', lambda match: f'norm{int(match[1]) + 1}.', key)
        state['encoder.' + key.replace('mlp.dwconv.', 'mlp.dwconv.dwconv.')] = value
    return state


def test_reference_pvtv2_of_custom_size_needs_its_heads(tmp_path, convert, release_decoder):
    arch = dict(depths=(1, 1, 1, 1), embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 2, 4))
    source = build(dict(type='PyramidVisionTransformerV2', arch=arch))
    reference = save_reference(tmp_path / 'mim_pvt.pth',
                               {**original_pvtv2_state(source), **release_decoder(32, 432)})

    with pytest.raises(CheckpointError, match=r"mim_pvt\.pth.*do not determine \['num_heads'\]"):
        convert(tmp_path, reference, 'pvtv2')
    out, converted = convert(tmp_path, reference, 'pvtv2', '--num-heads', '1', '2', '2', '4')

    assert converted['meta']['geometry']['backbone']['num_heads'] == [1, 2, 2, 4]
    target = build(dict(type='PyramidVisionTransformerV2', arch=arch))
    torch.nn.init.zeros_(target.stages[2].blocks[0].attn.kv.weight)
    load_pretrained(target, out)
    assert_same_outputs(target, source, 128)


def test_reference_pvtv2_of_published_size_is_named_by_it(tmp_path, convert):
    source = build(dict(type='PyramidVisionTransformerV2', arch='b0'))
    reference = save_reference(tmp_path / 'mim_pvt_b0.pth', original_pvtv2_state(source))

    _, converted = convert(tmp_path, reference, 'pvtv2')

    assert converted['meta']['geometry']['backbone']['arch'] == 'b0'
    assert converted['meta']['geometry']['input_size'] is None  # PVTv2 has no size


# fastmim CMT name -> name in the release's mim_cmt_pretrain.py (inside `encoder.`).
CMT_REFERENCE_NAMES = [
    (r'^stem\.0\.', 'stem_conv1.'), (r'^stem\.2\.', 'stem_norm1.'),
    (r'^stem\.3\.', 'stem_conv2.'), (r'^stem\.5\.', 'stem_norm2.'),
    (r'^stem\.6\.', 'stem_conv3.'), (r'^stem\.8\.', 'stem_norm3.'),
    (r'\.lpu\.dwconv\.', '.proj.'), (r'\.attn\.reduce\.', '.attn.sr.'),
    (r'\.ffn\.expand\.', '.mlp.conv1.'), (r'\.ffn\.dwconv_norm\.', '.mlp.proj_bn.'),
    (r'\.ffn\.dwconv\.', '.mlp.proj.'), (r'\.ffn\.project\.', '.mlp.conv2.'),
]


def reference_cmt_state(model):
    state = {}
    for key, value in model.state_dict().items():
        for pattern, replacement in CMT_REFERENCE_NAMES:
            key = re.sub(pattern, replacement, key)
        key = re.sub(r'^stages\.(\d)\.downsample\.',
                     lambda match: f'patch_embed_{"abcd"[int(match[1])]}.', key)
        key = re.sub(r'^stages\.(\d)\.relative_position_bias$',
                     lambda match: f'relative_pos_{"abcd"[int(match[1])]}', key)
        key = re.sub(r'^stages\.(\d)\.blocks\.',
                     lambda match: f'blocks_{"abcd"[int(match[1])]}.', key)
        state['encoder.' + key] = value
    dim = model.arch_settings['embed_dims'][-1]
    state['encoder.norm.weight'], state['encoder.norm.bias'] = torch.ones(dim), torch.zeros(dim)
    return state


def test_reference_cmt_converts_and_loads_at_224(tmp_path, capsys, convert,
                                                  release_decoder):
    arch = dict(embed_dims=[8, 16, 24, 32], depths=[1, 2, 1, 1], num_heads=[1, 2, 2, 4],
                stem_channels=8, mlp_ratio=2.0)
    source = build(dict(type='CMT', arch=arch, img_size=128))
    reference = save_reference(tmp_path / 'mim_cmt.pth',
                               {**reference_cmt_state(source), **release_decoder(32, 432)})

    out, converted = convert(tmp_path, reference, 'cmt')

    report = capsys.readouterr().out
    assert "decoder: converted (the same predictions as the release's)" in report
    assert 'dropped' not in report  # the final norm, which the release's decoder reads, too
    state = converted['state_dict']
    assert torch.equal(state['neck.in_norm.weight'], reference_cmt_state(source)[
        'encoder.norm.weight'])
    assert converted['meta']['geometry']['backbone']['img_size'] == 128
    same = build(dict(type='CMT', arch=arch, img_size=128))
    torch.nn.init.zeros_(same.stages[1].blocks[1].ffn.dwconv.weight)
    load_pretrained(same, out)
    assert_same_outputs(same, source, 128)
    target = build(dict(type='CMT', arch=arch, img_size=224))
    summary = load_pretrained(target, out)
    assert summary.resized['stages.3.relative_position_bias'] == ((4, 16, 16), (4, 49, 49))
    assert_same_outputs(target, source, 224)


def test_wrong_backbone_flag_is_named(tmp_path, convert):
    source = build(dict(type='VisionTransformer', arch=dict(embed_dim=32, depth=1, num_heads=2),
                        img_size=64))
    reference = save_reference(tmp_path / 'mim_vit.pth', dict(source.state_dict()))
    with pytest.raises(CheckpointError, match='--backbone swin was given, but the weights are a '
                       'reference vit'):
        convert(tmp_path, reference, 'swin')


@pytest.mark.parametrize('flag', ['--num-heads', '--img-size'])
def test_from_reference_refuses_a_count_below_one(tmp_path, capsys, from_reference, flag):
    """--num-heads 0 is refused, not taken as 'not given' with the conversion going on."""
    with pytest.raises(SystemExit):
        from_reference.main([str(tmp_path / 'ref.pth'), str(tmp_path / 'out.pth'),
                             '--backbone', 'vit', flag, '0'])
    assert f'argument {flag}: must be a positive integer, got 0' in capsys.readouterr().err


@pytest.mark.parametrize('tool, extra', [('to_timm.py', []),
                                         ('from_reference.py', ['--backbone', 'vit']),
                                         ('from_timm.py', ['--model-name', 'resnet18'])])
def test_converters_refuse_to_write_over_their_input(tmp_path, load_script, tool, extra):
    """OUT naming the input is refused: reading it whole, then replacing it by the converted
    file, would lose the original."""
    source = tmp_path / 'weights.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}}, source)
    original = source.read_bytes()
    for out in (source, tmp_path / '.' / 'weights.pth'):
        with pytest.raises(ValueError, match=f'OUT {out} is .* itself: writing it would replace '
                                             'the original'):
            load_script(TOOLS / tool).main([str(source), str(out), *extra])
    assert source.read_bytes() == original


@pytest.mark.parametrize('tool, extra', [('to_timm.py', []),
                                         ('from_reference.py', ['--backbone', 'vit']),
                                         ('from_timm.py', ['--model-name', 'resnet18'])])
def test_converters_refuse_an_existing_out_without_overwrite(tmp_path, load_script, tool, extra):
    """``to_timm.py epoch_8.pth epoch_7.pth`` (the arguments' order slipped) replaced a training
    checkpoint by the converted file. An existing OUT is refused, naming it and its size, before
    the input is read (it is not there); ``--overwrite`` lets the tool go on to read it."""
    out = tmp_path / 'epoch_7.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'meta': {}}, out)
    original = out.read_bytes()
    missing = tmp_path / 'epoch_8.pth'
    with pytest.raises(FileExistsError, match=rf'^OUT {re.escape(str(out))} exists \(\d+.*B\): '
                                              'pass --overwrite to replace it'):
        load_script(TOOLS / tool).main([str(missing), str(out), *extra])
    assert out.read_bytes() == original
    with pytest.raises((FileNotFoundError, CheckpointError)):
        load_script(TOOLS / tool).main([str(missing), str(out), *extra, '--overwrite'])
    assert out.read_bytes() == original


def test_to_timm_refuses_an_existing_safetensors_copy(tmp_path, to_timm):
    """``--safetensors`` writes a second file beside OUT: an existing one is refused too."""
    aside = tmp_path / 'out.safetensors'
    aside.write_bytes(b'kept')
    with pytest.raises(FileExistsError, match=rf'^OUT {re.escape(str(aside))} exists'):
        to_timm.main([str(tmp_path / 'weights.pth'), str(tmp_path / 'out.pth'),
                      '--safetensors'])
    assert aside.read_bytes() == b'kept'


@pytest.mark.parametrize('tool, extra', [('to_timm.py', []),
                                         ('from_reference.py', ['--backbone', 'vit']),
                                         ('from_timm.py', ['--model-name', 'resnet18'])])
@pytest.mark.parametrize('out, message', [('exports/', 'is a folder; expected a file name'),
                                          ('new/', "ends in '/', so names a folder")])
def test_converters_name_an_out_folder_before_reading(tmp_path, load_script, tool, extra, out,
                                                      message):
    """``OUT exports/`` names a folder, not a file name: it is refused before the input is read
    and converted (else the write fails at the end with 'could not write exports/: Not a
    directory', of a folder that exists). The input here is never read (it is not there): OUT
    is checked first."""
    (tmp_path / 'exports').mkdir()
    out = f'{tmp_path}/{out}'
    with pytest.raises(IsADirectoryError, match=f'OUT {re.escape(out)} .*{message}'):
        load_script(TOOLS / tool).main([str(tmp_path / 'weights.pth'), out, *extra])


@pytest.mark.parametrize('tool, extra', [('from_reference.py', ['--backbone', 'vit']),
                                         ('from_timm.py', ['--model-name', 'resnet18'])])
def test_converters_refuse_a_safetensors_name_for_their_torch_file(tmp_path, load_script, tool,
                                                                  extra):
    """OUT named .safetensors held a torch.save zip that nothing loads (timm and safetensors
    pick the reader by the suffix: 'header too large'). The input is never read (it is not
    there): OUT is checked first."""
    out = tmp_path / 'out.safetensors'
    with pytest.raises(ValueError, match=r'OUT .*out\.safetensors is written with torch\.save: '
                                         r'give it a \.pth name'):
        load_script(TOOLS / tool).main([str(tmp_path / 'weights.pth'), str(out), *extra])
    assert not out.exists()


def test_to_timm_names_a_reference_files_decoder_among_what_it_leaves_out(tmp_path, capsys,
                                                                           to_timm,
                                                                           release_decoder):
    """A reference-release file read directly: its decoder, which to_timm has no place for, is
    named among what is left out (as neck), with mask_token."""
    source = build(dict(type='VisionTransformer', arch=dict(embed_dim=32, depth=2, num_heads=2),
                        img_size=128))
    reference = save_reference(tmp_path / 'mim_vit.pth',
                               {**source.state_dict(), **release_decoder(32, 108)})
    to_timm.main([reference, str(tmp_path / 'out.pth')])
    left_out = [line for line in capsys.readouterr().out.splitlines()
                if line.startswith('left out')]
    assert len(left_out) == 1
    # The decoder, read as fastmim's (neck), and the mask token.
    assert left_out[0].endswith(': mask_token, neck')


# The release's HOG target: 9 bins x 3 colours per 8-px cell; a stride-32 token holds 4 x 4 cells.
HOG_CHANNELS, CELLS = 27, 4


def release_predictions(state, tokens, eps, input_norm=None):
    """The release's decoder on encoder tokens ``(B, N, C)``, as its PretrainSwin / PretrainCMT
    forward runs it: (CMT: the encoder's final LayerNorm, eps 1e-6), decoder_embed, the
    blocks (timm's Block), decoder_norm, decoder_pred; ``(B, N, 27 * 4 * 4)``."""
    from timm.models.vision_transformer import Block
    x = tokens
    if input_norm is not None:
        x = F.layer_norm(x, x.shape[-1:], *input_norm, eps=1e-6)
    x = F.linear(x, state['decoder_embed.weight'], state['decoder_embed.bias'])
    width, index = x.shape[-1], 0
    while f'decoder_blocks.{index}.norm1.weight' in state:
        block = Block(width, max(1, width // 32), 4., qkv_bias=True,
                      norm_layer=partial(torch.nn.LayerNorm, eps=eps)).eval()
        prefix = f'decoder_blocks.{index}.'
        block.load_state_dict({key[len(prefix):]: value for key, value in state.items()
                               if key.startswith(prefix)})
        x, index = block(x), index + 1
    x = F.layer_norm(x, (width, ), state['decoder_norm.weight'], state['decoder_norm.bias'],
                     eps=eps)
    return F.linear(x, state['decoder_pred.weight'], state['decoder_pred.bias'])


def release_arrangement(cell_map):
    """A map on the target's cell grid ``(B, 27, H, W)`` arranged per token as the release's
    forward_hog_loss arranges its HOG target for the loss: ``(B, N, 27 * 4 * 4)``."""
    return (cell_map.permute(0, 2, 3, 1).unfold(1, CELLS, CELLS).unfold(2, CELLS, CELLS)
            .flatten(1, 2).flatten(2))


@pytest.mark.parametrize('backbone', ['swin', 'cmt'])
def test_a_converted_decoder_predicts_what_the_releases_does(tmp_path, convert, release_decoder,
                                                             backbone):
    """The release's decoder was dropped, so its pre-training files could not be loaded by the
    FastMIM configs (get_model, reconstruct). Converted, it loads strictly into them, and
    fastmim's prediction, folded onto the cell grid that its loss compares with the target,
    holds at every cell what the release's decoder predicts for it there: arranged as the
    release arranges its target, the two agree. Inputs: the same random encoder features."""
    if backbone == 'swin':
        arch = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
        source = build(dict(type='SwinTransformer', arch=arch, img_size=128, window_size=4))
        encoder, channels, eps, config = (original_swin_state(source), 128, 1e-5,
                                          'fastmim::fastmim/swin_b_hog_400e.py')
        options = {'backbone.arch': dict(_delete_=True, **arch)}
    else:
        arch = dict(embed_dims=[8, 16, 24, 32], depths=[1, 2, 1, 1], num_heads=[1, 2, 2, 4],
                    stem_channels=8, mlp_ratio=2.0)
        source = build(dict(type='CMT', arch=arch, img_size=128))
        encoder, channels, eps, config = (reference_cmt_state(source), 32, 1e-5,
                                          'fastmim::fastmim/cmt_s_hog_800e.py')
        encoder['encoder.norm.weight'] = 1 + 0.2 * torch.randn(channels)
        encoder['encoder.norm.bias'] = 0.2 * torch.randn(channels)
        options = {'backbone.arch': dict(_delete_=True, **arch)}
    decoder = release_decoder(channels, HOG_CHANNELS * CELLS ** 2, embed_dim=64, depth=2)
    reference = save_reference(tmp_path / f'mim_{backbone}.pth', {**encoder, **decoder})
    out, _ = convert(tmp_path, reference, backbone)

    model = get_model(config, out, **options, **{'neck.embed_dim': 64, 'neck.depth': 2})

    features = torch.randn(2, channels, 4, 4)
    tokens = features.flatten(2).transpose(1, 2)  # the release's encoders: (B, h * w, C)
    input_norm = ((encoder['encoder.norm.weight'], encoder['encoder.norm.bias'])
                  if backbone == 'cmt' else None)
    with torch.no_grad():
        expected = release_predictions(decoder, tokens, eps, input_norm)
        cell_map = model.fold_tokens(model.decode(features), (4, 4))
    assert cell_map.shape == (2, HOG_CHANNELS, 16, 16)
    torch.testing.assert_close(release_arrangement(cell_map), expected, rtol=1e-5, atol=1e-5)


def test_the_refusal_of_a_release_file_names_a_route_that_loads_it(tmp_path, convert,
                                                                    release_decoder):
    """get_model refuses an unconverted release pre-training file and sends it to the
    converter; the converted file then loads strictly into the FastMIM config, as the message
    says (it did not: the decoder was dropped, and the config's neck was missing)."""
    arch = dict(embed_dim=32, depth=2, num_heads=2)
    # The release's ViT pre-trains with a fixed sin-cos position embedding.
    source = build(dict(type='VisionTransformer', arch=arch, img_size=128,
                        pos_embed_type='sincos'))
    decoder = release_decoder(32, 108, embed_dim=16, depth=1)
    reference = save_reference(tmp_path / 'mim_vit.pth', {**source.state_dict(), **decoder})
    config = 'fastmim::fastmim/demo_vit_tiny_embedded.py'
    options = {'backbone.arch': dict(_delete_=True, **arch), 'neck.embed_dim': 16}
    with pytest.raises(CheckpointError, match=r'from_reference\.py .* then load OUT; OUT is a '
                       r'FastMIM pre-training checkpoint, encoder and decoder: the FastMIM '
                       r'config of its backbone \(configs/fastmim/\) loads it'):
        get_model(config, reference, **options)
    out, _ = convert(tmp_path, reference, 'vit')

    model = get_model(config, out, **options)

    torch.testing.assert_close(model.neck.embed.weight, decoder['decoder_embed.weight'],
                               rtol=0, atol=0)
    torch.testing.assert_close(model.backbone.blocks[1].mlp.fc2.weight,
                               source.blocks[1].mlp.fc2.weight, rtol=0, atol=0)


def test_a_decoder_of_a_pixel_target_is_dropped_and_named(tmp_path, capsys, convert,
                                                           release_decoder):
    """The release's pixel-target decoder (32 x 32 x 3 values per stride-32 token, its l2 loss)
    has no HOG cells to reorder: the encoder converts, the decoder is dropped, with the reason."""
    arch = dict(depths=(1, 1, 1, 1), embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 2, 4))
    source = build(dict(type='PyramidVisionTransformerV2', arch=arch))
    reference = save_reference(tmp_path / 'mim_pvt.pth', {**original_pvtv2_state(source),
                                                          **release_decoder(32, 32 * 32 * 3)})
    _, converted = convert(tmp_path, reference, 'pvtv2', '--num-heads', '1', '2', '2', '4')

    assert not any(key.startswith('neck.') for key in converted['state_dict'])
    report = capsys.readouterr().out
    assert 'decoder: dropped: its 3072 outputs per token are not 27 HOG channels' in report
    assert 'dropped: decoder_blocks, decoder_embed, decoder_norm, decoder_pred' in report
