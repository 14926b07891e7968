# Linear probing of a FastMIM ViT-B/16 pre-training checkpoint on ImageNet-1k: the backbone is
# frozen (eval mode, no gradients) and only BatchNorm(affine=False) + a linear layer train, for
# 90 epochs at 224 px. MAE's recipe (main_linprobe.py), with two substitutions:
#   MAE: LARS (momentum 0.9, trust coefficient 0.001), base lr 0.1 per 256 at total batch 16384
#        (lr 6.4), weight decay 0, 10 warmup epochs then cosine, head init trunc-normal std 0.01,
#        RandomResizedCrop 224 + flip only (no RandAugment, mixup, cutmix, erasing, smoothing),
#        class-token features, evaluation crop 256 -> 224.
#   here: torch has no LARS, so SGD (momentum 0.9, weight decay 0) with the same base lr,
#        0.1 x 1024 / 256 = 0.4 at a total batch of 1024 (128 x 8 GPUs), a batch plain SGD
#        handles without LARS's per-layer scaling. Features: the pre-trained final norm on every
#        patch token, then their average (FastMIM's decoder drops the class token, so only patch
#        tokens are trained to carry the image; model.backbone.out_type=cls_token is MAE's
#        choice).
# Position embedding: the checkpoint's table, resized from pre-training's 8x8 grid to 14x14 when
# it loads (bicubic, class-token row kept), as fine-tuning and MAE's main_linprobe.py
# (interpolate_pos_embed) do; frozen with the rest of the backbone. pos_embed_type='learned' is
# what loads it: 'sincos' would recompute the table at positions 0..13, of which pre-training at
# 128 px saw only 0..7.
#   tools/dist_train.sh configs/finetune/vit_b_linear_probe_90e.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PATH/TO/epoch_800.pth
_base_ = [
    '../_base_/datasets/imagenet_ft_224.py',
    '../_base_/default_runtime.py',
]

model = dict(
    type='ImageClassifier',
    frozen_backbone=True,
    data_preprocessor=dict(type='ClsDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375]),
    backbone=dict(
        type='VisionTransformer',
        arch='b',
        img_size=224,
        patch_size=16,
        pos_embed_type='learned',
        init_cfg=dict(type='FastMIMPretrained',
                      checkpoint='work_dirs/vit_b_hog_800e/epoch_800.pth',
                      prefix='backbone.')),
    head=dict(type='LinearClsHead', num_classes=1000, pre_norm='bn', init_std=0.01),
)

train_pipeline = [
    dict(type='LoadImageRGB'),
    dict(type='RandomResizedCrop', size=224, scale=(0.08, 1.0), interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=128, dataset=dict(pipeline=train_pipeline))

lr = 0.1 * 1024 / 256
optim_wrapper = dict(
    # fp16 autocast with loss scaling on CUDA; bf16 autocast on the CPU (tools/train.py).
    type='GuardedAmpOptimWrapper',
    optimizer=dict(type='SGD', lr=lr, momentum=0.9, weight_decay=0.),
    on_nonfinite='skip',
)
auto_scale_lr = dict(base_batch_size=1024, enable=False)

warmup_epochs = 10
max_epochs = 90
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True, begin=warmup_epochs,
         end=max_epochs, T_max=max_epochs - warmup_epochs, convert_to_iter_based=True),
]
# A preemption checkpoint (saved inside an epoch) resumes after the batches already trained.
train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=max_epochs, val_interval=10)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(checkpoint=dict(save_best='accuracy/top1', rule='greater'))
