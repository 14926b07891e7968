"""tools/analysis/get_flops.py: parameters and forward multiply-adds of a config's model, checked
against timm's ViT-B/16 built independently, the closed-form count of a ViT's multiply-adds and
the published figure (ViT-B/16 at 224 px: 17.6 GMACs, timm's and DeiT's "FLOPs"); for the
downstream configs, the whole Mask R-CNN / UperNet against mmdet's / mmseg's model built apart
and closed-form counts of its heads."""
from pathlib import Path

import importlib

import pytest
import timm
from mmengine.config import Config

from fastmim.engine.config_loading import load_config
from fastmim.cli import run_cli
from fastmim.engine.launch import replace_sync_bn

ROOT = Path(__file__).resolve().parents[2]
VIT_B_FT = str(ROOT / 'configs' / 'finetune' / 'vit_b_ft_100e.py')
VIT_B_PRETRAIN = str(ROOT / 'configs' / 'fastmim' / 'vit_b_hog_800e.py')
SEGMENTATION = str(ROOT / 'projects' / 'segmentation' / 'configs' /
                   'upernet_fastmim_vit_b_ade20k_512x512_160k.py')
DETECTION = str(ROOT / 'projects' / 'detection' / 'configs' /
                'mask_rcnn_fastmim_swin_b_fpn_3x_coco.py')
VITDET = str(ROOT / 'projects' / 'detection' / 'configs' /
             'mask_rcnn_fastmim_vit_b_simple_fpn_lsj_coco.py')
# Narrow backbones (the heads keep their widths), so that a CPU counts the whole model quickly.
TINY_SWIN = {'model.backbone.arch.embed_dim': 32, 'model.backbone.arch.depths': (2, 2, 2, 2),
             'model.backbone.arch.num_heads': (1, 2, 4, 8),
             'model.neck.in_channels': [32, 64, 128, 256]}
# 4 blocks of width 64, each feeding the neck.
TINY_UPERNET = {'model.backbone.arch.embed_dim': 64, 'model.backbone.arch.num_heads': 2,
                'model.backbone.arch.depth': 4, 'model.backbone.out_indices': (0, 1, 2, 3),
                'model.neck.embed_dim': 64, 'model.decode_head.in_channels': [64, 64, 64, 64],
                'model.decode_head.channels': 64, 'model.auxiliary_head.in_channels': 64,
                'model.auxiliary_head.channels': 32}


@pytest.fixture
def get_flops(load_script):
    return load_script(ROOT / 'tools' / 'analysis' / 'get_flops.py')


def vit_macs(tokens, width=768, depth=12, patch=16, final_norm=False):
    """Multiply-adds of a ViT on ``tokens`` patches (+ the class token): the patch embedding,
    and per block the qkv, projection and MLP (12 N d^2), the two attention products (2 N^2 d)
    and two LayerNorms, which mmengine counts as 5 operations per element."""
    n = tokens + 1
    norms = 2 * depth + final_norm
    return (tokens * 3 * patch * patch * width + depth * (12 * n * width**2 + 2 * n * n * width)
            + norms * 5 * n * width)


def rows_by_name(rows):
    return {name: (params, trainable, gmacs) for name, params, trainable, gmacs in rows}


def test_vit_b_fine_tuning_counts_are_timm_s_vit_b(get_flops, capsys):
    rows = rows_by_name(get_flops.main([VIT_B_FT]))
    out = capsys.readouterr().out
    assert 'input: 1 x 3 x 224 x 224 (train_dataloader.dataset.pipeline.' in out
    assert 'one multiply-add = one op' in out
    # The classifier is timm's ViT-B/16 with average pooling and fc_norm (MAE's fine-tuning).
    reference = timm.create_model('vit_base_patch16_224', global_pool='avg', fc_norm=True,
                                  num_classes=1000)
    total = sum(p.numel() for p in reference.parameters())
    head = sum(p.numel() for module in (reference.head, reference.fc_norm)
               for p in module.parameters())
    params, trainable, gmacs = rows['']
    assert params == trainable == total  # 86.57M
    assert rows['backbone'][0] == total - head  # 85.80M
    assert rows['backbone'][2] == pytest.approx(vit_macs(196) / 1e9, rel=1e-6)
    assert gmacs == pytest.approx(17.6, rel=0.02)


def test_pre_training_counts_the_masked_forward_and_its_parts(get_flops, capsys):
    rows = rows_by_name(get_flops.main([VIT_B_PRETRAIN]))
    assert 'input: 1 x 3 x 128 x 128' in capsys.readouterr().out
    assert set(rows) >= {'', 'backbone', 'neck'}
    # The backbone on 8 x 8 tokens: a third of its fine-tuning cost at 224 px.
    assert rows['backbone'][2] == pytest.approx(vit_macs(64, final_norm=True) / 1e9,
                                                rel=1e-6)
    assert rows[''][2] > rows['backbone'][2] + rows['neck'][2] * 0.99
    # timm's ViT-B/16 built for 128 px (8 x 8 + 1 position rows), with its final norm.
    reference = timm.create_model('vit_base_patch16_224', img_size=128, num_classes=0)
    assert rows['backbone'][0] == sum(p.numel() for p in reference.parameters())  # 85.70M
    # FastMIM's published estimate of its ViT-B forward (encoder + decoder at 128 px): 5.7.
    assert rows[''][2] == pytest.approx(5.7, rel=0.01)


