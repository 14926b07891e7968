# Fine-tune FastMIM Swin-B (400 epochs at 128 px, window 4) on ImageNet-1k at 224 px, window 7,
# for 100 epochs. Total batch 1024 (128 x 8 GPUs), lr 1e-3 x 1024 / 256 = 4e-3, layer decay
# 0.80, drop path 0.1; the rest as for ViT-B. Swin ends in its own LayerNorm, so the head
# pools and classifies without a new fc_norm. Relative-position tables are resized from
# (2*4-1)^2 to (2*7-1)^2 rows when the checkpoint is loaded.
# Published: 84.1 top-1.
_base_ = ['../_base_/models/cls_swin_b.py', '../_base_/finetune_imagenet_224_100e.py']

model = dict(backbone=dict(init_cfg=dict(checkpoint='work_dirs/swin_b_hog_400e/epoch_400.pth')))
optim_wrapper = dict(optimizer=dict(lr=1e-3 * 1024 / 256),
                     paramwise_cfg=dict(layer_decay_rate=0.80))
