# Fashion-MNIST study, stage 2: fine-tune the pre-trained ViT with a class-balanced fraction of
# the labels (train_dataloader.dataset.label_fraction: 0.01 = 600 images, 0.1 = 6,000; seed picks
# the subset and the run's randomness), then evaluate on the 10,000 test images.
# Every fine-tuning run gets the same budget whatever the fraction: 200 updates of batch 64
# (21 epochs of 1%, 2 of 10%). MAE's recipe, shortened: AdamW (0.9, 0.999), wd 0.05, label
# smoothing 0.1, 20 warmup updates then cosine, global average pooling + new fc_norm; for 200
# updates of a 4-block ViT: lr 2e-3, layer decay 0.9, no drop path, and only flips (random
# resized crops, mixup, cutmix, RandAugment and erasing slow such short runs down). These were
# chosen on seed 0 with 10% labels against the first 2,000 training images, never the test set
# (docs/experiments.md). fashion_mnist_finetune_scratch.py is the same run from random weights.
#   .venv/bin/python tools/train.py configs/experiments/fashion_mnist_finetune.py --cfg-options \
#       model.backbone.init_cfg.checkpoint=work_dirs/fashion_mnist/pretrain/epoch_3.pth \
#       train_dataloader.dataset.label_fraction=0.01 train_dataloader.dataset.seed=0 \
#       randomness.seed=0
_base_ = ['../_base_/default_runtime.py', './_base_/fashion_mnist.py']

model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(type='ClsDataPreprocessor', label_smoothing=0.1),
    backbone=dict(
        final_norm=False,
        init_cfg=dict(type='FastMIMPretrained',
                      checkpoint='work_dirs/fashion_mnist/pretrain/epoch_3.pth',
                      prefix='backbone.')),
    head=dict(type='LinearClsHead', num_classes=10, pre_norm='ln', init_std=2e-5),
)

train_pipeline = [
    dict(type='ResizeShorterCenterCrop', crop_size=32, crop_pct=1.0, interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
# Exact resume (--resume from any checkpoint repeats the uninterrupted run bit for bit):
# mmengine's InfiniteSampler order with per-sample seeds and a start index (FashionMNIST flips each
# sample from its seed), and a loop that seeds every iteration (drop path, fastmim.engine.loops).
# mmengine's InfiniteSampler and IterBasedTrainLoop matched only while nothing drew at random
# in the model: with drop_path_rate=0.1 a run resumed at iteration 4 of 8 ended 3e-3 away.
train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    drop_last=True,
    sampler=dict(type='fastmim.ResumableInfiniteSampler', shuffle=True),
    dataset=dict(type='FashionMNIST', split='train', label_fraction=0.1, seed=0,
                 pipeline=train_pipeline),
)
val_dataloader = {{_base_.test_dataloader}}
val_evaluator = {{_base_.test_evaluator}}

lr = 2e-3
optim_wrapper = dict(
    # fp16 autocast with loss scaling on CUDA; bf16 autocast on the CPU (tools/train.py).
    type='GuardedAmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.9),
    on_nonfinite='skip',
)
max_iters = 200
warmup_iters = 20
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-3, by_epoch=False, begin=warmup_iters,
         end=max_iters, T_max=max_iters - warmup_iters),
]
train_cfg = dict(type='fastmim.ResumableIterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
val_cfg = dict(type='ValLoop', fp16=True)  # bf16 autocast on the CPU
test_cfg = dict(type='TestLoop')

default_hooks = dict(logger=dict(interval=50),
                     checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
