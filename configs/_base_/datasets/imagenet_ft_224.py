# ImageNet-1k with labels for fine-tuning at 224 px (MAE / FastMIM recipe).
# Layout: data/imagenet/{train,val}/<class>/*.JPEG (see docs/data.md); labels = sorted folder order.
# Random erasing (0.25, pixel mode) and mixup/cutmix run on the device batch after
# normalisation, in the model's data preprocessor (ClsDataPreprocessor), not here.
dataset_type = 'ImageFolder'
data_root = 'data/imagenet'

train_pipeline = [
    dict(type='LoadImageRGB'),
    dict(type='RandomResizedCrop', size=224, scale=(0.08, 1.0), interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    # timm's RandAugment; with it on, timm (and so MAE / FastMIM) applies no colour jitter.
    dict(type='RandAugment', config_str='rand-m9-mstd0.5-inc1', img_size=224,
         interpolation='bicubic'),
    dict(type='PackInputs'),
]
# Shorter side to 224 / 0.875 = 256 (bicubic), then the central 224 x 224.
test_pipeline = [
    dict(type='LoadImageRGB'),
    dict(type='ResizeShorterCenterCrop', crop_size=224, crop_pct=0.875, interpolation='bicubic'),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=128,  # per GPU; each recipe states its total batch
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    drop_last=True,  # mixup/cutmix pair the images of a batch: keep every batch full (even)
    # DefaultSampler's order plus per-sample seeds: a resumed run repeats the uninterrupted one
    # (docs/long_runs.md).
    sampler=dict(type='ResumableSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='train', with_label=True,
                 pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=128,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    # test_mode: an unreadable image is an error naming it, not replaced by a random other
    # image (which the metric would count twice), as training does.
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='val', with_label=True,
                 pipeline=test_pipeline, test_mode=True),
)
val_evaluator = dict(type='Accuracy', topk=(1, 5))

test_dataloader = val_dataloader
test_evaluator = val_evaluator
