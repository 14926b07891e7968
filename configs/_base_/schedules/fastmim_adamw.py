# AdamW with per-iteration linear warmup then half-cycle cosine to 0, as in the published recipes:
# the Swin-B optimisation, 400 epochs (10 warmup) at a total batch of 2048 with lr = base lr
# 1.5e-4 per 256 images x 2048 / 256 = 1.2e-3 (fastmim_adamw_800e.py: ViT-B's). A recipe at
# another total batch sets lr and auto_scale_lr.base_batch_size.
# No weight decay on norms, biases and other 1-D parameters (paramwise_cfg), nor on what the model
# declares exempt (DeclaredNoDecayOptimWrapperConstructor): the parameters the backbone names in
# no_weight_decay_names() (position embeddings, class tokens, relative-position tables: Swin's,
# CMT's, timm's own sets for TimmBackbone) and FastMIM's mask token. The reference release exempts
# only 1-D parameters and biases, so it decays the tokens and the tables; the mask token's and
# Swin's tables' decay is accidental (docs/pretrain.md, section 3).
optim_wrapper = dict(
    # fp16 autocast with loss scaling on CUDA; tools/train.py falls back to bf16 autocast on CPU.
    type='GuardedAmpOptimWrapper',
    # torch's fused AdamW updates every parameter in one kernel instead of a chain of per-tensor
    # ops: ViT-B's update takes 0.042 s instead of 0.23 s on a 2-core CPU, and the default update
    # was 6.4 ms of a 41 ms FastMIM ViT-B step on an H100 (docs/benchmark.md).
    optimizer=dict(type='AdamW', lr=1.5e-4 * 2048 / 256, betas=(0.9, 0.95), weight_decay=0.05,
                   fused=True),
    constructor='DeclaredNoDecayOptimWrapperConstructor',
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0., flat_decay_mult=0.),
    accumulative_counts=1,
    # Gradient clipping is off in the published recipes; e.g. clip_grad=dict(max_norm=3.0).
    clip_grad=None,
    on_nonfinite='skip',
)

warmup_epochs = 10
max_epochs = 400
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True, begin=warmup_epochs,
         end=max_epochs, T_max=max_epochs - warmup_epochs, convert_to_iter_based=True),
]
# mmengine's epoch loop, but a resumed run (--resume, any checkpoint, also one saved inside an
# epoch) repeats the uninterrupted one exactly (docs/long_runs.md).
train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=max_epochs)
# --auto-scale-lr rescales lr by (actual total batch) / base_batch_size.
auto_scale_lr = dict(base_batch_size=2048, enable=False)