def test_shape_counts_at_another_size(get_flops, capsys):
    rows = rows_by_name(get_flops.main([VIT_B_FT, '--shape', '160', '--cfg-options',
                                        'model.backbone.arch=s']))
    assert 'input: 1 x 3 x 160 x 160 (--shape)' in capsys.readouterr().out
    assert rows['backbone'][2] == pytest.approx(
        vit_macs(100, width=384) / 1e9, rel=1e-6)


def test_a_linear_probe_trains_the_head_alone(get_flops):
    rows = rows_by_name(get_flops.main([
        str(ROOT / 'configs' / 'finetune' / 'vit_b_linear_probe_90e.py'), '--shape', '32',
        '--cfg-options', 'model.backbone.arch=s']))
    assert rows['backbone'][1] == 0
    assert rows[''][1] == rows['head'][1] > 0


def cli_options(overrides):
    return ['--cfg-options'] + [f'{key}={value}'.replace(' ', '') for key, value in
                                overrides.items()]


def library_model(config, overrides, scope):
    """The config's model built by mmdet's or mmseg's own registry (SyncBN as BN), apart from
    the tool: the reference its parameter counts are checked against."""
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(overrides)
    replace_sync_bn(cfg.model)
    init_default_scope(scope)
    return importlib.import_module(f'{scope}.registry').MODELS.build(cfg.model)


def parameters(module):
    return sum(p.numel() for p in module.parameters())


def test_a_downstream_config_s_own_input_size(get_flops):
    """mmseg: its crop (mmseg's data preprocessor pads every input to it). mmdet: the largest
    image of the test Resize, a landscape one of its aspect ratio, padded to a multiple of 32 as
    mmdet's data preprocessor pads it."""
    assert get_flops.input_size(load_config(SEGMENTATION), None) == (
        (512, 512), 'model.data_preprocessor.size')
    detection = load_config(DETECTION)
    # The reference's test scale, fit into 1666 x 1024: 1024 x 1666, padded to 1024 x 1696.
    assert get_flops.input_size(detection, None) == (
        (1024, 1696), 'test_dataloader.dataset.pipeline.1.scale (Resize), 1024 x 1666 padded '
        'to a multiple of 32 (model.data_preprocessor.pad_size_divisor)')
    assert get_flops.input_size(detection, [100, 150]) == (
        (128, 160), '--shape, 100 x 150 padded to a multiple of 32 '
        '(model.data_preprocessor.pad_size_divisor)')
    # mmdet's own test scale, 1333 x 800: the 800 x 1333 image of its FLOPs tables.
    detection.test_dataloader.dataset.pipeline[1].scale = (1333, 800)
    assert get_flops.input_size(detection, None)[0] == (800, 1344)
    assert get_flops.input_size(load_config(VITDET), None) == (
        (1024, 1024), 'test_dataloader.dataset.pipeline.1.scale (Resize)')
    no_size = Config(dict(model=dict(type='MaskRCNN', backbone=dict(type='X'))))
    with pytest.raises(ValueError, match='give --shape'):
        get_flops.input_size(no_size, None)


def test_mask_rcnn_is_counted_whole(get_flops, capsys):
    """Every part of mmdet's Mask R-CNN, its RoI heads on the config's number of proposals: the
    parameters are those of mmdet's model built apart, part by part; the RPN's and RoI heads'
    multiply-adds their closed forms (256 channels, 3 anchors, 80 classes)."""
    overrides = {**TINY_SWIN, 'model.test_cfg.rpn.max_per_img': 4}
    rows = rows_by_name(get_flops.main([DETECTION, '--shape', '64', *cli_options(overrides)]))
    out = capsys.readouterr().out
    assert 'model: MaskRCNN of mmdet, backbone fastmim.SwinTransformer' in out
    assert 'RoI heads on 4 proposals (model.test_cfg.rpn.max_per_img)' in out

    reference = library_model(DETECTION, overrides, 'mmdet')
    parts = ('backbone', 'neck', 'rpn_head', 'roi_head', 'roi_head.bbox_head',
             'roi_head.mask_head')
    for part in parts:
        assert rows[part][0] == rows[part][1] == parameters(reference.get_submodule(part)), part
    assert rows[''][0] == parameters(reference) == sum(rows[part][0] for part in parts[:4])

    # RPN: two 3x3 convs and the 1x1 objectness (3) and box (12) convs on the five FPN levels
    # of a 64-px image (strides 4 to 64: 16^2 + 8^2 + 4^2 + 2^2 + 1 positions).
    positions, c = 341, 256
    assert rows['rpn_head'][2] * 1e9 == pytest.approx(positions * (2 * 9 * c * c + 15 * c),
                                                      rel=1e-9)
    # Per RoI, the box head: four 3x3 convs + BN (2 ops per element in eval) on 7x7, fc 1024,
    # 81 scores and 80 x 4 deltas; the mask head: four 3x3 convs + BN on 14x14, a 2x2 stride-2
    # transposed conv, 80 1x1 mask logits on 28x28.
    box = 4 * (9 * c * c * 49 + 2 * c * 49) + 49 * c * 1024 + 1024 * (81 + 320)
    mask = 4 * (9 * c * c * 196 + 2 * c * 196) + 196 * c * c * 4 + 784 * c * 80
    assert rows['roi_head.bbox_head'][2] * 1e9 == pytest.approx(4 * box, rel=1e-9)
    assert rows['roi_head.mask_head'][2] * 1e9 == pytest.approx(4 * mask, rel=1e-9)


