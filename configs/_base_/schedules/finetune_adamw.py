# Fine-tuning schedule of MAE / FastMIM: AdamW (0.9, 0.999), wd 0.05, layer-wise lr decay,
# 5 warmup epochs (per iteration, linear) then cosine to min lr 1e-6, 100 epochs.
# lr = base_lr (per 256 images) x total batch / 256; each recipe sets lr and layer_decay_rate
# only. With layer decay every parameter group's lr is lr x scale and MAE's schedule ends each
# group at min_lr x scale: CosineAnnealingToMinLR takes min_lr and divides it by the built
# optimiser's lr, so the minimum follows lr (after --auto-scale-lr too).
# No weight decay on biases, 1-D parameters (norms), position embeddings, the class token and
# relative-position biases (Swin's tables, CMT's biases): LayerDecayOptimWrapperConstructor's
# defaults: MAE's 1-D rule and the parameters the backbone names in no_weight_decay_names()
# (timm's no_weight_decay() sets; CMT's biases), relative-position biases included, which the
# release decays (its util/lr_decay.py exempts 1-D tensors and no_weight_decay() only: its Swin
# lists only absolute_pos_embed, its CMT only pos_embed and cls_token), where Swin's own release
# exempts the tables (github.com/microsoft/Swin-Transformer, models/swin_transformer.py,
# no_weight_decay_keywords).
optim_wrapper = dict(
    # fp16 autocast with loss scaling on CUDA; tools/train.py falls back to bf16 autocast on CPU.
    type='GuardedAmpOptimWrapper',
    # torch's fused AdamW, one kernel for every parameter (why: fastmim_adamw.py).
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05,
                   fused=True),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.75),
    # Gradient clipping is off in the published recipes.
    clip_grad=None,
    on_nonfinite='skip',
)

warmup_epochs = 5
max_epochs = 100
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingToMinLR', eta_min=1e-6, by_epoch=True, begin=warmup_epochs,
         end=max_epochs, T_max=max_epochs - warmup_epochs, convert_to_iter_based=True),
]
# mmengine's epoch loop, but a resumed run repeats the uninterrupted one exactly (mixup, cutmix
# and erasing draw from per-iteration seeds; docs/long_runs.md).
train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# --auto-scale-lr rescales lr by (actual total batch) / base_batch_size.
auto_scale_lr = dict(base_batch_size=1024, enable=False)
# Optional EMA of the weights (off in the published recipes; timm's ModelEma decay 0.9999):
# custom_hooks = [dict(type='EMAHook', momentum=1e-4)]
