"""The reference release publishes PVTv2-B2 and CMT-S only as ImageNet fine-tuned files
(``pvtv2_b2_fastmim_pixel_800e_finetune.pth``, ``cmt_small_fastmim_hog_800e_finetune_83.9.pth``):
they convert to the fine-tuning configs' classifiers, with the logits of the release's own
models, and initialise fastmim backbones with their features.

The files cannot be downloaded here, so they are fabricated with random tensors in the release's
layout, written out key by key from its mim_pvtv2_finetune.py and mim_cmt_finetune.py, at tiny
widths. The independent references: timm's PVTv2 classifier (a port of the original PVTv2, which
mim_pvtv2_finetune.py copies) holding the same tensors under timm's names, and for CMT, which
timm does not have, the release's forward written below as plain functions of its state dict.
"""
import argparse
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from timm.models.pvt_v2 import PyramidVisionTransformerV2 as TimmPVTv2

import fastmim  # noqa: F401  registers modules, safe checkpoint I/O
import fastmim.models  # noqa: F401
from fastmim.engine.checkpoint import trust_checkpoint
from fastmim.errors import CheckpointError
from fastmim.models.utils import load_pretrained
from fastmim.models.utils.reference import convert_reference_checkpoint
from fastmim.registry import MODELS

pytestmark = pytest.mark.usefixtures('one_thread')

ROOT = Path(__file__).resolve().parents[2]
NUM_CLASSES = 1000


@pytest.fixture(scope='module')
def from_reference(load_script):
    return load_script(ROOT / 'tools' / 'convert' / 'from_reference.py')


def save_release_file(path, state):
    """MAE's ``save_model``, as the release's main_finetune.py saves: the pickled arguments too."""
    torch.save({'model': state, 'optimizer': {}, 'epoch': 99,
                'args': argparse.Namespace(model='cmt_small', input_size=224)}, path)
    trust_checkpoint(str(path))
    return str(path)


def randomised(state, generator):
    """Random tensors of the same shapes; norms around 1 and running variances positive, so a
    norm or a BatchNorm statistic in the wrong place changes the output."""
    out = {}
    for key, value in state.items():
        if not value.is_floating_point():
            out[key] = value
        elif key.endswith('running_var'):
            out[key] = torch.rand(value.shape, generator=generator) + 0.5
        elif re.search(r'(norm\d?|_bn|\.1|\.2|proj_bn)\.weight$', key) and value.dim() == 1:
            out[key] = 1 + 0.2 * torch.randn(value.shape, generator=generator)
        else:
            out[key] = 0.2 * torch.randn(value.shape, generator=generator)
    return out


# --- PVTv2 ---------------------------------------------------------------------------------------
def release_pvtv2_keys(depths, sr_ratios):
    """mim_pvtv2_finetune.py's ``PyramidVisionTransformerV2`` state dict: ``patch_embed{i}``,
    ``block{i}.{j}`` (q, kv, and where sr > 1 the strided conv ``sr`` and its LayerNorm; the MLP's
    depthwise conv wrapped as ``dwconv.dwconv``), ``norm{i}`` per stage, then ``head``."""
    keys = []
    for stage, (depth, sr) in enumerate(zip(depths, sr_ratios), start=1):
        keys += [f'patch_embed{stage}.{name}.{kind}' for name in ('proj', 'norm')
                 for kind in ('weight', 'bias')]
        for block in range(depth):
            layers = ['norm1', 'attn.q', 'attn.kv', 'attn.proj', 'norm2', 'mlp.fc1',
                      'mlp.dwconv.dwconv', 'mlp.fc2'] + (['attn.sr', 'attn.norm'] if sr > 1 else [])
            keys += [f'block{stage}.{block}.{layer}.{kind}' for layer in layers
                     for kind in ('weight', 'bias')]
        keys += [f'norm{stage}.weight', f'norm{stage}.bias']
    return set(keys + ['head.weight', 'head.bias'])


