# Fine-tune FastMIM ViT-B/16 (800 epochs at 128 px) on ImageNet-1k at 224 px for 100 epochs.
# Total batch 1024 (128 x 8 GPUs), lr 6e-4 x 1024 / 256 = 2.4e-3, layer decay 0.70, drop path
# 0.1, global average pooling + new fc_norm, head init trunc-normal std 2e-5, RandAugment
# rand-m9-mstd0.5-inc1, mixup 0.8, cutmix 1.0, label smoothing 0.1, random erasing 0.25.
# Published: 83.8 top-1.
#   tools/dist_train.sh configs/finetune/vit_b_ft_100e.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PATH/TO/epoch_800.pth
#   tools/test.py configs/finetune/vit_b_ft_100e.py work_dirs/vit_b_ft_100e/best_*.pth
_base_ = [
    '../_base_/datasets/imagenet_ft_224.py',
    '../_base_/schedules/finetune_adamw.py',
    '../_base_/default_runtime.py',
]

model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        type='ClsDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        label_smoothing=0.1,
        mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode='batch'),
        random_erasing=dict(probability=0.25, mode='pixel', max_count=1)),
    # Learned position embedding, initialised from the checkpoint's (sin-cos) 8x8 grid resized to
    # 14x14; the final norm is replaced by fc_norm after pooling, as in MAE.
    backbone=dict(
        type='VisionTransformer',
        arch='b',
        img_size=224,
        patch_size=16,
        drop_path_rate=0.1,
        final_norm=False,
        init_cfg=dict(type='FastMIMPretrained',
                      checkpoint='work_dirs/vit_b_hog_800e/epoch_800.pth',
                      prefix='backbone.')),
    head=dict(type='LinearClsHead', num_classes=1000, pre_norm='ln', init_std=2e-5),
)

lr = 6e-4 * 1024 / 256
optim_wrapper = dict(optimizer=dict(lr=lr), paramwise_cfg=dict(layer_decay_rate=0.70))
auto_scale_lr = dict(base_batch_size=1024)

warmup_epochs = 5
max_epochs = 100
min_lr = 1e-6
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=min_lr / lr, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, T_max=max_epochs - warmup_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)

# Keep the best top-1 checkpoint besides the last ones.
default_hooks = dict(checkpoint=dict(save_best='accuracy/top1', rule='greater'))
