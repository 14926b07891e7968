# ImageNet-1k training images (labels unused) for FastMIM pre-training at 128 px.
# Layout: data/imagenet/train/<class>/*.JPEG (see docs/data.md).
dataset_type = 'ImageFolder'
data_root = 'data/imagenet'

# lazy=True: only the header is parsed at load; RandomResizedCrop draws the box from it,
# decodes the JPEG at the smallest 1/2, 1/4 or 1/8 scale that still covers 128 px
# (reducing_gap=1, its default) and resizes only the box. One worker makes 1.8x the crops per
# second of torchvision's full decode on ImageNet-sized JPEGs, 2.7x on 1000-px ones
# (docs/benchmark.md, data pipeline).
train_pipeline = [
    dict(type='LoadImageRGB', lazy=True),
    dict(type='RandomResizedCrop', size=128, scale=(0.2, 1.0), interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=256,  # per GPU; the published recipes state the total batch in each config
    # Per GPU. One worker makes about 800 crops/s of ImageNet-sized JPEGs on one core of the
    # benchmark machine and an H100 trains FastMIM ViT-B at about 5,700 images/s
    # (docs/benchmark.md), so 8 workers just keep it fed. A node with fewer than 8 free cores
    # per GPU should use fewer.
    num_workers=8,
    persistent_workers=True,  # no re-forking of 8 workers x GPUs at each of 400-800 epochs
    pin_memory=True,  # page-locked batches: a faster host-to-device copy
    # prefetch_factor stays PyTorch's 2 (2 batches of 256 x 49 KB in flight per worker); it is
    # not set here because DataLoader rejects it when a derived config sets num_workers=0.
    drop_last=True,
    # DefaultSampler's order, plus per-sample seeds (a crop depends on seed, epoch and index
    # only, not on the worker) and skipping the batches a resumed epoch has already seen.
    sampler=dict(type='ResumableSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='train',
                 with_label=False, pipeline=train_pipeline),
)
