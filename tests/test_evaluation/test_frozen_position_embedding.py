"""Frozen evaluation at 224 px (kNN, linear probe) sees the pre-training checkpoint's position
table resized from the 8x8 grid of 128 px to 14x14, as fine-tuning and the reference release's
only route to 224 px (MAE's ``util/pos_embed.interpolate_pos_embed``) do: a sin-cos table
recomputed at 14x14 gives the encoder positions 8..13 that pre-training never showed it."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from fastmim.registry import MODELS

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'
PRETRAINING_GRID, EVALUATION_GRID = 8, 14
# ViT-B's width and depth play no part in the position table's handling and only cost time.
SMALL_ARCH = dict(embed_dim=64, depth=1, num_heads=2)


def mae_interpolate_pos_embed(pos_embed: torch.Tensor, new_size: int) -> torch.Tensor:
    """MAE's interpolate_pos_embed (main_finetune.py / main_linprobe.py): the class-token row
    kept as it is, the patch rows as an NCHW map resized bicubically, align_corners=False."""
    extra_tokens = pos_embed[:, :1]
    channels = pos_embed.shape[-1]
    old_size = int((pos_embed.shape[1] - 1) ** 0.5)
    tokens = pos_embed[:, 1:].reshape(-1, old_size, old_size, channels).permute(0, 3, 1, 2)
    tokens = F.interpolate(tokens, size=(new_size, new_size), mode='bicubic',
                           align_corners=False)
    return torch.cat((extra_tokens, tokens.permute(0, 2, 3, 1).flatten(1, 2)), dim=1)


@pytest.fixture(scope='module')
def pretraining_checkpoint(tmp_path_factory):
    """The backbone of the 128-px ViT pre-training config (smaller) as its checkpoint holds it
    (its fixed 8x8 sin-cos table), with a non-zero class-token row so that the row's handling
    shows."""
    cfg = Config.fromfile(str(CONFIGS / '_base_' / 'models' / 'fastmim_vit_b.py'))
    cfg.model.backbone.arch = SMALL_ARCH
    backbone = MODELS.build(cfg.model.backbone)
    assert tuple(backbone.patch_embed.grid_size) == (PRETRAINING_GRID, PRETRAINING_GRID)
    state = {f'backbone.{key}': value for key, value in backbone.state_dict().items()}
    state['backbone.pos_embed'][0, 0] = torch.linspace(-0.5, 0.5, backbone.embed_dim)
    path = tmp_path_factory.mktemp('pretrain') / 'epoch_800.pth'
    torch.save(dict(state_dict=state, meta=dict(geometry=dict(backbone=backbone.geometry()))),
               path)
    return path


def build(config: str, checkpoint: Path):
    cfg = Config.fromfile(str(CONFIGS / config))
    cfg.model.backbone.arch = SMALL_ARCH
    if cfg.model.backbone.get('init_cfg'):
        cfg.model.backbone.init_cfg.checkpoint = str(checkpoint)
    return MODELS.build(cfg.model)


def test_knn_sees_the_checkpoints_table_resized(pretraining_checkpoint):
    """tools/test.py loads the checkpoint into the whole model (mmengine's load_checkpoint)."""
    model = build('knn/vit_b_knn.py', pretraining_checkpoint)
    load_checkpoint(model, str(pretraining_checkpoint), map_location='cpu')
    expected = mae_interpolate_pos_embed(
        torch.load(pretraining_checkpoint, weights_only=True)['state_dict']['backbone.pos_embed'],
        EVALUATION_GRID)
    torch.testing.assert_close(model.backbone.pos_embed.detach(), expected)


@pytest.mark.parametrize('config', ['finetune/vit_b_linear_probe_90e.py',
                                    'finetune/vit_b_ft_100e.py'])
def test_linear_probe_sees_the_table_fine_tuning_sees(pretraining_checkpoint, config):
    """The probe's init_cfg (FastMIMPretrained) loads it; fine-tuning is the control."""
    model = build(config, pretraining_checkpoint)
    model.init_weights()
    expected = mae_interpolate_pos_embed(
        torch.load(pretraining_checkpoint, weights_only=True)['state_dict']['backbone.pos_embed'],
        EVALUATION_GRID)
    torch.testing.assert_close(model.backbone.pos_embed.detach(), expected)
    # The probe's backbone is frozen, its position table included; fine-tuning trains it.
    assert model.backbone.pos_embed.requires_grad == (not model.frozen_backbone)
