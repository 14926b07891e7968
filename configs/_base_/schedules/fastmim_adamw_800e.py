# The ViT-B optimisation of FastMIM (also PVTv2-B2's and CMT-S's): fastmim_adamw.py for 800 epochs
# (20 per-iteration warmup epochs, then half-cycle cosine to 0) at a total batch of 4096 with
# lr = 1.5e-4 per 256 images x 4096 / 256 = 2.4e-3.
_base_ = ['./fastmim_adamw.py']

optim_wrapper = dict(optimizer=dict(lr=1.5e-4 * 4096 / 256))
auto_scale_lr = dict(base_batch_size=4096)
warmup_epochs = 20
max_epochs = 800
# The base's warmup + cosine, re-timed (the base evaluated its epochs when it was read).
param_scheduler = _base_.param_scheduler
param_scheduler[0].end = param_scheduler[1].begin = warmup_epochs
param_scheduler[1].update(end=max_epochs, T_max=max_epochs - warmup_epochs)
train_cfg = dict(max_epochs=max_epochs)
