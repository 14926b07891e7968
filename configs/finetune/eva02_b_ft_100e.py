# Fine-tune FastMIM EVA-02-B/16 (800 epochs at 128 px) on ImageNet-1k at 224 px for 100 epochs:
# the FastMIM ViT-B/16 recipe (total batch 1024, lr 6e-4 x 1024 / 256 = 2.4e-3, layer decay
# 0.70, drop path 0.1, average pooling + fc_norm, RandAugment, mixup / cutmix, label smoothing,
# random erasing). Layer decay 0.70 is both FastMIM ViT-B's value and EVA-02-B's own in its
# IN-1K fine-tuning of the MIM pre-trained model (BAAI EVA-02 release: lrd 0.7, at 448 px for
# 30 epochs); the rest is FastMIM's recipe. No published result for this backbone.
#   tools/dist_train.sh configs/finetune/eva02_b_ft_100e.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PATH/TO/epoch_800.pth
_base_ = ['../_base_/models/cls_eva02_b.py', '../_base_/finetune_imagenet_224_100e.py']

model = dict(backbone=dict(init_cfg=dict(checkpoint='work_dirs/eva02_b_hog_800e/epoch_800.pth')))
optim_wrapper = dict(optimizer=dict(lr=6e-4 * 1024 / 256),
                     paramwise_cfg=dict(layer_decay_rate=0.70))
