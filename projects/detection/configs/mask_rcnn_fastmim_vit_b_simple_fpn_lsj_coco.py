# Mask R-CNN with a FastMIM ViT-B/16 backbone on COCO through ViTDet's simple feature pyramid,
# ViTDet's recipe (Li et al. 2022) on top of the Swin-B config of this folder. FastMIM publishes
# no ViT detection number; MAE's ViT-B gets 51.6 box AP / 45.9 mask AP with ViTDet (MAE's
# number, for reference only).
#
# What changes from mask_rcnn_fastmim_swin_b_fpn_3x_coco.py (data pipeline with large-scale
# jitter 1024 + copy-paste, CheckedCocoDataset, RPN with 2 convs, SyncBN 4-conv heads: kept):
# - backbone: fastmim's ViT-B/16 built at 1024 px (a 64 x 64 position-embedding grid), drop path
#   0.1, global attention in every block with activation checkpointing (fastmim's ViT has no
#   windowed attention, which ViTDet uses in all but 4 blocks), the last block's output without
#   the final norm, initialised from the ImageNet fine-tuned FastMIM checkpoint
#   (configs/finetune/vit_b_ft_100e.py; the position embedding is resized from 14 x 14);
# - neck: fastmim.SimpleFeaturePyramid, strides 4, 8, 16, 32 from the stride-16 map by
#   transposed convolutions and max-pooling, LayerNorm, 256 channels, plus the stride-64 level
#   the RPN reads;
# - AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.1, layer-wise lr decay 0.7; total batch 64
#   (4 x 16 GPUs);
# - schedule: ViTDet's 184,375 iterations at batch 64 (about 100 epochs of train2017) with steps
#   at 163,889 and 177,546, as epochs: 100 epochs, lr x 0.1 at epochs 89 and 96, linear warmup
#   over 250 iterations;
# - testing at ViTDet's scale: resize to fit 1024 x 1024 keeping the aspect ratio.
#
#   tools/dist_train.sh projects/detection/configs/mask_rcnn_fastmim_vit_b_simple_fpn_lsj_coco.py \
#       16 --cfg-options model.backbone.init_cfg.checkpoint=PATH/TO/vit_b_ft.pth
_base_ = ['./mask_rcnn_fastmim_swin_b_fpn_3x_coco.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='fastmim.VisionTransformer',
        # ViT-B, written out so that --cfg-options can change single widths.
        arch=dict(embed_dim=768, depth=12, num_heads=12),
        img_size=1024,
        patch_size=16,
        # The last block (block 12 of ViT-B), its raw output as in ViTDet.
        out_indices=(-1, ),
        final_norm=False,
        drop_path_rate=0.1,
        with_cp=True,
        init_cfg=dict(
            type='fastmim.FastMIMPretrained',
            checkpoint='work_dirs/vit_b_ft_100e/epoch_100.pth',
            prefix='backbone.')),
    neck=dict(
        _delete_=True,
        type='fastmim.SimpleFeaturePyramid',
        in_channels=768,
        out_channels=256,
        scales=(4, 2, 1, 0.5),
        num_extra_levels=1))

# 4 images per GPU x 16 GPUs, ViTDet's batch 64.
train_dataloader = dict(batch_size=4)
auto_scale_lr = dict(base_batch_size=64)

# The Swin-B config's test pipeline at ViTDet's test scale.
test_pipeline = _base_.test_pipeline
test_pipeline[1].scale = (1024, 1024)  # Resize
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

max_epochs = 100
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[89, 96],
         gamma=0.1),
]
optim_wrapper = dict(
    _delete_=True,
    type='fastmim.GuardedOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    # Block i of the ViT learns at lr x 0.7 ** (13 - (i + 1)), the embedding at lr x 0.7 ** 13,
    # the neck and heads at lr; biases, norms, the position embedding and the class token get
    # no weight decay.
    constructor='fastmim.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.7))