def timm_to_release_pvtv2(key):
    """timm's PVTv2 name -> the release's (written from the two layouts, not timm's filter)."""
    key = re.sub(r'^patch_embed\.', 'patch_embed1.', key)
    key = re.sub(r'^stages\.(\d)\.downsample\.', lambda m: f'patch_embed{int(m[1]) + 1}.', key)
    key = re.sub(r'^stages\.(\d)\.blocks\.(\d+)\.', lambda m: f'block{int(m[1]) + 1}.{m[2]}.', key)
    key = re.sub(r'^stages\.(\d)\.norm\.', lambda m: f'norm{int(m[1]) + 1}.', key)
    return key.replace('.mlp.dwconv.', '.mlp.dwconv.dwconv.')


def release_pvtv2_b0():
    """(release classifier, its state dict in the release's layout): PVTv2-B0 widths, the
    published PVTv2-B2's structure (qkv bias, MLP ratios 8, 8, 4, 4, sr 8, 4, 2, 1)."""
    model = TimmPVTv2(depths=(2, 2, 2, 2), embed_dims=(32, 64, 160, 256), num_heads=(1, 2, 5, 8),
                      mlp_ratios=(8, 8, 4, 4), sr_ratios=(8, 4, 2, 1), num_classes=NUM_CLASSES)
    model.load_state_dict(randomised(model.state_dict(), torch.Generator().manual_seed(0)))
    state = {timm_to_release_pvtv2(key): value for key, value in model.state_dict().items()}
    assert set(state) == release_pvtv2_keys((2, 2, 2, 2), (8, 4, 2, 1))
    return model.eval(), state


def test_pvtv2_fine_tuned_file_converts_to_a_classifier_with_the_release_logits(
        tmp_path, capsys, from_reference):
    """The file was refused: 'cannot tell which reference backbone this is'."""
    release, state = release_pvtv2_b0()
    path = save_release_file(tmp_path / 'pvtv2_b2_fastmim_pixel_800e_finetune.pth', state)
    out = tmp_path / 'converted.pth'

    from_reference.main([path, str(out), '--backbone', 'pvtv2', '--trust-checkpoint'])

    printed = capsys.readouterr().out
    assert 'renamed: head -> head.fc' in printed
    assert 'configs/finetune/pvtv2_b2_ft_100e.py' in printed
    converted = torch.load(out, weights_only=True)
    assert converted['meta']['geometry']['backbone']['arch'] == 'b0'
    assert converted['meta']['geometry']['num_classes'] == NUM_CLASSES
    # The fine-tuning config's classifier (tiny widths) takes every tensor and gives the
    # release's logits: mean of the tokens after norm4, then head.
    cfg = Config.fromfile(str(ROOT / 'configs' / 'finetune' / 'pvtv2_b2_ft_100e.py'))
    cfg.model.backbone.arch = 'b0'
    cfg.model.backbone.init_cfg = None
    init_default_scope('fastmim')
    classifier = MODELS.build(cfg.model).eval()
    classifier.load_state_dict(converted['state_dict'], strict=True)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits = classifier(images, mode='tensor')
        expected = release(images)
    assert expected.abs().max() > 1
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


# --- CMT -----------------------------------------------------------------------------------------
# Tiny CMT: the release's structure (stem, 4 stages, sr 8, 4, 2, 1), small widths and depths.
CMT = dict(embed_dims=[8, 16, 24, 32], depths=[1, 2, 1, 1], num_heads=[1, 2, 2, 4],
           stem_channels=8, mlp_ratio=2.0)
SR_RATIOS = [8, 4, 2, 1]
FC_DIM = 48  # the release's _fc widens the last stage to 1280 channels


def batch_norm_shapes(prefix, channels):
    return {f'{prefix}.weight': (channels, ), f'{prefix}.bias': (channels, ),
            f'{prefix}.running_mean': (channels, ), f'{prefix}.running_var': (channels, )}


