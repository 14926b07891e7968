"""The reference release's ImageNet fine-tuned files
(``vit_base_fastmim_hog_800e_finetune_100e.pth``, ``swin_base_fastmim_hog_400e_finetune_100e.pth``)
convert, evaluate and initialise downstream backbones, with the outputs of the release's own model.

The files cannot be downloaded here, so they are fabricated with random tensors in the release's
layout (its models_vit.py and mim_swin_finetune.py, written out key by key below), saved MAE
style with a pickled ``argparse.Namespace``, at tiny widths. The independent reference is timm's
own model holding the same tensors: for ViT timm's ViT with average pooling and ``fc_norm`` (what
models_vit.py subclasses), for Swin timm's Swin whose ``norm`` holds the file's ``fc_norm``
(mim_swin_finetune.py normalises, then pools).
"""
import argparse
import importlib
import re
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from PIL import Image
from timm.models.swin_transformer import SwinTransformer as TimmSwin
from timm.models.vision_transformer import VisionTransformer as TimmViT

import fastmim  # noqa: F401  registers modules, safe checkpoint I/O
import fastmim.models  # noqa: F401
from fastmim.engine.checkpoint import trust_checkpoint
from fastmim.errors import CheckpointError
from fastmim.models.utils import load_pretrained

pytestmark = pytest.mark.usefixtures('one_thread')

ROOT = Path(__file__).resolve().parents[2]
DETECTION = ROOT / 'projects' / 'detection' / 'configs' / 'mask_rcnn_fastmim_swin_b_fpn_3x_coco.py'
SEGMENTATION = (ROOT / 'projects' / 'segmentation' / 'configs' /
                'upernet_fastmim_vit_b_ade20k_512x512_160k.py')
NUM_CLASSES = 1000  # the published files classify ImageNet-1k, as the configs do
# Tiny widths, the release's depths where the configs need them (the segmentation config reads
# blocks of a 12-block ViT).
VIT = dict(embed_dim=32, depth=12, num_heads=2)
SWIN = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))


@pytest.fixture(scope='module')
def from_reference(load_script):
    return load_script(ROOT / 'tools' / 'convert' / 'from_reference.py')


@pytest.fixture(scope='module')
def test_tool(load_script):
    return load_script(ROOT / 'tools' / 'test.py')


# --- the release's files ------------------------------------------------------------------------
def release_vit_keys(depth):
    """models_vit.py's ``vit_base_patch16(global_pool=True)`` state dict: timm 0.3.2's ViT with
    the final ``norm`` deleted and ``fc_norm`` added."""
    keys = ['cls_token', 'pos_embed', 'patch_embed.proj.weight', 'patch_embed.proj.bias']
    for block in range(depth):
        keys += [f'blocks.{block}.{layer}.{kind}' for layer in
                 ('norm1', 'attn.qkv', 'attn.proj', 'norm2', 'mlp.fc1', 'mlp.fc2')
                 for kind in ('weight', 'bias')]
    return set(keys + ['fc_norm.weight', 'fc_norm.bias', 'head.weight', 'head.bias'])


def release_swin_keys(depths, grid, window):
    """mim_swin_finetune.py's state dict: patch merging closes stage i (``layers.i.downsample``),
    each block saves its ``relative_position_index`` and, when shifted, its ``attn_mask``; the
    final LayerNorm is ``fc_norm``."""
    keys = ['patch_embed.proj.weight', 'patch_embed.proj.bias', 'patch_embed.norm.weight',
            'patch_embed.norm.bias']
    for stage, depth in enumerate(depths):
        for block in range(depth):
            prefix = f'layers.{stage}.blocks.{block}.'
            keys += [prefix + name for name in (
                'norm1.weight', 'norm1.bias', 'attn.relative_position_bias_table',
                'attn.relative_position_index', 'attn.qkv.weight', 'attn.qkv.bias',
                'attn.proj.weight', 'attn.proj.bias', 'norm2.weight', 'norm2.bias',
                'mlp.fc1.weight', 'mlp.fc1.bias', 'mlp.fc2.weight', 'mlp.fc2.bias')]
            if block % 2 and grid >> stage > window:  # shifted window
                keys.append(prefix + 'attn_mask')
        if stage < len(depths) - 1:
            keys += [f'layers.{stage}.downsample.{name}'
                     for name in ('reduction.weight', 'norm.weight', 'norm.bias')]
    return set(keys + ['fc_norm.weight', 'fc_norm.bias', 'head.weight', 'head.bias'])


