# Ablation: ViT-B FastMIM pre-trained at 160 px instead of 128 (everything else as published).
_base_ = ['../vit_b_hog_800e.py']

input_size = 160
train_pipeline = [
    dict(type='LoadImageRGB', lazy=True),  # as the base: decode only what the crop needs
    dict(type='RandomResizedCrop', size=input_size, scale=(0.2, 1.0), interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
model = dict(backbone=dict(img_size=input_size))
