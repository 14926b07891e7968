# Mask R-CNN with a FastMIM Swin-B backbone on COCO, 3x schedule (36 epochs), the recipe FastMIM
# publishes: 52.0 box AP / 46.0 mask AP on val2017.
#
# What FastMIM changes on top of mmdet's Mask R-CNN R-50 FPN bases:
# - backbone: fastmim's Swin-B (window 7, drop path 0.2, activation checkpointing), all four
#   stages out, initialised from the ImageNet fine-tuned FastMIM checkpoint
#   (configs/finetune/swin_b_ft_100e.py);
# - "upgraded" heads: RPN with 2 convs, Shared4Conv1FC box head and 4-conv mask head, SyncBN in
#   the FPN and the heads (mmdet's strong_baselines / simple_copy_paste recipes do the same);
# - large-scale jitter (resize 0.1-2.0 of 1024, 1024 crop) plus simple copy-paste;
# - AdamW lr 6e-5 wd 0.05, no weight decay on norms and relative-position bias tables;
#   steps at epochs 27 and 33, linear warmup over 1000 iterations. Total batch 16 (2 x 8 GPUs),
#   the batch of Swin's own detection configs: the release's config sets 4 images per GPU
#   (samples_per_gpu=4) and does not say on how many GPUs (README);
# - testing at the reference's scale: resize to fit 1666 x 1024 keeping the aspect ratio
#   (mmdet's default is 1333 x 800), padded to a multiple of 32 by the data preprocessor.
#
#   tools/dist_train.sh projects/detection/configs/mask_rcnn_fastmim_swin_b_fpn_3x_coco.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PATH/TO/swin_b_ft.pth
#   .venv/bin/python tools/test.py \
#       projects/detection/configs/mask_rcnn_fastmim_swin_b_fpn_3x_coco.py \
#       work_dirs/mask_rcnn_fastmim_swin_b_fpn_3x_coco/epoch_36.pth
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
# 'fastmim' installs its weights-only checkpoint loading; its modules are reached through the
# 'fastmim.' scope prefix below.
custom_imports = dict(imports=['fastmim'], allow_failed_imports=False)

image_size = (1024, 1024)
# torch's SyncBN in the FPN and the heads, as the reference's config. Its statistics weight each
# process by its sample count, which matters in the mask head (positive RoIs differ per GPU);
# mmcv's MMSyncBN (mmdet's strong baselines) averages the processes' statistics equally.
norm_cfg = dict(type='SyncBN', requires_grad=True)

model = dict(
    backbone=dict(
        _delete_=True,
        type='fastmim.SwinTransformer',
        # Swin-B, written out so that --cfg-options can change single widths.
        arch=dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
        # Built at 224 px so that every window is 7x7; any multiple of 32 runs.
        img_size=224,
        window_size=7,
        out_indices=(0, 1, 2, 3),
        # Whole, shifted windows at every size, as the release's mmdet Swin: a wide test image
        # (1666 x 1024 keeping the aspect ratio) can leave the last stage no larger than 7x7.
        always_partition=True,
        drop_path_rate=0.2,
        # Activation checkpointing, as the reference trains Swin-B (same results, less memory:
        # projects/detection/README.md).
        with_cp=True,
        init_cfg=dict(
            type='fastmim.FastMIMPretrained',
            checkpoint='work_dirs/swin_b_ft_100e/epoch_100.pth',
            # The LayerNorms on stages 0-2 feed the FPN only: new layers, which the backbone
            # declares (checkpoint_optional_names), so the loader keeps them initialised and
            # lists them. Stage 3 goes through the checkpoint's final norm; the release's
            # mmdet Swin starts that one fresh too (its norm3 matches no key of the
            # classifier checkpoint).
            prefix='backbone.')),
    neck=dict(in_channels=[128, 256, 512, 1024], norm_cfg=norm_cfg),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))