def randomise(model):
    """Random tensors everywhere, norms included, so a norm in the wrong place changes the
    output."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            scale = 0.5 if 'relative_position_bias_table' in name or name.endswith('pos_embed') \
                else 0.2
            param.copy_(torch.randn_like(param) * scale + (1. if param.dim() == 1 and
                                                           'norm' in name and
                                                           name.endswith('weight') else 0.))
    return model.eval()


def release_vit():
    """(release model, its state dict in the release's layout)."""
    model = randomise(TimmViT(img_size=224, patch_size=16, mlp_ratio=4, qkv_bias=True,
                              norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), global_pool='avg',
                              num_classes=NUM_CLASSES, **VIT))
    state = dict(model.state_dict())
    assert set(state) == release_vit_keys(VIT['depth'])
    return model, state


def release_swin():
    """(release model, its state dict in the release's layout): timm's Swin with the release's
    names (patch merging one stage earlier, ``norm`` -> ``fc_norm``, ``head.fc`` -> ``head``)
    and the index and mask buffers the release saves."""
    model = randomise(TimmSwin(img_size=224, patch_size=4, window_size=7,
                               num_classes=NUM_CLASSES, **SWIN))
    state = {}
    for key, value in {**model.state_dict(), **dict(model.named_buffers())}.items():
        key = re.sub(r'^layers\.(\d+)\.downsample',
                     lambda match: f'layers.{int(match[1]) - 1}.downsample', key)
        key = re.sub(r'^norm\.', 'fc_norm.', re.sub(r'^head\.fc\.', 'head.', key))
        state[key] = value
    assert set(state) == release_swin_keys(SWIN['depths'], 56, 7)
    assert state['layers.0.blocks.1.attn_mask'].shape == (64, 49, 49)
    return model, state


def save_release_file(path, state):
    """MAE's ``save_model``: the model, optimiser, epoch, scaler and the pickled arguments."""
    torch.save({'model': state, 'optimizer': {'state': {}, 'param_groups': []}, 'epoch': 99,
                'scaler': {'scale': 65536.0}, 'args': argparse.Namespace(
                    model='vit_base_patch16', global_pool=True, input_size=224)}, path)
    return str(path)


@pytest.fixture(scope='module', params=['vit', 'swin'])
def release(request):
    """``(kind, release model, its state dict in the release's layout)``."""
    model, state = release_vit() if request.param == 'vit' else release_swin()
    return request.param, model, state


# --- conversion, evaluation with the fine-tuning configs ----------------------------------------
def image_folder(root):
    """Two labelled photos-to-be (random RGB of uneven sizes) in the ImageFolder layout."""
    rng = np.random.default_rng(0)
    for label, size in (('c0', (300, 260)), ('c1', (250, 330))):
        (root / 'val' / label).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
            root / 'val' / label / 'image.png')
    return root


def tiny_finetune_config(folder, kind):
    """configs/finetune/{vit_b,swin_b}_ft_100e.py at tiny widths, evaluating two images."""
    base = ROOT / 'configs' / 'finetune' / f'{kind}_b_ft_100e.py'
    arch = VIT if kind == 'vit' else SWIN
    data = image_folder(folder / 'data')
    config = folder / f'{kind}_tiny_ft.py'
    config.write_text(
        f'_base_ = [{str(base)!r}]\n'
        f'model = dict(backbone=dict(arch=dict(_delete_=True, **{arch!r})))\n'
        f'test_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, '
        f'pin_memory=False, dataset=dict(data_root={str(data)!r}))\n')
    return str(config)


