# UperNet with a FastMIM ViT-B/16 backbone on ADE20K, 512 x 512 crops, 160k iterations at batch 16:
# the recipe FastMIM publishes, 49.5 mIoU (single scale).
#
# What FastMIM changes on top of mmseg's UperNet / ADE20K / 160k bases:
# - backbone: the reference's ViTBEiT as options of fastmim's ViT-B (12 heads, drop path 0.1,
#   a BEiT relative position bias per block, zero-initialised, and layer scale initialised to
#   1.0 on both residual branches; no final norm: the blocks' raw outputs feed the neck, as in
#   BEiT / MAE), features of blocks 2, 4, 10, 12 (indices 1, 3, 9, 11, the reference's),
#   activation checkpointing, initialised from the ImageNet fine-tuned FastMIM checkpoint
#   (configs/finetune/vit_b_ft_100e.py) with the position embedding resized from 14x14 to 32x32
#   (the fine-tuned checkpoint has no tables and scales: they start at 0 and 1);
# - neck: mmseg's Feature2Pyramid, i.e. deconv x2 (stride 4), deconv (8), identity (16),
#   max-pool (32), the BEiT multi-level design of the reference;
# - data: mmseg's ADE20K dataset, with each label map checked as it is loaded;
# - UperNet channels 768, pool scales 1, 2, 3, 6; FCN auxiliary head on the stride-32 level
#   (block 12 max-pooled, the reference's in_index=3), loss weight 0.4;
# - AdamW lr 3e-4 wd 0.05 with layer-wise lr decay 0.75, poly (power 1.0) to 0 from iteration
#   0 under a 1500-iteration linear warmup; slide inference with 512 crops and stride 341
#   (evaluation images smaller than the crop padded to it: no recipe number, the reference
#   could not evaluate them).
#
#   CONFIG=projects/segmentation/configs/upernet_fastmim_vit_b_ade20k_512x512_160k.py
#   tools/dist_train.sh $CONFIG 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PATH/TO/vit_b_ft.pth
#   .venv/bin/python tools/test.py $CONFIG \
#       work_dirs/upernet_fastmim_vit_b_ade20k_512x512_160k/iter_160000.pth
_base_ = [
    'mmseg::_base_/models/upernet_mae.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
# 'fastmim' installs its weights-only checkpoint loading and registers its modules, reached
# through the 'fastmim.' scope prefix (backbone, layer-decay constructor, initializer, hooks).
custom_imports = dict(imports=['fastmim'], allow_failed_imports=False)

crop_size = (512, 512)
num_classes = 150
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    # test_cfg: an evaluation image smaller than the slide crop (wider than 4:1 after the test
    # Resize to (2048, 512)) is padded to it, as mmseg's slide inference would crop it at its
    # own size, unpadded, which the ViT refuses (multiples of 16); mmseg removes the padding
    # from the prediction. Images as large as the crop (all others) are left as they are.
    # size_divisor=None written out: whole-image inference pads by it instead
    # (test_cfg.size=None test_cfg.size_divisor=16), mmseg takes one of the two.
    data_preprocessor=dict(size=crop_size, test_cfg=dict(size=crop_size, size_divisor=None)),
    backbone=dict(
        _delete_=True,
        type='fastmim.VisionTransformer',
        # ViT-B, written out so that --cfg-options can change single widths.
        arch=dict(embed_dim=768, depth=12, num_heads=12),
        # The tables are built for this grid (32 x 32) and resized for crops of another size.
        img_size=crop_size[0],
        patch_size=16,
        out_indices=(1, 3, 9, 11),
        drop_path_rate=0.1,
        final_norm=False,
        rel_pos_bias=True,
        init_values=1.0,
        with_cp=True,
        init_cfg=dict(
            type='fastmim.FastMIMPretrained',
            checkpoint='work_dirs/vit_b_ft_100e/epoch_100.pth',
            # The relative-position tables and layer scales are new in the segmentation ViT:
            # the backbone declares them (checkpoint_optional_names), so a classifier
            # checkpoint without them loads, and the loader lists the ones it keeps
            # initialised; a checkpoint that has them loads them.
            prefix='backbone.')),
    # norm_cfg written out: the neck's own default is SyncBN too, but only config entries are
    # switched to BN for CPU runs (fastmim.engine.launch.adapt_to_device).
    neck=dict(embed_dim=768, rescales=[4, 2, 1, 0.5], norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=[768, 768, 768, 768], channels=768, pool_scales=(1, 2, 3, 6),
        num_classes=num_classes),
    # The reference's auxiliary head reads the last level (stride 32, block 12 max-pooled);
    # mmseg's upernet_mae base reads index 2 (stride 16, block 10).
    auxiliary_head=dict(in_channels=768, in_index=3, num_classes=num_classes),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

# 2 images per GPU x 8 GPUs. mmseg's ADE20KDataset whose pipeline checks each label map against
# its image's size and the 150 classes, naming the file (fastmim.datasets.ade20k).
# ResumableInfiniteSampler: mmseg's InfiniteSampler order, with per-sample seeds and a start
# index, so that --resume neither reloads the batches already trained nor augments otherwise.
train_dataloader = dict(batch_size=2, sampler=dict(type='fastmim.ResumableInfiniteSampler'),
                        dataset=dict(type='fastmim.CheckedADE20KDataset'))
val_dataloader = dict(batch_size=1, dataset=dict(type='fastmim.CheckedADE20KDataset'))
test_dataloader = val_dataloader

# mmseg's schedule_160k names a top-level SGD (lr 0.01) that training ignores; the work dir's
# config copy would show it beside the AdamW below, the one that trains.
optimizer = None
optim_wrapper = dict(
    _delete_=True,
    type='fastmim.GuardedOptimWrapper',
    optimizer=dict(type='AdamW', lr=3e-4, betas=(0.9, 0.999), weight_decay=0.05),
    # fastmim's constructor asks the ViT for its layer ids (blocks.i, its relative-position table
    # and layer scales included -> layer i + 1) and exempts biases, norms, layer scales, the
    # position embedding, the class token and the relative-position tables from weight decay.
    # 0.65 is the other common rate for ViT-B.
    constructor='fastmim.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.75),
    # 8 on one GPU makes the published batch of 16 per update (README).
    accumulative_counts=1)
# --auto-scale-lr scales the lr by the total batch of one update over the published 16.
auto_scale_lr = dict(base_batch_size=16)

warmup_iters = 1500
max_iters = 160000
# The release's mmcv schedule (policy='poly', warmup='linear', warmup_ratio=1e-6): the poly
# lr x (1 - iter / 160k) from iteration 0, multiplied by the linear warmup over its first 1500
# iterations. mmengine's schedulers compose the same way when both run from 0. (mmseg 1.x's
# MAE / BEiT configs start the poly at the end of the warmup instead: 1.0095 x this lr after it.)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', eta_min=0., power=1.0, by_epoch=False, begin=0, end=max_iters),
]
# mmseg's IterBasedTrainLoop, but a resume skips in the sampler and repeats the uninterrupted
# run exactly (fastmim.engine.loops).
train_cfg = dict(type='fastmim.ResumableIterBasedTrainLoop', max_iters=max_iters)
# A fixed seed (mmseg's runtime leaves it unset, a new one each start): two runs of the config
# draw the same data stream and augmentation. (A resumed run continues the interrupted run's
# stream with either: its seed and its sampler's are taken from the checkpoint.)
randomness = dict(seed=0)

# Default hooks, merged by key, so a derived config's own custom_hooks cannot drop them:
# - checkpoints of plain types (they load weights-only) that record the model geometry, and
#   a checkpoint read for --resume checked before anything loads from it;
# - on SLURM's SIGTERM (preemption, scancel) or SIGUSR1 (--signal=USR1@120), iter_<n>.pth of the
#   next iteration is saved and the run exits with status 75; --resume continues from there,
#   exactly (the checkpoint hook's interval is 16k iterations).
# - the last three checkpoints kept (mmengine's hook, as the base config sets it, keeps every
#   one), old ones deleted only after the new one and last_checkpoint are written.
default_hooks = dict(checkpoint=dict(type='fastmim.SafeCheckpointHook', max_keep_ckpts=3),
                     checkpoint_meta=dict(type='fastmim.CheckpointMetaHook'),
                     resume_checks=dict(type='fastmim.ResumeChecksHook'),
                     preemption=dict(type='fastmim.PreemptionHook'))
