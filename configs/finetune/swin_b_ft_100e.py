# Fine-tune FastMIM Swin-B (400 epochs at 128 px, window 4) on ImageNet-1k at 224 px, window 7,
# for 100 epochs. Total batch 1024 (128 x 8 GPUs), lr 1e-3 x 1024 / 256 = 4e-3, layer decay
# 0.80, drop path 0.1; the rest as for ViT-B. Swin ends in its own LayerNorm, so the head
# pools and classifies without a new fc_norm. Relative-position tables are resized from
# (2*4-1)^2 to (2*7-1)^2 rows when the checkpoint is loaded.
# Published: 84.1 top-1.
_base_ = ['./vit_b_ft_100e.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinTransformer',
        arch='b',
        img_size=224,
        window_size=7,
        drop_path_rate=0.1,
        init_cfg=dict(type='FastMIMPretrained',
                      checkpoint='work_dirs/swin_b_hog_400e/epoch_400.pth',
                      prefix='backbone.')),
    head=dict(pre_norm=None),
)

lr = 1e-3 * 1024 / 256
optim_wrapper = dict(optimizer=dict(lr=lr), paramwise_cfg=dict(layer_decay_rate=0.80))

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