def test_fine_tuned_file_converts_to_a_classifier_with_the_release_logits(
        release, tmp_path, capsys, from_reference, test_tool):
    kind, model, release_state = release
    path = save_release_file(tmp_path / f'{kind}_ft.pth', release_state)
    out = tmp_path / 'converted.pth'
    with pytest.raises(CheckpointError, match='Namespace.*--trust-checkpoint'):
        from_reference.main([path, str(out), '--backbone', kind])

    heads = ['--num-heads', str(VIT['num_heads'])] if kind == 'vit' else []
    from_reference.main([path, str(out), '--backbone', kind, '--trust-checkpoint', *heads])

    norm = 'head.fc_norm' if kind == 'vit' else 'backbone.norm'
    assert f'renamed: fc_norm -> {norm}, head -> head.fc' in capsys.readouterr().out

    converted = torch.load(out, weights_only=True)
    state = converted['state_dict']
    head = {key for key in state if key.startswith('head.')}
    if kind == 'vit':  # pooled, then normalised: the head's fc_norm; no backbone norm
        assert head == {'head.fc_norm.weight', 'head.fc_norm.bias', 'head.fc.weight',
                        'head.fc.bias'}
        assert not any(key.startswith('backbone.norm.') for key in state)
    else:  # normalised, then pooled: Swin's own final norm
        assert head == {'head.fc.weight', 'head.fc.bias'}
        assert torch.equal(state['backbone.norm.weight'], model.norm.weight)
    geometry = converted['meta']['geometry']
    assert geometry['num_classes'] == NUM_CLASSES and geometry['input_size'] == [224, 224]
    assert geometry['backbone']['type'] == ('VisionTransformer' if kind == 'vit'
                                            else 'SwinTransformer')

    # tools/test.py with the fine-tuning config evaluates the converted file ...
    config = tiny_finetune_config(tmp_path, kind)
    metrics = test_tool.main([config, str(out), '--work-dir', str(tmp_path / 'eval')])
    assert set(metrics) == {'accuracy/top1', 'accuracy/top5'}
    # ... and the model that config builds gives the release model's logits.
    cfg = Config.fromfile(config)
    cfg.merge_from_dict({'work_dir': str(tmp_path / 'logits'), 'load_from': str(out)})
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()
    classifier = runner.model.eval()
    assert set(classifier.state_dict()) <= set(state)  # everything loaded, nothing kept new
    batch = next(iter(runner.test_dataloader))
    with torch.no_grad():
        inputs = classifier.data_preprocessor(batch, False)['inputs']
        logits = classifier(inputs, mode='tensor')
        expected = model(inputs)
    assert logits.shape == (2, NUM_CLASSES) and expected.abs().max() > 1
    # Measured: ViT 1e-6, Swin 2e-5 on logits up to 13 (fastmim's Swin runs fused attention,
    # the release's and timm's reference Swin the explicit softmax(q k^T) v; 2e-6 with both
    # fused).
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=5e-5)


def test_wrong_backbone_flag_names_the_fine_tuned_layout(release, tmp_path, from_reference):
    kind, _, state = release
    path = save_release_file(tmp_path / f'{kind}_ft.pth', state)
    trust_checkpoint(path)
    other = 'swin' if kind == 'vit' else 'vit'
    with pytest.raises(CheckpointError, match=f'--backbone {other} was given, but the weights '
                       f'are a reference {kind}'):
        from_reference.main([path, str(tmp_path / 'out.pth'), '--backbone', other])


# --- downstream initialisation straight from the file -------------------------------------------
def config_backbone(config, arch, checkpoint, scope, **settings):
    """The backbone a downstream config builds (tiny widths, and ``settings``), initialised by
    its init_cfg."""
    cfg = Config.fromfile(str(config))
    backbone = cfg.model.backbone
    backbone.arch = dict(arch)
    backbone.update(settings)
    backbone.init_cfg.checkpoint = checkpoint
    init_default_scope(scope)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    model = registry.build(backbone)
    return model, backbone.init_cfg


