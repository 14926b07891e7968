# Fashion-MNIST dense-task study (docs/experiments.md): UperNet semantic segmentation of 64-px
# canvases of 2-4 Fashion-MNIST items (11 classes: background + the 10 item classes; masks are
# the items' own pixels, later items occlude earlier ones: datasets/fashion_mnist_canvas.py),
# with the study's small ViT initialised from its FastMIM pre-training
# (fashion_mnist_pretrain.py). fashion_mnist_upernet_scratch.py is the same run from random
# weights. Training canvases come from the training images, the test canvases (validated once,
# at the end) from the 10,000 test images only.
#
# What changes from mmseg's UperNet (upernet_mae.py base):
# - backbone: fastmim's ViT of _base_/fashion_mnist.py (128 wide, 4 blocks, 4 heads, patch 4:
#   16x16 tokens on a 64-px canvas), the outputs of all four blocks without a final norm, the
#   fixed sin-cos position embedding of pre-training (for both initialisations, so that only the
#   weights differ), the pre-training's normalisation;
# - neck: Feature2Pyramid with rescales 2, 1, 0.5, 0.25: strides 2, 4, 8, 16 (32 to 4 px maps);
# - UperNet 64 channels, FCN auxiliary head 32 channels on the stride-8 map (loss weight 0.4);
# - AdamW lr 2e-3 (the classification study's fine-tuning lr), wd 0.05, layer decay 0.9
#   (fastmim's constructor), 50 warmup updates then poly to 0; 600 updates of batch 8, flips
#   only: a short budget sized for 2 CPU cores (docs/experiments.md: 400 updates of batch 16 at
#   lr 1e-3 left both initialisations at the 'background + one item class' stage).
#   .venv/bin/python tools/experiments/run_fashion_mnist_dense.py  # canvases, pre-training, 2 x 3 runs
#   .venv/bin/python tools/train.py configs/experiments/fashion_mnist_upernet.py --cfg-options \
#       randomness.seed=0   # after the runner has written the canvases
_base_ = [
    'mmseg::_base_/models/upernet_mae.py',
    'mmseg::_base_/default_runtime.py',
]
custom_imports = dict(imports=['fastmim'], allow_failed_imports=False)

crop_size = (64, 64)
num_classes = 11
# The neck's norm, the one upernet_mae.py gives the heads; SyncBN becomes BN on a machine
# without CUDA (fastmim.engine.launch.adapt_to_device).
norm_cfg = dict(type='SyncBN', requires_grad=True)
embed_dim = 128
model = dict(
    # Mean and std of the 60,000 training images (_base_/fashion_mnist.py): what pre-training saw.
    data_preprocessor=dict(mean=[72.94, 72.94, 72.94], std=[90.02, 90.02, 90.02],
                           size=crop_size),
    backbone=dict(
        _delete_=True,
        type='fastmim.VisionTransformer',
        arch=dict(embed_dim=embed_dim, depth=4, num_heads=4),
        img_size=crop_size[0],
        patch_size=4,
        out_indices=(0, 1, 2, 3),
        final_norm=False,
        pos_embed_type='sincos',
        init_cfg=dict(type='fastmim.FastMIMPretrained',
                      checkpoint='work_dirs/fashion_mnist/pretrain/epoch_3.pth',
                      prefix='backbone.')),
    neck=dict(embed_dim=embed_dim, rescales=[2, 1, 0.5, 0.25], norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[embed_dim] * 4, channels=64, num_classes=num_classes),
    auxiliary_head=dict(in_channels=embed_dim, channels=32, num_classes=num_classes))

# ADE20K layout written by fastmim.datasets.fashion_mnist_canvas.write_canvas_segmentation (the
# runner does it): gray PNG canvases, label PNGs with ids 0-10. 0 is the background class, not
# ADE20K's ignored 'other': reduce_zero_label=False.
data_root = 'work_dirs/fashion_mnist/canvases/'
metainfo = dict(classes=('background', 'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                         'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),  # reduce_zero_label from the dataset
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),  # reduce_zero_label from the dataset
    dict(type='PackSegInputs'),
]
dataset = dict(type='BaseSegDataset', metainfo=metainfo, data_root=data_root,
               img_suffix='.png', seg_map_suffix='.png', reduce_zero_label=False)
# Exact resume (--resume from any checkpoint repeats the uninterrupted run bit for bit on the
# CPU): mmseg's InfiniteSampler order with per-sample seeds and a start index, a dataset that
# flips each sample from its seed (mmseg's BaseSegDataset flips from the training process's
# generators, which dropout moves), and a loop that seeds every iteration (fastmim.engine.loops).
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='fastmim.ResumableInfiniteSampler', shuffle=True),
    dataset=dict(dataset, type='fastmim.SeededSegDataset', pipeline=train_pipeline,
                 data_prefix=dict(img_path='images/training',
                                  seg_map_path='annotations/training')))
val_dataloader = dict(
    batch_size=50,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**dataset, pipeline=test_pipeline,
                 data_prefix=dict(img_path='images/validation',
                                  seg_map_path='annotations/validation')))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# bf16 autocast (no loss scaling; the main speed lever of a CPU with AVX-512 bf16, and fine on
# CUDA devices from Ampere on), with fastmim's guard that skips a step whose loss is not finite.
optim_wrapper = dict(
    type='fastmim.AutocastOptimWrapper',
    dtype='bfloat16',
    on_nonfinite='skip',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='fastmim.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.9))
max_iters = 600
warmup_iters = 50
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', eta_min=0., power=1.0, by_epoch=False, begin=warmup_iters,
         end=max_iters),
]
train_cfg = dict(type='fastmim.ResumableIterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
val_cfg = dict(type='ValLoop', fp16=True)  # autocast: bf16 on the CPU
test_cfg = dict(type='TestLoop', fp16=True)

# mmseg's schedule bases define these; the study's budget needs none of them.
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'),
    # Checkpoints of plain types (they load weights-only) that record the model geometry.
    checkpoint_meta=dict(type='fastmim.CheckpointMetaHook'),
    # A checkpoint read for --resume checked before anything loads from it.
    resume_checks=dict(type='fastmim.ResumeChecksHook'),
    # On SIGTERM or SIGUSR1 (SLURM preemption, --signal): iter_<n>.pth of the next iteration
    # and exit status 75; --resume continues from there, exactly.
    preemption=dict(type='fastmim.PreemptionHook'))
log_processor = dict(by_epoch=False)
work_dir = 'work_dirs/fashion_mnist/upernet'
