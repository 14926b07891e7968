"""The published recipes (REFERENCE.md, 'Pre-training recipes') are what the configs say."""
import math
from pathlib import Path

import pytest
from mmengine.config import Config

from fastmim.registry import MODELS

CONFIGS = Path(__file__).resolve().parents[1] / 'configs' / 'fastmim'
IMAGENET_MEAN, IMAGENET_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
# name: (epochs, warmup, per-GPU batch, lr, block, decoder depth, window, backbone img_size)
PUBLISHED = {
    # The release's README commands for ViT-B and Swin-B.
    'vit_b_hog_800e.py': (800, 20, 512, 2.4e-3, 16, 1, None, 128),
    'swin_b_hog_400e.py': (400, 10, 256, 1.2e-3, 32, 4, 4, 128),
    # REFERENCE.md: 800 epochs at 128 px "the same way (stride 32, block 32)"; no command is
    # published, so batch, lr and decoder follow the ViT-B command (the configs say so).
    # fastmim's PVTv2 takes any input size (no img_size); the crop sets 128.
    'pvtv2_b2_hog_800e.py': (800, 20, 512, 2.4e-3, 32, 1, None, None),
    'cmt_s_hog_800e.py': (800, 20, 512, 2.4e-3, 32, 1, None, 128),
}


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_published_pretraining_recipe(name):
    epochs, warmup, batch, lr, block, depth, window, img_size = PUBLISHED[name]
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
    # main_pretrain.py: no gradient clipping, --accum_iter 1 in the published commands
    assert cfg.optim_wrapper.clip_grad is None and cfg.optim_wrapper.accumulative_counts == 1

    warmup_scheduler, cosine = cfg.param_scheduler
    assert warmup_scheduler.type == 'LinearLR' and warmup_scheduler.end == warmup
    assert warmup_scheduler.begin == 0 and cosine.begin == warmup
    assert cosine.type == 'CosineAnnealingLR' and cosine.eta_min == 0
    assert cosine.end == epochs and cosine.T_max == epochs - warmup
    assert warmup_scheduler.convert_to_iter_based and cosine.convert_to_iter_based

    # No decay on norms, biases and 1-D parameters, nor on the position embeddings, tokens and
    # relative-position tables the backbone and FastMIM declare (REFERENCE.md exempts CMT's
    # biases as well): tests/test_engine/test_declared_no_decay.py builds each recipe's groups.
    assert cfg.optim_wrapper.constructor == 'DeclaredNoDecayOptimWrapperConstructor'
    no_decay = cfg.optim_wrapper.paramwise_cfg
    assert no_decay.norm_decay_mult == no_decay.bias_decay_mult == no_decay.flat_decay_mult == 0
    assert 'custom_keys' not in no_decay  # the backbone knows its tables' names, not a list

    crop = next(t for t in cfg.train_dataloader.dataset.pipeline
                if t.type == 'RandomResizedCrop')
    assert crop.size == 128 and tuple(crop.scale) == (0.2, 1.0)
    assert crop.interpolation == 'bicubic'
    flip = next(t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandomFlip')
    assert flip.prob == 0.5 and flip.direction == 'horizontal'

    model = cfg.model
    # ImageNet mean / std on RGB images (main_pretrain.py's Normalize)
    preprocessor = model.data_preprocessor
    assert preprocessor.mean == IMAGENET_MEAN and preprocessor.std == IMAGENET_STD
    assert not preprocessor.bgr_to_rgb  # LoadImageRGB already gives RGB
    assert model.mask_ratio == 0.75 and model.block_size == block
    assert model.neck.embed_dim == 256 and model.neck.depth == depth
    # 8 heads (of 32 channels) in every block, the reference's width / 32
    neck = MODELS.build(dict(model.neck, in_channels=64, out_channels=27))
    assert [block.attn.num_heads for block in neck.blocks] == [8] * depth
    assert model.neck.mlp_ratio == 4
    assert model.target_generator == dict(type='HOGGenerator', nbins=9, cell_size=8,
                                          normalize=True)
    assert model.loss.type == 'MaskedMSELoss'  # MSE over the masked positions only
    assert model.backbone.get('img_size') == img_size
    assert model.backbone.get('window_size') == window


def test_vit_b_uses_twelve_heads():
    """The reference release pre-trains ViT-B with 6 heads by mistake; 12 is ViT-B."""
    import fastmim.models  # noqa: F401
    from fastmim.registry import MODELS
    backbone = Config.fromfile(str(CONFIGS / 'vit_b_hog_800e.py')).model.backbone
    vit = MODELS.build(backbone)
    assert all(block.attn.num_heads == 12 for block in vit.blocks)
    assert vit.embed_dim == 768 and len(vit.blocks) == 12


FINETUNE = Path(__file__).resolve().parents[1] / 'configs' / 'finetune'
# name: (lr at total batch 1024, layer decay, backbone type, head settings)
PUBLISHED_FINETUNING = {
    'vit_b_ft_100e.py': (6e-4 * 1024 / 256, 0.70, 'VisionTransformer',
                         dict(type='LinearClsHead', pre_norm='ln')),
    'swin_b_ft_100e.py': (1e-3 * 1024 / 256, 0.80, 'SwinTransformer',
                          dict(type='LinearClsHead', pre_norm=None)),
    'pvtv2_b2_ft_100e.py': (1e-3 * 1024 / 256, 0.75, 'PyramidVisionTransformerV2',
                            dict(type='LinearClsHead', pre_norm=None)),
    # The release's CMT classifier (mim_cmt_finetune.py): 1x1 conv to 1280, BN, swish, pooling,
    # dropout 0.1, linear.
    'cmt_s_ft_100e.py': (1e-3 * 1024 / 256, 0.75, 'CMT',
                         dict(type='ConvPoolClsHead', mid_channels=1280, drop_rate=0.1)),
}


@pytest.mark.parametrize('name', sorted(PUBLISHED_FINETUNING))
def test_published_finetuning_recipe(name):
    """REFERENCE.md, 'Fine-tuning recipes': every recipe sets its lr and layer decay only; the
    shared schedule warms up 5 epochs and ends at min lr 1e-6 whatever the lr."""
    lr, layer_decay, backbone, head = PUBLISHED_FINETUNING[name]
    cfg = Config.fromfile(str(FINETUNE / name))

    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(lr)
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == layer_decay
    assert cfg.auto_scale_lr.base_batch_size == 1024 and cfg.train_cfg.max_epochs == 100
    warmup_scheduler, cosine = cfg.param_scheduler
    assert warmup_scheduler.type == 'LinearLR' and warmup_scheduler.end == 5
    assert cosine.type == 'CosineAnnealingToMinLR' and cosine.eta_min == 1e-6
    assert (cosine.begin, cosine.end, cosine.T_max) == (5, 100, 95)

    model = cfg.model
    assert model.backbone.type == backbone and model.backbone.drop_path_rate == 0.1
    assert model.backbone.init_cfg.type == 'FastMIMPretrained'
    assert {key: model.head[key] for key in head} == head and model.head.init_std == 2e-5
    preprocessor = model.data_preprocessor
    assert preprocessor.label_smoothing == 0.1 and preprocessor.random_erasing.probability == 0.25
    assert (preprocessor.mixup.mixup_alpha, preprocessor.mixup.cutmix_alpha) == (0.8, 1.0)


@pytest.mark.parametrize('name', sorted(PUBLISHED_FINETUNING))
def test_shared_finetuning_settings(name):
    """REFERENCE.md, 'Fine-tuning recipes', 'Shared', with the values of the release's
    commands (--batch_size 128 on 8 GPUs, --weight_decay 0.05) and, for the rest, of its
    main_finetune.py defaults: 224 px, AdamW (0.9, 0.999), fp16, no clipping, no EMA;
    timm's training transform (crop scale 0.08-1, bicubic, flip, RandAugment
    rand-m9-mstd0.5-inc1), Mixup(prob 1.0, switch 0.5, mode 'batch'), RandomErasing(pixel, 1
    box); evaluation: shorter side 224 / 0.875 = 256 (bicubic), centre crop 224."""
    cfg = Config.fromfile(str(FINETUNE / name))

    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'AdamW' and tuple(optimizer.betas) == (0.9, 0.999)
    assert optimizer.weight_decay == 0.05
    assert cfg.optim_wrapper.type == 'GuardedAmpOptimWrapper'
    assert cfg.optim_wrapper.constructor == 'LayerDecayOptimWrapperConstructor'
    assert cfg.optim_wrapper.clip_grad is None
    assert cfg.optim_wrapper.get('accumulative_counts', 1) == 1
    assert not any(hook.type == 'EMAHook' for hook in cfg.get('custom_hooks', []))
    assert cfg.train_dataloader.batch_size * 8 == 1024 and cfg.train_dataloader.drop_last

    train = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    crop = train['RandomResizedCrop']
    assert crop.size == 224 and tuple(crop.scale) == (0.08, 1.0)
    assert crop.interpolation == 'bicubic'
    assert train['RandomFlip'].prob == 0.5 and train['RandomFlip'].direction == 'horizontal'
    augment = train['RandAugment']
    assert augment.config_str == 'rand-m9-mstd0.5-inc1' and augment.img_size == 224
    assert augment.interpolation == 'bicubic'
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        evaluation = next(t for t in loader.dataset.pipeline
                          if t.type == 'ResizeShorterCenterCrop')
        assert evaluation.crop_size == 224 and evaluation.crop_pct == 0.875
        assert evaluation.interpolation == 'bicubic'

    preprocessor = cfg.model.data_preprocessor
    assert preprocessor.mean == IMAGENET_MEAN and preprocessor.std == IMAGENET_STD
    mixup = preprocessor.mixup
    assert (mixup.prob, mixup.switch_prob, mixup.mode) == (1.0, 0.5, 'batch')
    erasing = preprocessor.random_erasing
    assert (erasing.mode, erasing.max_count) == ('pixel', 1)
    # fastmim's PVTv2 takes any input size; the others are built for 224 px, Swin with window 7.
    backbone = cfg.model.backbone
    assert backbone.get('img_size') == (None if 'PyramidVision' in backbone.type else 224)
    assert backbone.get('window_size') == (7 if backbone.type == 'SwinTransformer' else None)


@pytest.mark.parametrize('path', sorted(CONFIGS.rglob('*.py')), ids=lambda path: path.name)
def test_pretraining_configs_leave_the_work_dir_to_the_config_name(path):
    """An ablation inherits a recipe or the demo; a work_dir set there is inherited too, so two
    ablations of the demo wrote the same work_dirs/demo, the second deleting the first's
    checkpoints (and --resume continuing the other's run). Without it each config trains in
    work_dirs/<its own name>; make demo names work_dirs/demo itself (tools/demo.py)."""
    assert 'work_dir' not in Config.fromfile(str(path))


def mae_lr(step, steps_per_epoch, lr, min_lr, warmup_epochs, epochs):
    """MAE's ``util/lr_sched.adjust_learning_rate`` (used by the release's pre-training and
    fine-tuning), written out: per iteration, linear from 0 over the warm-up epochs, then a
    half-cycle cosine to ``min_lr``."""
    epoch = step / steps_per_epoch
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    progress = (epoch - warmup_epochs) / (epochs - warmup_epochs)
    return min_lr + (lr - min_lr) * 0.5 * (1. + math.cos(math.pi * progress))


@pytest.mark.parametrize('path, min_lr', [
    *(pytest.param(CONFIGS / name, 0., id=name) for name in sorted(PUBLISHED)),
    *(pytest.param(FINETUNE / name, 1e-6, id=name) for name in sorted(PUBLISHED_FINETUNING))])
def test_every_iterations_lr_is_maes(path, min_lr, load_script):
    """The whole schedule, built as the Runner builds it (20 iterations per epoch), against
    MAE's: the warm-up's start and the cosine's end are what the release trains with. mmengine's
    LinearLR starts at ``start_factor`` x lr, not at 0, and reaches the full lr at the warm-up's
    last iteration, not the one after: off by 1e-4 + 1 / (warm-up iterations) of the lr at most
    (1 / 6240 in ViT-B's pre-training on ImageNet)."""
    lr_at_every_iteration = load_script(
        Path(__file__).parent / 'test_engine' / 'test_schedulers.py').lr_at_every_iteration
    cfg = Config.fromfile(str(path))
    lr, steps_per_epoch = cfg.optim_wrapper.optimizer.lr, 20
    warmup_epochs, epochs = cfg.param_scheduler[0].end, cfg.train_cfg.max_epochs
    lrs = lr_at_every_iteration(cfg, lr, steps_per_epoch)
    expected = [mae_lr(step, steps_per_epoch, lr, min_lr, warmup_epochs, epochs)
                for step in range(len(lrs))]
    warmup_steps = warmup_epochs * steps_per_epoch
    assert lrs == pytest.approx(expected, rel=1e-9, abs=(1e-4 + 1 / warmup_steps) * lr)


def test_knn_recipe_is_dinos():
    """DINO's kNN protocol (eval_knn.py: k 20 reported, temperature 0.07, 256 bicubic resize
    then centre crop 224), which the kNN config names as its settings."""
    cfg = Config.fromfile(str(CONFIGS.parent / 'knn' / 'vit_b_knn.py'))
    assert cfg.model.type == 'KNNClassifier'
    assert cfg.model.k == 20 and cfg.model.temperature == 0.07
    for loader in (cfg.bank_dataloader, cfg.test_dataloader):
        evaluation = next(t for t in loader.dataset.pipeline
                          if t.type == 'ResizeShorterCenterCrop')
        assert (evaluation.crop_size, evaluation.crop_pct) == (224, 0.875)  # 224 / 0.875 = 256
        assert evaluation.interpolation == 'bicubic'
