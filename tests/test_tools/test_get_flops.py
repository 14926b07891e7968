"""tools/analysis/get_flops.py: parameters and forward multiply-adds of a config's model, checked
against timm's ViT-B/16 built independently, the closed-form count of a ViT's multiply-adds and
the published figure (ViT-B/16 at 224 px: 17.6 GMACs, timm's and DeiT's "FLOPs")."""
from pathlib import Path

import pytest
import timm

from fastmim.engine.config_loading import load_config
from fastmim.engine.launch import run_cli

ROOT = Path(__file__).resolve().parents[2]
VIT_B_FT = str(ROOT / 'configs' / 'finetune' / 'vit_b_ft_100e.py')
VIT_B_PRETRAIN = str(ROOT / 'configs' / 'fastmim' / 'vit_b_hog_800e.py')
SEGMENTATION = str(ROOT / 'projects' / 'segmentation' / 'configs' /
                   'upernet_fastmim_vit_b_ade20k_512x512_160k.py')
DETECTION = str(ROOT / 'projects' / 'detection' / 'configs' /
                'mask_rcnn_fastmim_swin_b_fpn_3x_coco.py')


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


def test_a_downstream_config_s_own_input_size(get_flops):
    """mmseg's crop (its data preprocessor pads every input to it); mmdet's pipelines resize
    each image to a size of its own: --shape is asked for."""
    assert get_flops.input_size(load_config(SEGMENTATION), None, False) == (
        (512, 512), 'model.data_preprocessor.size')
    with pytest.raises(ValueError, match='give --shape'):
        get_flops.input_size(load_config(DETECTION), None, False)


def test_a_downstream_backbone_is_counted_alone(get_flops, capsys):
    rows = rows_by_name(get_flops.main([SEGMENTATION, '--shape', '64', '--cfg-options',
                                        'model.backbone.arch.depth=4',
                                        'model.backbone.out_indices=(1,3)']))
    assert 'model: fastmim.VisionTransformer (the backbone of EncoderDecoder, counted alone)' \
        in capsys.readouterr().out
    assert rows[''][2] == pytest.approx(vit_macs(16, depth=4) / 1e9, rel=1e-6)


@pytest.mark.parametrize('argv, message', [
    (['configs/finetune/no_such.py'], 'no_such.py'),
    (['fastmim::finetune/no_such.py'], 'no_such.py'),
    ([VIT_B_FT, '--cfg-options', 'model.backbone.no_such_arg=1'], 'no_such_arg'),
])
def test_errors_are_one_line(get_flops, capsys, argv, message):
    with pytest.raises(SystemExit):
        run_cli(get_flops.main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('error: ') and message in err[-1], err
    assert not any('Traceback' in line for line in err)


def test_shape_takes_one_or_two_numbers(get_flops, capsys):
    with pytest.raises(SystemExit):
        get_flops.parse_args([VIT_B_FT, '--shape', '1', '2', '3'])
    assert 'expected H or H W' in capsys.readouterr().err
