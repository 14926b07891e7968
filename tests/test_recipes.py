"""The published recipes (REFERENCE.md, 'Pre-training recipes') are what the configs say."""
from pathlib import Path

import pytest
from mmengine.config import Config

CONFIGS = Path(__file__).resolve().parents[1] / 'configs' / 'fastmim'
# name: (epochs, warmup, per-GPU batch, lr, block, decoder depth, window)
PUBLISHED = {
    'vit_b_hog_800e.py': (800, 20, 512, 2.4e-3, 16, 1, None),
    'swin_b_hog_400e.py': (400, 10, 256, 1.2e-3, 32, 4, 4),
}


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_published_pretraining_recipe(name):
    epochs, warmup, batch, lr, block, depth, window = PUBLISHED[name]
    cfg = Config.fromfile(str(CONFIGS / name))

    assert cfg.train_cfg.max_epochs == epochs
    assert cfg.train_dataloader.batch_size == batch
    optimizer = cfg.optim_wrapper.optimizer
    # base lr 1.5e-4 per 256 images, total batch over the published 8 GPUs
    assert optimizer.type == 'AdamW' and optimizer.lr == pytest.approx(lr)
    assert lr == pytest.approx(1.5e-4 * batch * 8 / 256)
    assert cfg.auto_scale_lr.base_batch_size == batch * 8
    assert tuple(optimizer.betas) == (0.9, 0.95) and optimizer.weight_decay == 0.05
    assert cfg.optim_wrapper.type == 'GuardedAmpOptimWrapper'  # fp16 autocast on GPUs

    warmup_scheduler, cosine = cfg.param_scheduler
    assert warmup_scheduler.type == 'LinearLR' and warmup_scheduler.end == warmup
    assert cosine.type == 'CosineAnnealingLR' and cosine.eta_min == 0
    assert cosine.end == epochs and cosine.T_max == epochs - warmup
    assert warmup_scheduler.convert_to_iter_based and cosine.convert_to_iter_based

    no_decay = cfg.optim_wrapper.paramwise_cfg
    assert no_decay.norm_decay_mult == no_decay.bias_decay_mult == no_decay.flat_decay_mult == 0
    for key in ('pos_embed', 'cls_token', 'mask_token', 'relative_position_bias_table'):
        assert no_decay.custom_keys[key].decay_mult == 0

    crop = next(t for t in cfg.train_dataloader.dataset.pipeline
                if t.type == 'RandomResizedCrop')
    assert crop.size == 128 and tuple(crop.scale) == (0.2, 1.0)
    assert crop.interpolation == 'bicubic'
    assert any(t.type == 'RandomFlip' for t in cfg.train_dataloader.dataset.pipeline)

    model = cfg.model
    assert model.mask_ratio == 0.75 and model.block_size == block
    assert model.neck.embed_dim == 256 and model.neck.depth == depth
    assert model.neck.num_heads == 8 and model.neck.mlp_ratio == 4
    assert model.target_generator == dict(type='HOGGenerator', nbins=9, cell_size=8,
                                          normalize=True)
    assert model.backbone.img_size == 128
    if window is not None:
        assert model.backbone.window_size == window


def test_vit_b_uses_twelve_heads():
    """The reference release pre-trains ViT-B with 6 heads by mistake; 12 is ViT-B."""
    import fastmim.models  # noqa: F401
    from fastmim.registry import MODELS
    backbone = Config.fromfile(str(CONFIGS / 'vit_b_hog_800e.py')).model.backbone
    vit = MODELS.build(backbone)
    assert all(block.attn.num_heads == 12 for block in vit.blocks)
    assert vit.embed_dim == 768 and len(vit.blocks) == 12
