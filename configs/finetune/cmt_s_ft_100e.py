# Fine-tune FastMIM CMT-S (800 epochs at 128 px) on ImageNet-1k at 224 px for 100 epochs.
# Published: 83.9 top-1, but no fine-tuning command: the release's README
# (github.com/ggjy/FastMIM.pytorch) gives one for ViT-B and Swin-B only. lr and layer decay here are the defaults of the release's main_finetune.py (base lr
# 1e-3 per 256 -> 4e-3 at batch 1024, layer decay 0.75, drop path 0.1); everything else is the
# shared recipe. The head is the release's CMT-S classifier (1x1 conv to 1280 channels,
# BatchNorm, swish, pooling, dropout 0.1, linear: _base_/models/cls_cmt_s.py), new in
# fine-tuning: layer decay gives it the full lr, and its 1-D tensors (BatchNorm, biases) no
# weight decay, as the release's lr_decay.py. The relative position biases are resized from the
# 128-px grid on loading (which the release forgets to do).
_base_ = ['../_base_/models/cls_cmt_s.py', '../_base_/finetune_imagenet_224_100e.py']

model = dict(backbone=dict(init_cfg=dict(checkpoint='work_dirs/cmt_s_hog_800e/epoch_800.pth')))
optim_wrapper = dict(optimizer=dict(lr=1e-3 * 1024 / 256),
                     paramwise_cfg=dict(layer_decay_rate=0.75))
