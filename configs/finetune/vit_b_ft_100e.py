# Fine-tune FastMIM ViT-B/16 (800 epochs at 128 px) on ImageNet-1k at 224 px for 100 epochs.
# Total batch 1024 (128 x 8 GPUs), lr 6e-4 x 1024 / 256 = 2.4e-3, layer decay 0.70, drop path
# 0.1, global average pooling + new fc_norm, head init trunc-normal std 2e-5, RandAugment
# rand-m9-mstd0.5-inc1, mixup 0.8, cutmix 1.0, label smoothing 0.1, random erasing 0.25.
# Published: 83.8 top-1.
#   tools/dist_train.sh configs/finetune/vit_b_ft_100e.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PATH/TO/epoch_800.pth
#   .venv/bin/python tools/test.py configs/finetune/vit_b_ft_100e.py \
#       work_dirs/vit_b_ft_100e/best_*.pth
_base_ = ['../_base_/models/cls_vit_b.py', '../_base_/finetune_imagenet_224_100e.py']

model = dict(backbone=dict(init_cfg=dict(checkpoint='work_dirs/vit_b_hog_800e/epoch_800.pth')))
optim_wrapper = dict(optimizer=dict(lr=6e-4 * 1024 / 256),
                     paramwise_cfg=dict(layer_decay_rate=0.70))