def test_detection_swin_starts_from_the_fine_tuned_file_final_norm_included(tmp_path):
    """Compared with the release's classifier at 224 px under its windows: the detection
    config's always_partition also shifts the 7x7 last stage there, as mmdet does."""
    release_model, state = release_swin()
    path = save_release_file(tmp_path / 'swin_base_fastmim_hog_400e_finetune_100e.pth', state)
    backbone, init_cfg = config_backbone(DETECTION, SWIN, path, 'mmdet', always_partition=False)
    with pytest.raises(CheckpointError, match='--trust-checkpoint'):
        backbone.init_weights()
    trust_checkpoint(path)  # what --trust-checkpoint of tools/train.py does

    backbone.init_weights()  # the config's FastMIMPretrained

    summary = load_pretrained(backbone, path, prefix=init_cfg.prefix)
    assert summary.left_out == ['head.fc.bias', 'head.fc.weight']
    # The output norms for the FPN, which the backbone declares new (no allow_missing).
    assert sorted({key.split('.')[1] for key in summary.missing_allowed}) == ['0', '1', '2']
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        last = backbone.eval()(images)[-1]
        expected = release_model.forward_features(images)  # ends in the file's fc_norm
    torch.testing.assert_close(last, expected.permute(0, 3, 1, 2), rtol=1e-5, atol=1e-5)


def test_segmentation_vit_starts_from_the_fine_tuned_file(tmp_path):
    release_model, state = release_vit()
    path = save_release_file(tmp_path / 'vit_base_fastmim_hog_800e_finetune_100e.pth', state)
    trust_checkpoint(path)
    backbone, init_cfg = config_backbone(SEGMENTATION, VIT, path, 'mmseg')

    backbone.init_weights()

    summary = load_pretrained(backbone, path, prefix=init_cfg.prefix)
    # The blocks' raw outputs feed the neck (final_norm=False): the classifier, fc_norm
    # included, has no place here.
    assert summary.left_out == ['head.fc.bias', 'head.fc.weight', 'head.fc_norm.bias',
                                'head.fc_norm.weight']
    assert summary.resized == {'pos_embed': ((1, 197, 32), (1, 1025, 32))}
    # The release's blocks at 512 px, with MAE's interpolate_pos_embed (class token kept, the
    # 14 x 14 grid resized bicubically, align_corners=False, no anti-aliasing).
    images = torch.randn(1, 3, 512, 512)
    with torch.no_grad():
        grid = release_model.pos_embed[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
        grid = torch.nn.functional.interpolate(grid, size=(32, 32), mode='bicubic',
                                               align_corners=False)
        pos_embed = torch.cat([release_model.pos_embed[:, :1],
                               grid.permute(0, 2, 3, 1).reshape(1, 32 * 32, -1)], dim=1)
        tokens = release_model.patch_embed.proj(images).flatten(2).transpose(1, 2)
        tokens = torch.cat([release_model.cls_token, tokens], dim=1) + pos_embed
        expected = []
        for block in release_model.blocks:
            tokens = block(tokens)
            expected.append(tokens[:, 1:].transpose(1, 2).reshape(1, -1, 32, 32))
        outputs = backbone.eval()(images)
    assert len(outputs) == len(backbone.out_indices)
    for index, output in zip(backbone.out_indices, outputs):
        torch.testing.assert_close(output, expected[index], rtol=1e-5, atol=1e-5)


def test_vit_file_in_the_swin_config_is_one_error_naming_both(tmp_path):
    _, state = release_vit()
    path = save_release_file(tmp_path / 'vit_base_fastmim_hog_800e_finetune_100e.pth', state)
    trust_checkpoint(path)
    backbone, _ = config_backbone(DETECTION, SWIN, path, 'mmdet')
    with pytest.raises(CheckpointError) as error:
        backbone.init_weights()
    message = str(error.value)
    assert message.count('\n') == 0, message
    assert message.startswith(f'{path} holds a VisionTransformer backbone') and \
        'but the model is a SwinTransformer: give it a SwinTransformer checkpoint' in message
