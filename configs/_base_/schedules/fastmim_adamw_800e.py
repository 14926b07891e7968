# The 800-epoch pre-training schedule of FastMIM ViT-B (also used for PVTv2-B2 and CMT-S):
# fastmim_adamw.py with 20 per-iteration warmup epochs, then half-cycle cosine to 0.
_base_ = ['./fastmim_adamw.py']

warmup_epochs = 20
max_epochs = 800
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True, begin=warmup_epochs,
         end=max_epochs, T_max=max_epochs - warmup_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
