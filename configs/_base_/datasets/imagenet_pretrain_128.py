# ImageNet-1k training images (labels unused) for FastMIM pre-training at 128 px.
# Layout: data/imagenet/train/<class>/*.JPEG (see docs/data.md).
dataset_type = 'ImageFolder'
data_root = 'data/imagenet'

train_pipeline = [
    dict(type='LoadImageRGB'),
    dict(type='RandomResizedCrop', size=128, scale=(0.2, 1.0), interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=256,  # per GPU; the published recipes state the total batch in each config
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='train',
                 with_label=False, pipeline=train_pipeline),
)
