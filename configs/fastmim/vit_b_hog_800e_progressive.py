# FastMIM-P ViT-B/16: progressive-resolution pre-training, otherwise the 800-epoch recipe.
# Example schedule, not a published one: the release (github.com/ggjy/FastMIM.pytorch) gives no
# FastMIM-P command, and its main_pretrain.py flags for it (--mim_pt_step, --mim_pt_size,
# --mim_pt_bs, --mim_pt_accum) default to None. Epochs 0-399 at 96 px in batches of 512; epochs 400-799 at 128 px in batches of
# 256 with 2-step gradient accumulation. Every stage keeps 512 images per optimiser update and GPU
# (4096 in total on 8 GPUs), so updates per epoch, lr 2.4e-3 and the warmup + cosine schedule in
# epochs are those of vit_b_hog_800e.py. See docs/progressive.md.
_base_ = ['./vit_b_hog_800e.py']

progressive_stages = [
    dict(epoch=0, input_size=96, batch_size=512, accumulative_counts=1),
    dict(epoch=400, input_size=128, batch_size=256, accumulative_counts=2),
]

# The batch of one optimiser update (batch_size x accumulative_counts of every stage): mmengine
# converts the epoch-based schedule to steps with the loader built from this, and the steps must
# be updates. The hook rebuilds the loader for each stage.
train_dataloader = dict(batch_size=512)
# Accumulation is set per stage; iteration-based schedulers step once per optimiser update.
optim_wrapper = dict(accumulative_counts=1)
default_hooks = dict(param_scheduler=dict(type='PerUpdateParamSchedulerHook'))
custom_hooks = [dict(type='ProgressiveResolutionHook', stages=progressive_stages)]
# The position embedding keeps the 128-px grid of the last stage (8x8) and is resized on the fly
# for the 96-px stage, so the checkpoint fine-tunes like one of vit_b_hog_800e.py.
model = dict(backbone=dict(img_size=128))
