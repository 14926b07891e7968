# Shared by the Fashion-MNIST study (tools/experiments/run_fashion_mnist.py, docs/experiments.md):
# the data, its normalisation and the small ViT that every stage uses.
# Data: the Debian package dataset-fashion-mnist, installed or unpacked in ~/.cache/fastmim/data
# (FashionMNIST finds either; the runner fetches it; set dataset.data_root to use another folder).
model = dict(
    # Mean and std of the 60,000 training images on the 0-255 scale (gray: equal per channel).
    data_preprocessor=dict(mean=[72.94, 72.94, 72.94], std=[90.02, 90.02, 90.02]),
    # A ViT for 32-px inputs: patch 4 -> 8x8 tokens, 128 wide, 4 blocks, 4 heads (0.8 M weights).
    backbone=dict(type='VisionTransformer', arch=dict(embed_dim=128, depth=4, num_heads=4),
                  img_size=32, patch_size=4),
)

# 28-px images are upsampled to 32 px, which patch 4, HOG cells of 4 and mask blocks of 8 divide.
eval_pipeline = [
    dict(type='ResizeShorterCenterCrop', crop_size=32, crop_pct=1.0, interpolation='bicubic'),
    dict(type='PackInputs'),
]
# Evaluation: the 10,000 test images.
test_dataloader = dict(
    batch_size=250,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='FashionMNIST', split='test', pipeline=eval_pipeline),
)
test_evaluator = dict(type='Accuracy', topk=(1, ))
