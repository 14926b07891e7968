"""tools/train.py's flags folded into the config, before the Runner is built.

The tools that show or run what a training run will train share these functions, so that a
flag does the same in each: tools/train.py folds all of them (:func:`apply_args`),
tools/misc/print_config.py those that only rewrite the config (:func:`apply_config_flags`).
The command line itself is parsed in tools/train.py and :mod:`fastmim.cli`; this module sits
above the engine, beside :mod:`fastmim.cli`, whose launch flags it folds too.
"""
import logging
import os.path as osp

import torch
from mmengine.logging import print_log

from fastmim.cli import apply_launch_args
from fastmim.engine.checkpoint import check_checkpoint_file, pretrained_inits
from fastmim.engine.last_checkpoint import RESUMING, checkpoint_named_by, latest_checkpoint
from fastmim.errors import CheckpointError
from fastmim.registry import type_name
from fastmim.resume_target import an_earlier_run


def apply_args(cfg, args):
    """Fold the command-line flags into the config, as mmpretrain's train.py does. A config
    that sets ``resume = True`` itself (no checkpoint named) resumes from the work dir's latest
    checkpoint as ``--resume`` finds it, moved work dirs included. A run that starts afresh
    where another run left checkpoints says so (:func:`~fastmim.resume_target.an_earlier_run`):
    until it saves, ``--resume`` would continue that run, not this one."""
    apply_launch_args(cfg, args)
    apply_config_flags(cfg, args)
    if args.resume is not None:
        apply_resume(cfg, args.resume)
    elif cfg.get('resume') and not cfg.get('load_from'):
        cfg.load_from = latest_checkpoint(cfg.work_dir)
    if not cfg.get('resume'):
        earlier_run = an_earlier_run(cfg.work_dir)
        if earlier_run:
            print_log(earlier_run, logger='current', level=logging.WARNING)


def apply_config_flags(cfg, args):
    """The flags that only rewrite the config (``--fsdp``, ``--amp``/``--amp-dtype``,
    ``--compile``, ``--auto-scale-lr``: also the config's own ``auto_scale_lr.enable``), in
    the order training applies them; also what tools/misc/print_config.py shows."""
    if args.fsdp:
        # Loads mmengine's FlexibleRunner; the registry's locations load it for a config
        # that names FSDP itself, so a run without FSDP never imports it.
        from fastmim.engine.fsdp import enable_fsdp
        enable_fsdp(cfg)
    if args.amp or args.amp_dtype:
        set_mixed_precision(cfg.optim_wrapper, args.amp_dtype)
    if args.compile:
        add_compile_hook(cfg)
    prepare_auto_scale_lr(cfg, args.auto_scale_lr)


def set_mixed_precision(optim_wrapper, dtype=None):
    """Autocast in ``dtype`` (on CUDA else the config's, else fp16; on the CPU bf16) for the
    optimiser wrapper config. fp16 on CUDA needs loss scaling (mmengine's
    AmpOptimWrapper, guarded); bf16 has fp32's exponent range and needs none, and without the
    scaler a step saves its pass over every gradient (unscale and overflow check), so bf16
    (the CPU's default, CUDA's on request) runs as plain autocast. The wrappers are named with
    their scope, so that mmdet and mmseg configs (another default scope) find them too."""
    if not torch.cuda.is_available():
        if dtype == 'float16':
            raise ValueError('--amp-dtype float16 needs CUDA, where its loss scaling runs; the '
                             'CPU runs bf16 autocast (--amp or --amp-dtype bfloat16)')
        dtype = 'bfloat16'
    dtype = dtype or optim_wrapper.get('dtype') or 'float16'
    if dtype == 'float16':
        optim_wrapper.type = 'fastmim.GuardedAmpOptimWrapper'
        optim_wrapper.setdefault('loss_scale', 'dynamic')
    else:
        optim_wrapper.type = 'fastmim.AutocastOptimWrapper'
        optim_wrapper.pop('loss_scale', None)
    optim_wrapper.dtype = dtype


def add_compile_hook(cfg):
    """``--compile``: add ``CompileModulesHook`` unless the config lists one. A second hook
    would compile the modules again with the default options, after the config's hook, and so
    silently replace the options the config gave it (``mode='max-autotune'``, as
    docs/pretrain.md suggests)."""
    hooks = list(cfg.get('custom_hooks') or [])
    listed = [hook for hook in hooks if type_name(hook) == 'CompileModulesHook']
    if listed:
        print_log(f'--compile: the config already lists {listed[0]}; it compiles as written',
                  logger='current')
        return
    cfg.custom_hooks = hooks + [dict(type='fastmim.CompileModulesHook')]


