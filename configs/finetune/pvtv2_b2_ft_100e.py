# Fine-tune FastMIM PVTv2-B2 (800 epochs at 128 px) on ImageNet-1k at 224 px for 100 epochs.
# Published: 82.5 top-1, but no fine-tuning command: the release's README
# (github.com/ggjy/FastMIM.pytorch) gives one for ViT-B and Swin-B only. lr and layer decay here are the defaults of the release's main_finetune.py (base lr
# 1e-3 per 256 -> 4e-3 at batch 1024, layer decay 0.75, drop path 0.1); everything else is the
# shared recipe. PVTv2 ends every stage in a LayerNorm, so the head adds no fc_norm.
_base_ = ['../_base_/models/cls_pvtv2_b2.py', '../_base_/finetune_imagenet_224_100e.py']

model = dict(backbone=dict(init_cfg=dict(checkpoint='work_dirs/pvtv2_b2_hog_800e/epoch_800.pth')))
optim_wrapper = dict(optimizer=dict(lr=1e-3 * 1024 / 256),
                     paramwise_cfg=dict(layer_decay_rate=0.75))
