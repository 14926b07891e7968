# Fashion-MNIST dense-task study, in-domain pre-training (docs/experiments.md, "Pre-training on
# the canvases"): FastMIM on the 4,000 training canvases of the dense study, without their
# label maps, at their own size of 64 px, so that the ViT meets in pre-training the grid
# (16x16 tokens), the scale and the several items per image that UperNet then segments. The
# classification study's pre-training (fashion_mnist_pretrain.py) saw single items at 32 px.
# Everything else is that config's FastMIM: the same ViT, 4-px HOG cells, 8-px mask blocks
# (64 blocks, 16 visible), mask ratio 0.75, decoder 128 wide x 1 block, and the same
# normalisation (the UperNet configs use it too).
# Budget: 6 epochs at batch 64 (372 updates), about 1.6x the image-pixels of the classification
# pre-training (60,000 images of 32 px).
#   .venv/bin/python tools/train.py configs/experiments/fashion_mnist_canvas_pretrain.py \
#       --cfg-options train_dataloader.dataset.data_root=work_dirs/fashion_mnist/canvases
# (the canvases are written by tools/experiments/run_fashion_mnist_dense.py)
_base_ = ['./fashion_mnist_pretrain.py']

canvas_size = 64
model = dict(backbone=dict(img_size=canvas_size))

train_pipeline = [
    dict(type='LoadImageRGB'),  # gray PNG -> three equal channels, as UperNet's loader
    dict(type='RandomResizedCrop', size=canvas_size, scale=(0.4, 1.0), interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=64,
    dataset=dict(_delete_=True, type='ImageFolder', data_root='work_dirs/fashion_mnist/canvases',
                 data_prefix='images/training', with_label=False, pipeline=train_pipeline),
)
auto_scale_lr = dict(base_batch_size=64)
max_epochs = 6
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-2, by_epoch=True, begin=1,
         end=max_epochs, T_max=max_epochs - 1, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
work_dir = 'work_dirs/fashion_mnist/canvas_pretrain'
