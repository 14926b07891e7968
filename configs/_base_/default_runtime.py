# Runtime shared by every fastmim config.
default_scope = 'fastmim'

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    # Progress, ETA, lr, loss and memory every `interval` iterations.
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Keep the last three checkpoints; `last_checkpoint` names what --resume picks up. Old ones
    # are deleted only after the new one is written (mmengine's CheckpointHook deletes first).
    checkpoint=dict(type='SafeCheckpointHook', interval=1, max_keep_ckpts=3, save_last=True),
    # On SIGTERM or SIGUSR1 (SLURM preemption, --signal): save at the next iteration boundary
    # and exit with status 75; --resume continues exactly (docs/long_runs.md).
    preemption=dict(type='PreemptionHook'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # Plain-type checkpoints that load weights-only, and the model geometry in their meta.
    # A default hook (merged by key) rather than a custom one: a config that sets its own
    # custom_hooks list replaces the list but keeps this.
    checkpoint_meta=dict(type='CheckpointMetaHook'),
    # A checkpoint read for --resume checked (model, optimiser, what the config changes)
    # before any hook or mmengine loads from it.
    resume_checks=dict(type='ResumeChecksHook'),
    # Before the first iteration: train and val (kNN bank and test) datasets name the same
    # classes, and the model has an output for each (ImageFolder numbers each split's folders).
    dataset_classes=dict(type='DatasetClassesCheckHook'),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # tools/train.py switches to gloo when there is no CUDA device.
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
# Add dict(type='TensorboardVisBackend') to vis_backends to log to TensorBoard.
visualizer = dict(type='Visualizer', vis_backends=vis_backends)

log_processor = dict(window_size=10, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, diff_rank_seed=True)