def release_cmt_shapes(img_size, arch=CMT, fc_dim=FC_DIM):
    """mim_cmt_finetune.py's ``CMT`` state dict (name -> shape), written from its modules:
    the stem ``stem_conv{1,2,3}`` + ``stem_norm{1,2,3}`` (BN), per stage ``patch_embed_x`` (2x2
    conv + LayerNorm), the bias ``relative_pos_x`` (heads, N, N / sr^2), and blocks ``blocks_x.j``
    with the local perception unit ``proj`` (3x3 depthwise), ``norm1``, ``attn.{q,k,v,proj}``,
    ``attn.sr`` (depthwise sr x sr conv, BN) where sr > 1, ``norm2`` and the IRFFN ``mlp``
    (``conv1`` = 1x1 conv, GELU, BN; ``proj`` 3x3 depthwise; ``proj_bn``; ``conv2`` = 1x1 conv,
    BN); then the classifier ``_fc`` (1x1 conv), ``_bn`` and ``head``."""
    dims, stem = arch['embed_dims'], arch['stem_channels']
    shapes = {}
    for index in range(3):
        shapes[f'stem_conv{index + 1}.weight'] = (stem, 3 if index == 0 else stem, 3, 3)
        shapes[f'stem_conv{index + 1}.bias'] = (stem, )
        shapes.update(batch_norm_shapes(f'stem_norm{index + 1}', stem))
    in_dim = stem
    for stage, letter in enumerate('abcd'):
        dim, sr = dims[stage], SR_RATIOS[stage]
        hidden = int(dim * arch['mlp_ratio'])
        tokens = (img_size // 2**(stage + 2))**2
        shapes.update({f'patch_embed_{letter}.proj.weight': (dim, in_dim, 2, 2),
                       f'patch_embed_{letter}.proj.bias': (dim, ),
                       f'patch_embed_{letter}.norm.weight': (dim, ),
                       f'patch_embed_{letter}.norm.bias': (dim, ),
                       f'relative_pos_{letter}': (arch['num_heads'][stage], tokens,
                                                  tokens // sr**2)})
        for block in range(arch['depths'][stage]):
            prefix = f'blocks_{letter}.{block}.'
            layers = {'proj': (dim, 1, 3, 3), 'attn.q': (dim, dim), 'attn.k': (dim, dim),
                      'attn.v': (dim, dim), 'attn.proj': (dim, dim),
                      'mlp.conv1.0': (hidden, dim, 1, 1), 'mlp.proj': (hidden, 1, 3, 3),
                      'mlp.conv2.0': (dim, hidden, 1, 1)}
            if sr > 1:
                layers['attn.sr.0'] = (dim, 1, sr, sr)
                shapes.update(batch_norm_shapes(prefix + 'attn.sr.1', dim))
            for name, shape in layers.items():
                shapes[f'{prefix}{name}.weight'], shapes[f'{prefix}{name}.bias'] = shape, shape[:1]
            for name in ('norm1', 'norm2'):
                shapes[f'{prefix}{name}.weight'] = shapes[f'{prefix}{name}.bias'] = (dim, )
            shapes.update(batch_norm_shapes(prefix + 'mlp.conv1.2', hidden))
            shapes.update(batch_norm_shapes(prefix + 'mlp.proj_bn', hidden))
            shapes.update(batch_norm_shapes(prefix + 'mlp.conv2.1', dim))
        in_dim = dim
    shapes.update({'_fc.weight': (fc_dim, dims[-1], 1, 1), '_fc.bias': (fc_dim, ),
                   'head.weight': (NUM_CLASSES, fc_dim), 'head.bias': (NUM_CLASSES, )})
    shapes.update(batch_norm_shapes('_bn', fc_dim))
    return shapes


def release_cmt_state(img_size=224):
    generator = torch.Generator().manual_seed(0)
    return with_batch_counters(randomised({key: torch.zeros(shape) for key, shape in
                                           release_cmt_shapes(img_size).items()}, generator))


def bn(x, state, prefix):
    return F.batch_norm(x, state[prefix + '.running_mean'], state[prefix + '.running_var'],
                        state[prefix + '.weight'], state[prefix + '.bias'], False, 0., 1e-5)


def conv(x, state, prefix, **kwargs):
    return F.conv2d(x, state[prefix + '.weight'], state[prefix + '.bias'], **kwargs)


def linear(x, state, prefix):
    return F.linear(x, state[prefix + '.weight'], state[prefix + '.bias'])


def layer_norm(x, state, prefix, eps):
    return F.layer_norm(x, x.shape[-1:], state[prefix + '.weight'], state[prefix + '.bias'], eps)


def release_cmt_features(state, images, arch=CMT):
    """The release's ``CMT.forward_features`` up to the last stage's blocks (eval mode), from
    its state dict: stem (conv, GELU, BN) x 3; per stage patch_embed (conv, LayerNorm eps 1e-5),
    then blocks: x += dwconv(x); x += attn(norm1(x)) (keys and values from the sr conv + BN,
    logits q k^T / sqrt(head dim) + relative_pos); x += IRFFN(norm2(x)), norms eps 1e-6."""
    x = images
    for index in range(1, 4):
        x = conv(x, state, f'stem_conv{index}', stride=2 if index == 1 else 1, padding=1)
        x = bn(F.gelu(x), state, f'stem_norm{index}')
    for stage, letter in enumerate('abcd'):
        x = conv(x, state, f'patch_embed_{letter}.proj', stride=2)
        batch, dim, height, width = x.shape
        x = layer_norm(x.flatten(2).transpose(1, 2), state, f'patch_embed_{letter}.norm', 1e-5)
        heads, sr = arch['num_heads'][stage], SR_RATIOS[stage]
        for block in range(arch['depths'][stage]):
            p = f'blocks_{letter}.{block}.'
            image = x.transpose(1, 2).reshape(batch, dim, height, width)
            x = (conv(image, state, p + 'proj', padding=1, groups=dim) + image
                 ).flatten(2).transpose(1, 2)
            y = layer_norm(x, state, p + 'norm1', 1e-6)
            source = y
            if sr > 1:
                reduced = conv(y.transpose(1, 2).reshape(batch, dim, height, width), state,
                               p + 'attn.sr.0', stride=sr, groups=dim)
                source = bn(reduced, state, p + 'attn.sr.1').flatten(2).transpose(1, 2)

            def split(t):
                return t.reshape(batch, t.shape[1], heads, dim // heads).transpose(1, 2)

            q, k, v = (split(linear(t, state, p + name)) for t, name in
                       ((y, 'attn.q'), (source, 'attn.k'), (source, 'attn.v')))
            logits = q @ k.transpose(-2, -1) / math.sqrt(dim // heads) + \
                state[f'relative_pos_{letter}']
            attended = (logits.softmax(-1) @ v).transpose(1, 2).reshape(batch, -1, dim)
            x = x + linear(attended, state, p + 'attn.proj')
            y = layer_norm(x, state, p + 'norm2', 1e-6).transpose(1, 2)
            y = y.reshape(batch, dim, height, width)
            y = bn(F.gelu(conv(y, state, p + 'mlp.conv1.0')), state, p + 'mlp.conv1.2')
            y = conv(y, state, p + 'mlp.proj', padding=1, groups=y.shape[1]) + y
            y = bn(F.gelu(y), state, p + 'mlp.proj_bn')
            y = bn(conv(y, state, p + 'mlp.conv2.0'), state, p + 'mlp.conv2.1')
            x = x + y.flatten(2).transpose(1, 2)
        x = x.transpose(1, 2).reshape(batch, dim, height, width)
    return x


def release_cmt_logits(state, images, arch=CMT):
    """The release's ``CMT.forward`` (eval mode): the classifier after the last stage is
    ``_fc`` (1x1 conv), ``_bn`` (eps 1e-5), swish x * sigmoid(x), average pooling, dropout
    (none in eval) and ``head``."""
    x = bn(conv(release_cmt_features(state, images, arch), state, '_fc'), state, '_bn')
    return linear((x * torch.sigmoid(x)).mean(dim=(2, 3)), state, 'head')


def cmt_fine_tuning_classifier():
    """configs/finetune/cmt_s_ft_100e.py's classifier at the tiny widths of the file."""
    cfg = Config.fromfile(str(ROOT / 'configs' / 'finetune' / 'cmt_s_ft_100e.py'))
    cfg.model.backbone.arch = CMT
    cfg.model.backbone.init_cfg = None
    cfg.model.head.mid_channels = FC_DIM
    init_default_scope('fastmim')
    return MODELS.build(cfg.model).eval()


def test_cmt_fine_tuned_file_converts_to_a_classifier_with_the_release_logits(
        tmp_path, capsys, from_reference):
    """The file converted to its encoder only, its classifier (_fc, _bn, head) dropped: no
    fastmim head took it. The fine-tuning config's ConvPoolClsHead takes every tensor."""
    state = release_cmt_state()
    path = save_release_file(tmp_path / 'cmt_small_fastmim_hog_800e_finetune_83.9.pth', state)
    out = tmp_path / 'converted.pth'

    from_reference.main([path, str(out), '--backbone', 'cmt', '--trust-checkpoint'])

    printed = capsys.readouterr().out
    assert 'renamed: _fc -> head.conv, _bn -> head.bn, head -> head.fc' in printed
    assert 'configs/finetune/cmt_s_ft_100e.py' in printed and 'dropped' not in printed
    converted = torch.load(out, weights_only=True)
    assert len(converted['state_dict']) == len(state)
    geometry = converted['meta']['geometry']
    assert geometry['input_size'] == [224, 224] and geometry['backbone']['img_size'] == 224
    assert geometry['num_classes'] == NUM_CLASSES
    classifier = cmt_fine_tuning_classifier()
    classifier.load_state_dict(converted['state_dict'], strict=True)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits = classifier(images, mode='tensor')
        expected = release_cmt_logits(state, images)
    assert expected.abs().max() > 1
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    # Downstream and fine-tuning configs start a backbone from it: the classifier is left out.
    backbone = MODELS.build(dict(type='CMT', arch=CMT, img_size=224)).eval()
    summary = load_pretrained(backbone, str(out))
    assert summary.left_out == sorted(key for key in converted['state_dict']
                                      if key.startswith('head.'))
    with torch.no_grad():
        torch.testing.assert_close(backbone(images[:1])[0],
                                   release_cmt_features(state, images[:1]),
                                   rtol=1e-4, atol=1e-4)


def test_cmt_fine_tuned_file_initialises_a_backbone_directly_with_its_classifier_left_out(
        tmp_path, caplog):
    """load_pretrained refused the file: 'unexpected keys ... _fc.weight ... _bn.weight'. The
    classifier is converted in memory (head.conv, head.bn, head.fc), then left out."""
    state = release_cmt_state()
    path = save_release_file(tmp_path / 'cmt_small_fastmim_hog_800e_finetune_83.9.pth', state)
    backbone = MODELS.build(dict(type='CMT', arch=CMT, img_size=224)).eval()

    summary = load_pretrained(backbone, path)

    renamed = {'_fc.': 'head.conv.', '_bn.': 'head.bn.', 'head.': 'head.fc.'}
    assert summary.left_out == sorted(
        new + key[len(old):] for key in state for old, new in renamed.items()
        if key.startswith(old))
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(backbone(images)[0], release_cmt_features(state, images),
                                   rtol=1e-4, atol=1e-4)


# --- files that are not the release's -----------------------------------------------------------
@pytest.mark.parametrize('content, message', [
    ({'state_dict': {'backbone.cls_token': torch.zeros(1, 1, 8)}, 'meta': {}},
     r'is a fastmim / mmengine checkpoint \("state_dict"\), not a reference-release file '
     r'\("model"\): fastmim\'s own checkpoints \(a converted file included\) need no '
     r'conversion'),
    ([torch.zeros(1)], r'holds a list, not a reference-release checkpoint'),
    # a timm state dict: tensors at the top level
    ({'cls_token': torch.zeros(1, 1, 8), 'blocks.0.norm1.weight': torch.ones(8)},
     r'holds tensors at its top level \(blocks\.0\.norm1\.weight, cls_token\), not a '
     r'reference-release checkpoint \(weights under "model"\): a plain state dict, as timm '
     r'saves one, converts with tools/convert/from_timm\.py'),
    # 'found keys ' followed by nothing
    ({'model': {}, 'epoch': 3}, r"its 'model' holds no weights \(an empty dict\): nothing to "
     r'convert'),
])
def test_a_file_that_is_not_the_releases_is_one_line_naming_what_it_is(
        tmp_path, from_reference, content, message):
    """An already converted file was 'a reference-release checkpoint holds its weights under
    "model"; found keys meta, state_dict'; a list, an AttributeError ('list' object has no
    attribute 'get')."""
    path = tmp_path / 'weights.pth'
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=message) as error:
        from_reference.main([str(path), str(tmp_path / 'out.pth'), '--backbone', 'vit'])
    assert '\n' not in str(error.value) and str(path) in str(error.value)


def test_cmt_pre_training_layout_loads_with_the_release_features_at_128(tmp_path, capsys,
                                                                        from_reference,
                                                                        release_decoder):
    """mim_cmt_pretrain.py's layout: the same encoder under ``encoder.``, its final LayerNorm
    ``encoder.norm`` (eps 1e-6, the decoder's input norm in fastmim), the ``decoder_*`` parts
    (432 HOG values per stride-32 token) and the RGB ``mask_token``."""
    encoder = {key: value for key, value in release_cmt_state(img_size=128).items()
               if not key.startswith(('_fc.', '_bn.', 'head.'))}
    dim = CMT['embed_dims'][-1]
    state = {'encoder.' + key: value for key, value in encoder.items()}
    state.update({'encoder.norm.weight': torch.ones(dim), 'encoder.norm.bias': torch.zeros(dim),
                  **release_decoder(dim, 432)})
    path = save_release_file(tmp_path / 'cmt_small_pretrain.pth', state)
    out = tmp_path / 'converted.pth'

    from_reference.main([path, str(out), '--backbone', 'cmt', '--trust-checkpoint'])

    assert "decoder: converted (the same predictions as the release's)" in \
        capsys.readouterr().out
    converted = torch.load(out, weights_only=True)
    assert torch.equal(converted['state_dict']['mask_token'], state['mask_token'])
    assert converted['meta']['geometry']['input_size'] == [128, 128]
    backbone = MODELS.build(dict(type='CMT', arch=CMT, img_size=128)).eval()
    load_pretrained(backbone, str(out))
    images = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(backbone(images)[0], release_cmt_features(encoder, images),
                                   rtol=1e-4, atol=1e-4)


def with_batch_counters(state):
    """BatchNorm saves ``num_batches_tracked`` next to its statistics."""
    return {**state, **{key.replace('running_mean', 'num_batches_tracked'): torch.tensor(7)
                        for key in state if key.endswith('running_mean')}}


def published_pvtv2_b2_state():
    """pvtv2_b2's shapes (mim_pvtv2_finetune.py): widths 64, 128, 320, 512, heads 1, 2, 5, 8,
    depths 3, 4, 6, 3, MLP ratios 8, 8, 4, 4, sr 8, 4, 2, 1."""
    with torch.device('meta'):
        model = TimmPVTv2(depths=(3, 4, 6, 3), embed_dims=(64, 128, 320, 512),
                          num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4), sr_ratios=(8, 4, 2, 1),
                          num_classes=NUM_CLASSES)
    return {timm_to_release_pvtv2(key): torch.zeros(value.shape)
            for key, value in model.state_dict().items()}


def published_cmt_s_state():
    """cmt_small's shapes (mim_cmt_finetune.py): widths 64, 128, 256, 512, stem 32, depths 3, 3,
    16, 3, heads 1, 2, 4, 8, MLP ratio 4; ``_fc`` to 1280 channels."""
    arch = dict(embed_dims=[64, 128, 256, 512], depths=[3, 3, 16, 3], num_heads=[1, 2, 4, 8],
                stem_channels=32, mlp_ratio=4.0)
    return with_batch_counters({key: torch.zeros(shape) for key, shape in
                                release_cmt_shapes(224, arch=arch, fc_dim=1280).items()})


@pytest.mark.parametrize('kind, make_state, arch', [('pvtv2', published_pvtv2_b2_state, 'b2'),
                                                    ('cmt', published_cmt_s_state, 's')])
def test_the_published_files_shapes_are_named_by_their_arch(kind, make_state, arch):
    """The geometry names the published size, so the fine-tuning configs' arch matches."""
    converted = convert_reference_checkpoint({'model': make_state()}, 'published.pth',
                                             backbone=kind)
    assert converted['meta']['geometry']['backbone']['arch'] == arch


def test_the_published_cmt_s_file_loads_strictly_into_the_fine_tuning_config():
    """cmt_small_fastmim_hog_800e_finetune_83.9.pth's shapes (``_fc`` to 1280 channels) are
    the model of configs/finetune/cmt_s_ft_100e.py, classifier included."""
    converted = convert_reference_checkpoint({'model': published_cmt_s_state()}, 'published.pth',
                                             backbone='cmt')
    cfg = Config.fromfile(str(ROOT / 'configs' / 'finetune' / 'cmt_s_ft_100e.py'))
    cfg.model.backbone.init_cfg = None
    init_default_scope('fastmim')
    with torch.device('meta'):
        classifier = MODELS.build(cfg.model)
    classifier.load_state_dict(converted['state_dict'], strict=True, assign=True)


def test_num_heads_that_contradict_the_cmt_weights_are_refused(tmp_path, from_reference):
    """--num-heads 3 was ignored without a word: the heads come from the biases."""
    path = save_release_file(tmp_path / 'cmt.pth', release_cmt_state())
    with pytest.raises(CheckpointError, match=r'--num-heads 3 contradicts the cmt weights, whose '
                       r'relative position biases have \[1, 2, 2, 4\] heads'):
        from_reference.main([path, str(tmp_path / 'out.pth'), '--backbone', 'cmt',
                             '--num-heads', '3'])
    from_reference.main([path, str(tmp_path / 'out.pth'), '--backbone', 'cmt',
                         '--num-heads', '1', '2', '2', '4'])


def test_the_tool_offers_every_backbone_that_declares_a_reference_layout(from_reference,
                                                                        tmp_path):
    """--backbone's choices are the backbones that declare a reference_layout, a new one
    included: the tool kept its own list, which a new layout had to be added to by hand."""
    from fastmim.models.utils.reference import ReferenceLayout
    from fastmim.registry import MODELS

    class TinyReleased:
        reference_layout = ReferenceLayout(
            name='tiny', pretraining_marker='encoder.tiny.weight', encoder_prefix='encoder.',
            finetuned_marker='tiny.weight', classifier_keys=('head.weight', ))

    MODELS.register_module(module=TinyReleased)
    try:
        args = from_reference.parse_args(['in.pth', 'out.pth', '--backbone', 'tiny'])
    finally:
        MODELS.module_dict.pop('TinyReleased')
    assert args.backbone == 'tiny'
    for name in ('vit', 'swin', 'pvtv2', 'cmt'):
        assert from_reference.parse_args(['in.pth', 'out.pth', '--backbone', name]).backbone \
            == name


def test_a_converted_classifier_is_evaluated_with_its_published_recipe(from_reference):
    """The hint names the fine-tuning config of the published recipe table, the one the
    downstream benchmark runs (the tool kept a copy of it)."""
    from fastmim.recipes import RECIPES
    for backbone_type in ('VisionTransformer', 'SwinTransformer', 'PyramidVisionTransformerV2',
                          'CMT'):
        config = RECIPES[backbone_type]['finetune']
        assert (ROOT / config).is_file()
        assert from_reference.evaluation_hint(backbone_type, 'out.pth') == (
            f'evaluate: tools/test.py {config} out.pth (for a backbone of that size)')


def test_a_layout_without_a_listed_fine_tuning_config_converts_with_a_generic_hint(
        tmp_path, capsys, from_reference, monkeypatch):
    """A backbone without a published recipe was a KeyError after OUT had been written."""
    monkeypatch.setattr(from_reference, 'RECIPES', {})
    _, state = release_pvtv2_b0()
    path = save_release_file(tmp_path / 'pvtv2_ft.pth', state)
    out = tmp_path / 'converted.pth'

    from_reference.main([path, str(out), '--backbone', 'pvtv2', '--trust-checkpoint'])

    printed = capsys.readouterr().out
    assert (f'evaluate: tools/test.py CONFIG {out}, CONFIG a fine-tuning config '
            '(configs/finetune/) of a PyramidVisionTransformerV2 ImageClassifier') in printed
    assert out.is_file()