def test_upernet_is_counted_whole(get_flops, capsys):
    """mmseg's UperNet: backbone, neck, decode head, and the auxiliary head's parameters
    (training only: no multiply-adds in the inference forward), against mmseg's model built
    apart and the closed forms of the ViT and of the neck's and auxiliary head's parameters."""
    rows = rows_by_name(get_flops.main([SEGMENTATION, '--shape', '64',
                                        *cli_options(TINY_UPERNET)]))
    out = capsys.readouterr().out
    assert 'model: EncoderDecoder of mmseg, backbone fastmim.VisionTransformer' in out
    assert "mmseg's auxiliary head trains only" in out

    reference = library_model(SEGMENTATION, TINY_UPERNET, 'mmseg')
    parts = ('backbone', 'neck', 'decode_head', 'auxiliary_head')
    for part in parts:
        assert rows[part][0] == parameters(reference.get_submodule(part)), part
    assert rows[''][0] == parameters(reference) == sum(rows[part][0] for part in parts)
    # Feature2Pyramid at width 64: three 2x2 transposed convs with bias, one BatchNorm.
    assert rows['neck'][0] == 3 * (64 * 64 * 4 + 64) + 2 * 64
    # FCN auxiliary head: 3x3 conv 64 -> 32 without bias, BatchNorm, 1x1 conv to 150 classes.
    assert rows['auxiliary_head'][0] == 9 * 64 * 32 + 2 * 32 + 32 * 150 + 150
    assert rows['auxiliary_head'][2] == 0
    assert rows['backbone'][2] == pytest.approx(vit_macs(16, width=64, depth=4) / 1e9,
                                                rel=1e-6)
    assert rows[''][2] > rows['backbone'][2] + rows['neck'][2]


@pytest.mark.parametrize('argv, message', [
    (['configs/finetune/no_such.py'], 'no_such.py'),
    (['fastmim::finetune/no_such.py'], 'no_such.py'),
    (['projects/detection/configs/no_such_mask_rcnn.py'], 'no_such_mask_rcnn.py'),
    ([VIT_B_FT, '--cfg-options', 'model.backbone.no_such_arg=1'], 'no_such_arg'),
    # mmpretrain's spelling reached timm as an unexpected keyword of its constructor.
    (['configs/fastmim/demo_vit_tiny_embedded.py', '--cfg-options',
      'model.backbone.arch.embed_dims=96'],
     "arch dict {'embed_dim': 192, 'depth': 6, 'num_heads': 3, 'embed_dims': 96} has unknown "
     "keys ['embed_dims'] (did you mean 'embed_dim'?)"),
    # A _base_ fragment: 'ConfigDict' object has no attribute 'model', in a traceback.
    (['configs/_base_/default_runtime.py'], 'sets no `model`: a `_base_` fragment'),
])
def test_errors_are_one_line(get_flops, capsys, argv, message):
    with pytest.raises(SystemExit):
        run_cli(get_flops.main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('error: ') and message in err[-1], err
    assert not any('Traceback' in line for line in err)


def test_a_shape_the_model_cannot_take_names_shape(get_flops, capsys):
    """The error told a user who gave --shape to change the pipeline's RandomResizedCrop size;
    without --shape that is where the size comes from."""
    demo = 'configs/fastmim/demo_vit_tiny_embedded.py'
    with pytest.raises(SystemExit):
        run_cli(get_flops.main, [demo, '--shape', '100'])
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        'error: ValueError: input 100x100 is not a multiple of the mask block_size=16 '
        '(model.block_size); make the input size (--shape) a multiple of 16')


def test_a_shape_the_fine_tuning_backbone_cannot_take_names_shape(get_flops, capsys):
    """A classifier has no size check of its own: the backbone's error came from inside the
    trace, showing the traced tensors (tensor(1), tensor(3), tensor(100), tensor(100)) and no
    --shape."""
    fine_tune = 'configs/finetune/demo_vit_tiny_embedded_ft.py'
    with pytest.raises(SystemExit):
        run_cli(get_flops.main, [fine_tune, '--shape', '100'])
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        'error: ValueError: input 100x100 is not a multiple of the backbone patch size 16 '
        '(model.backbone.patch_size); make the input size (--shape) a multiple of 16')


def test_shape_takes_one_or_two_numbers(get_flops, capsys):
    with pytest.raises(SystemExit):
        get_flops.parse_args([VIT_B_FT, '--shape', '1', '2', '3'])
    assert 'expected H or H W' in capsys.readouterr().err
