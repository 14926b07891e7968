# Fashion-MNIST study, stage 1: FastMIM pre-training on 20,000 training images without labels.
# FastMIM scaled down to 32 px: the small ViT of _base_/fashion_mnist.py (patch 4, 8x8 tokens),
# HOG of 4-px cells (a cell must divide the patch: one cell, 27 values, per token), 8-px mask
# blocks (16 blocks, 4 visible), mask ratio 0.75, decoder 128 wide x 1 block. Short budget (sized
# for 2 CPU cores, see docs/experiments.md): 3 epochs, lr 1e-3 at batch 128, 1 warmup epoch.
#   .venv/bin/python tools/train.py configs/experiments/fashion_mnist_pretrain.py
_base_ = [
    '../_base_/schedules/fastmim_adamw.py',
    '../_base_/default_runtime.py',
    './_base_/fashion_mnist.py',
]

model = dict(
    type='FastMIM',
    data_preprocessor=dict(type='ImgDataPreprocessor', bgr_to_rgb=False),
    backbone=dict(pos_embed_type='sincos'),
    neck=dict(type='MIMDecoder', embed_dim=128, depth=1, num_heads=4, mlp_ratio=4.),
    target_generator=dict(type='HOGGenerator', nbins=9, cell_size=4, normalize=True),
    loss=dict(type='MaskedMSELoss'),
    mask_ratio=0.75,
    block_size=8,
)

train_pipeline = [
    dict(type='RandomResizedCrop', size=32, scale=(0.4, 1.0), interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=128,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    drop_last=True,
    # Starts inside an epoch, so a preemption checkpoint resumes (ResumableEpochBasedTrainLoop).
    sampler=dict(type='ResumableSampler', shuffle=True),
    dataset=dict(type='FashionMNIST', split='train', with_label=False, indices=20000,
                 pipeline=train_pipeline),
)
# Pre-training has no evaluation.
test_dataloader = None
test_evaluator = None

optim_wrapper = dict(optimizer=dict(lr=1e-3))
auto_scale_lr = dict(base_batch_size=128)
warmup_epochs = 1
max_epochs = 3
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-2, by_epoch=True, begin=warmup_epochs,
         end=max_epochs, T_max=max_epochs - warmup_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
work_dir = 'work_dirs/fashion_mnist/pretrain'
