# Demo: FastMIM on the embedded real photos (installed with the toolbox, nothing to download).
# A ViT-Tiny-sized encoder (192 wide, 6 blocks, 3 heads) at 128 px with the published masking,
# decoder and HOG target; a short schedule sized to finish in a few minutes on 2 CPU cores.
# `make demo` runs it; the loss falls and reconstructions are written under work_dirs/demo/vis/
# (tools/train.py without --work-dir: work_dirs/demo_vit_tiny_embedded/).
_base_ = ['./vit_b_hog_800e.py']

model = dict(backbone=dict(arch=dict(_delete_=True, embed_dim=192, depth=6, num_heads=3)))

# The recipe's pipeline (EmbeddedPhotos hands it decoded photos, so LoadImageRGB's lazy has
# nothing to do).
train_dataloader = dict(
    batch_size=32,
    num_workers=1,
    persistent_workers=True,
    pin_memory=False,
    dataset=dict(_delete_=True, type='EmbeddedPhotos', num_samples=256,
                 pipeline=_base_.train_pipeline),
)

optim_wrapper = dict(type='GuardedOptimWrapper', optimizer=dict(lr=1e-3))
auto_scale_lr = dict(base_batch_size=32)
warmup_epochs = 1
max_epochs = 12
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-2, by_epoch=True, begin=warmup_epochs,
         end=max_epochs, T_max=max_epochs - warmup_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)

default_hooks = dict(logger=dict(interval=4), checkpoint=dict(interval=4, max_keep_ckpts=1))
custom_hooks = [dict(type='ReconstructionVisualizationHook', interval=max_epochs, num_images=4)]
# No work_dir here: a config that inherits this one would inherit it too and overwrite the
# demo's checkpoints. `make demo` (tools/demo.py) names work_dirs/demo itself.
