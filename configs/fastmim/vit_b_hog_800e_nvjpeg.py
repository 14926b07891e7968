# FastMIM ViT-B/16, 800 epochs, with the JPEGs decoded on the GPU (nvJPEG) instead of in the
# DataLoader workers: for nodes whose CPU cores cannot decode as fast as the GPUs train. The
# workers only read each file, parse its header and draw the crop box; the model's data
# preprocessor decodes the batch with torchvision's decode_jpeg on the GPU, crops, resizes
# (antialiased bicubic, as the workers do) and flips there. PNGs and CMYK JPEGs are still
# decoded in the workers. Training is otherwise vit_b_hog_800e.py's. Any recipe switches the
# same way: decode='device' in its RandomResizedCrop, RandomHorizontalFlip for mmcv's RandomFlip
# (which needs a decoded image) and the data preprocessor type below. See docs/benchmark.md.
_base_ = ['./vit_b_hog_800e.py']

train_pipeline = [
    dict(type='LoadImageRGB', lazy=True),
    dict(type='RandomResizedCrop', size=128, scale=(0.2, 1.0), interpolation='bicubic',
         decode='device'),
    dict(type='RandomHorizontalFlip', prob=0.5),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
model = dict(data_preprocessor=dict(type='JpegDecodePreprocessor'))