def prepare_auto_scale_lr(cfg, requested):
    """Scaling the lr by the images of one optimiser update over
    ``auto_scale_lr.base_batch_size``, when ``--auto-scale-lr`` asks (``requested``) or the
    config enables it itself (``auto_scale_lr.enable=True``, also from ``--cfg-options``).
    mmengine's ``Runner.scale_lr`` counts GPUs x ``batch_size`` only, so with
    ``optim_wrapper.accumulative_counts=N`` it would scale by 1/N of the batch that each
    update averages over (the reference release counts the accumulation); the base is
    divided by N here so that mmengine's ratio counts it, whichever of the two enables the
    scaling. A missing or non-positive base is refused here in one line, before mmengine
    would fail on it with an AssertionError or a ZeroDivisionError."""
    scale_cfg = cfg.get('auto_scale_lr')
    if not requested and not (isinstance(scale_cfg, dict) and scale_cfg.get('enable')):
        return
    asked_by = '--auto-scale-lr' if requested else 'auto_scale_lr.enable'
    base = scale_cfg.get('base_batch_size') if isinstance(scale_cfg, dict) else None
    if isinstance(base, bool) or not isinstance(base, (int, float)) or base <= 0:
        raise ValueError(f'{asked_by} needs a positive auto_scale_lr.base_batch_size in '
                         f'the config (the total batch its lr is meant for), got {base!r}')
    cfg.auto_scale_lr.enable = True
    accumulation = (cfg.get('optim_wrapper') or {}).get('accumulative_counts', 1)
    if accumulation > 1:
        cfg.auto_scale_lr.base_batch_size = base / accumulation
        print_log(f'{asked_by}: each update accumulates {accumulation} batches '
                  f'(optim_wrapper.accumulative_counts), so the lr is scaled by GPUs x '
                  f'batch_size x {accumulation} / {base}; mmengine\'s line below counts the '
                  f'accumulation in its base batch size ({base} / {accumulation})',
                  logger='current')


def log_scaled_lr(cfg, world_size):
    """Say the lr that auto_scale_lr trains at: mmengine's ``Runner.scale_lr`` scales every
    parameter group's lr and logs the factor only, while the ``base_lr`` of every training log
    line (the optimiser wrapper's base settings) stays the config's, so a log read later would
    show an lr that never trained. Called once the Runner knows ``world_size``; the factor is
    mmengine's, with the base batch size that :func:`prepare_auto_scale_lr` set."""
    scale_cfg = cfg.get('auto_scale_lr')
    if not (isinstance(scale_cfg, dict) and scale_cfg.get('enable')):
        return
    ratio = world_size * cfg.train_dataloader.batch_size / scale_cfg.base_batch_size
    lr = ((cfg.get('optim_wrapper') or {}).get('optimizer') or {}).get('lr')
    scaled = f': optimizer.lr={lr:g} trains at {lr * ratio:g}' if lr is not None else ''
    print_log(f'auto_scale_lr: every parameter group\'s lr is scaled by {ratio:g}{scaled}; '
              f'the base_lr of the training log stays the config\'s unscaled lr (mmengine '
              f'scales the groups only)', logger='current')


def _check_named_checkpoint(last_checkpoint, path):
    """Refuse a ``last_checkpoint`` that names a missing or unreadable file, naming
    ``last_checkpoint``: the loader would refuse it as ``load_from``, a key the user never
    set."""
    try:
        check_checkpoint_file(path, resuming=True)
    except CheckpointError as error:
        raise CheckpointError(f'--resume: {last_checkpoint} names {path}: {error}') from None


def apply_resume(cfg, resume):
    """``--resume [CKPT]``: resume from CKPT, or (``resume='auto'``) from the work dir's latest
    checkpoint (the one ``last_checkpoint`` names, or without that file the one that records
    the most iterations, :func:`~fastmim.engine.last_checkpoint.newest_recorded`); with none
    there yet, the run starts as it would without ``--resume``, from the config's ``load_from``
    weights if it names any. mmengine's tools clear ``load_from`` for ``--resume`` without a
    path, so the first start of a job restarted with the same command (``--resume
    --cfg-options load_from=CKPT``, the SLURM requeue recipe) would train from random weights
    without a word; here it keeps them. A ``load_from`` that the resumed checkpoint replaces
    is named."""
    load_from = cfg.get('load_from')
    resume_from = (latest_checkpoint(cfg.work_dir) if resume == 'auto' else
                   checkpoint_named_by(resume, RESUMING))
    if resume_from is None:
        start = f'the weights of load_from {load_from}' if load_from else 'scratch'
        print_log(f'--resume: no checkpoint in {cfg.work_dir} yet; starting from {start}',
                  logger='current')
        cfg.resume = False
        return
    if resume == 'auto':
        _check_named_checkpoint(osp.join(cfg.work_dir, 'last_checkpoint'), resume_from)
    if load_from and load_from != resume_from:
        print_log(f'--resume from {resume_from}: load_from {load_from} is not loaded (the '
                  f'checkpoint holds every weight)', logger='current')
    cfg.resume = True
    cfg.load_from = resume_from


def skip_pretrained_init_when_resuming(cfg):
    """A resumed run takes every weight from its checkpoint, so the pre-trained weights a
    module's ``init_cfg`` would load first (mmengine initialises before it resumes) are not
    needed, and a pre-training file moved or cleaned up since the run started must not stop
    the resume with 'checkpoint not found'. A run with nothing to resume yet keeps them."""
    if not cfg.get('resume'):
        return
    resume_from = cfg.get('load_from') or latest_checkpoint(cfg.work_dir)
    if resume_from is None:
        return
    for key, owner, init in list(pretrained_inits(cfg.model)):
        owner['init_cfg'] = None
        print_log(f'resuming from {resume_from}: {key} does not load {init["checkpoint"]} '
                  f'first', logger='current')
