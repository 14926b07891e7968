# Fine-tune FastMIM CMT-S (800 epochs at 128 px) on ImageNet-1k at 224 px for 100 epochs.
# Published: 83.9 top-1, but no fine-tuning command: REFERENCE.md and the release's README give
# none. lr and layer decay here are the defaults of the release's main_finetune.py (base lr
# 1e-3 per 256 -> 4e-3 at batch 1024, layer decay 0.75, drop path 0.1); everything else is the
# shared recipe. CMT's last stage has no final norm, so the head adds a LayerNorm (fc_norm)
# after pooling. The relative position biases are resized from the 128-px grid on loading
# (which the release forgets to do).
_base_ = ['./vit_b_ft_100e.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='CMT',
        arch='s',
        img_size=224,
        drop_path_rate=0.1,
        init_cfg=dict(type='FastMIMPretrained',
                      checkpoint='work_dirs/cmt_s_hog_800e/epoch_800.pth',
                      prefix='backbone.')),
    head=dict(pre_norm='ln'),
)

lr = 1e-3 * 1024 / 256
optim_wrapper = dict(optimizer=dict(lr=lr), paramwise_cfg=dict(layer_decay_rate=0.75))

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