# Large-scale jitter; every image ends as a 1024 x 1024 canvas, which copy-paste needs (it
# pastes one image's objects onto another of the same size).
load_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Pad', size=image_size),
]
train_pipeline = [
    dict(type='CopyPaste', max_num_pasted=100),
    dict(type='PackDetInputs'),
]
# mmdet's CocoDataset, except that images without their file, boxes under 1 px and polygons of
# fewer than 3 points are skipped with a warning naming them when the annotations are read,
# instead of failing in a dataloader worker mid-epoch.
dataset_type = 'fastmim.CheckedCocoDataset'
train_dataloader = dict(
    batch_size=2,
    # mmdet's DefaultSampler order, with a start index: a run resumed from a checkpoint saved
    # inside an epoch (a preemption checkpoint) continues that epoch after the batches already
    # trained, without loading them (fastmim.engine.loops).
    sampler=dict(type='fastmim.ResumableSampler', shuffle=True),
    # All canvases are square: no aspect-ratio grouping.
    batch_sampler=None,
    # mmdet's MultiImageMixDataset, each sample augmented from its own seed: a resumed run
    # augments as the interrupted one would have (fastmim.datasets.coco).
    dataset=dict(
        _delete_=True,
        type='fastmim.SeededMultiImageMixDataset',
        dataset=dict(
            type=dataset_type,
            data_root={{_base_.data_root}},
            ann_file='annotations/instances_train2017.json',
            data_prefix=dict(img='train2017/'),
            filter_cfg=dict(filter_empty_gt=True, min_size=32),
            pipeline=load_pipeline,
            backend_args={{_base_.backend_args}}),
        pipeline=train_pipeline))

# mmdet's test pipeline at the reference's test scale.
test_pipeline = _base_.test_pipeline
test_pipeline[1].scale = (1666, 1024)  # Resize
val_dataloader = dict(dataset=dict(type=dataset_type, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_epochs = 36
# mmdet's EpochBasedTrainLoop, but a run resumed inside an epoch continues it instead of
# training it again from its first batch, and every iteration is seeded for itself.
train_cfg = dict(type='fastmim.ResumableEpochBasedTrainLoop', max_epochs=max_epochs)
# A fixed seed (mmdet's runtime leaves it unset, a new one each start): two runs of the config
# shuffle and augment alike. (A resumed run shuffles as the interrupted one with either: its
# seed and its sampler's are taken from the checkpoint.)
randomness = dict(seed=0)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33],
         gamma=0.1),
]
optim_wrapper = dict(
    type='fastmim.GuardedOptimWrapper',
    optimizer=dict(
        _delete_=True, type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.05),
    # No weight decay on what the backbone declares (its no_weight_decay_names(): Swin's
    # relative-position tables) and on every norm layer: norm_decay_mult reaches the LayerNorms
    # and the SyncBNs. The release
    # (mmdet-v2.23/configs/swin/fastmim_mask_rcnn_upgraded_scp_swin_base_3x_coco.py in
    # github.com/ggjy/FastMIM.pytorch) exempts the names containing 'absolute_pos_embed',
    # 'relative_position_bias_table' or 'norm', meant for the norms, which leaves the FPN and
    # head BNs (named 'bn') decayed. Biases keep the weight decay, as there.
    constructor='fastmim.DeclaredNoDecayOptimWrapperConstructor',
    paramwise_cfg=dict(norm_decay_mult=0.),
    # 8 on one GPU makes this config's batch of 16 (2 x 8 GPUs) per update (README).
    accumulative_counts=1)
auto_scale_lr = dict(base_batch_size=16)

# Default hooks, merged by key, so a derived config's own custom_hooks cannot drop them:
# - checkpoints of plain types (they load weights-only) that record the model geometry, and
#   a checkpoint read for --resume checked before anything loads from it;
# - on SLURM's SIGTERM (preemption, scancel) or SIGUSR1 (--signal=USR1@120), iter_<n>.pth of the
#   next iteration is saved and the run exits with status 75; --resume continues from there,
#   inside the epoch (the checkpoint hook saves once per epoch).
# - the last three checkpoints kept (mmengine's hook, as the base config sets it, keeps every
#   one), old ones deleted only after the new one and last_checkpoint are written.
default_hooks = dict(checkpoint=dict(type='fastmim.SafeCheckpointHook', max_keep_ckpts=3),
                     checkpoint_meta=dict(type='fastmim.CheckpointMetaHook'),
                     resume_checks=dict(type='fastmim.ResumeChecksHook'),
                     preemption=dict(type='fastmim.PreemptionHook'))
