# The fine-tuning recipe shared by configs/finetune/<backbone>_ft_100e.py (MAE / FastMIM):
# ImageNet-1k at 224 px, the 100-epoch layer-decay AdamW schedule and the default runtime,
# keeping the best top-1 checkpoint besides the last ones. A recipe inherits its
# models/cls_<backbone>.py and this file, and states only the pre-training checkpoint
# (model.backbone.init_cfg.checkpoint; cls_<backbone>.py loads it with FastMIMPretrained), lr and
# layer_decay_rate.
_base_ = ['./datasets/imagenet_ft_224.py', './schedules/finetune_adamw.py', './default_runtime.py']

# Keep the best top-1 checkpoint besides the last ones.
default_hooks = dict(checkpoint=dict(save_best='accuracy/top1', rule='greater'))
