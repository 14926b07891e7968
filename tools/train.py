"""Train any config: FastMIM pre-training, fine-tuning, mmdet and mmseg configs.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
                                 [--amp-dtype {float16,bfloat16}] [--compile]
                                 [--auto-scale-lr] [--fsdp] [--cfg-options k=v ...]
                                 [--launcher {none,pytorch,slurm,mpi}]
                                 [--trust-checkpoint CKPT] [--debug]
"""
import argparse
import importlib.util
import os.path as osp
import signal
import sys

# The module that records the preemption signals until a PreemptionHook takes them over.
EARLY_SIGNALS = 'fastmim.engine.early_signals'


def record_signals_while_importing():
    """Record SIGTERM and SIGUSR1 from the first line on, before fastmim, mmengine and torch
    import (seconds; more from a cluster's shared file system): a job preempted meanwhile died
    of the signal, status 143, which a requeue script does not requeue although nothing was
    lost. :func:`load_run` hands them to the config's PreemptionHook, which stops the run
    before training with its status; without the hook the signal acts as it would have. Only when
    run as a script: the tests and tools/demo.py import this module.

    The record is ``fastmim.engine.early_signals``, loaded from its file under its own name:
    importing it through the package would first import torch (``fastmim/__init__.py``), while
    this way the package's own import finds the module already loaded, so the hook takes over
    this very record. The file is the one of the fastmim that ``import fastmim`` finds (an
    installed version, or this repository's), so that the hook and the record are one module.
    Nothing is recorded without an importable fastmim (its import fails next, with its error)
    or with one that has no such module (a version older than the record)."""
    package = importlib.util.find_spec(EARLY_SIGNALS.partition('.')[0])
    if package is None or not package.submodule_search_locations:
        return
    module_file = osp.join(package.submodule_search_locations[0],
                           *EARLY_SIGNALS.split('.')[1:]) + '.py'
    if not osp.isfile(module_file):
        return
    spec = importlib.util.spec_from_file_location(EARLY_SIGNALS, module_file)
    early_signals = importlib.util.module_from_spec(spec)
    sys.modules[EARLY_SIGNALS] = early_signals
    spec.loader.exec_module(early_signals)
    early_signals.record(getattr(signal, signal_name)
                         for signal_name in early_signals.PREEMPTION_SIGNALS)


def parse_args(argv):
    from fastmim.cli import add_launch_args, parse_launch_args
    parser = argparse.ArgumentParser(description='Train a model from a config')
    add_launch_args(parser, cfg_options_example='train_dataloader.batch_size=64')
    add_train_args(parser)
    explain_a_config_taken_by_resume(parser, sys.argv[1:] if argv is None else argv)
    return parse_launch_args(parser, argv)


def explain_a_config_taken_by_resume(parser, argv):
    """``--resume CONFIG`` (the flag before the config): ``--resume`` takes an optional CKPT,
    so it took the config, and argparse then asked for the config ('the following arguments
    are required: config') without saying why. That error now says how to give both."""
    taken = [value for flag, value in zip(argv, argv[1:])
             if flag == '--resume' and value.endswith('.py')]
    if not taken:
        return
    error = parser.error

    def error_naming_the_order(message):
        if message.endswith('required: config'):
            message = (f'--resume took {taken[-1]} as its CKPT, leaving no config: put the '
                       'config first (tools/train.py CONFIG --resume), or give --resume=CKPT')
        error(message)
    parser.error = error_naming_the_order


def add_train_args(parser):
    """The flags of training itself, beside the launch ones; tools/demo.py offers them too, so
    that its usage and errors are its own."""
    parser.add_argument('--resume', nargs='?', const='auto', default=None, metavar='CKPT',
                        help='resume from CKPT, or from the latest checkpoint in the work dir '
                        'when no path is given; with none there yet, start as without --resume '
                        '(from load_from, if the config or --cfg-options sets it)')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: fp16 with loss scaling on CUDA, bf16 on CPU')
    parser.add_argument('--amp-dtype', choices=['float16', 'bfloat16'],
                        help='mixed precision in this dtype (implies --amp); bfloat16 runs '
                        'autocast without loss scaling, on CUDA too')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the backbone, decoder and head '
                        '(CompileModulesHook); the first iterations are slow while it compiles')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the total batch of one update (GPUs x batch_size '
                        'x optim_wrapper.accumulative_counts) over auto_scale_lr.base_batch_size')
    parser.add_argument('--fsdp', action='store_true',
                        help='shard the model, gradients and optimiser state over the processes '
                        "(FSDP: mmengine's FlexibleRunner and FSDPStrategy); checkpoints are "
                        'gathered whole, as DDP writes them (tools/dist_train.sh CONFIG N --fsdp)')
    parser.add_argument('--trust-checkpoint', action='append', default=[], metavar='CKPT',
                        help='allow full unpickling of this checkpoint (only for files you '
                        'trust): a path, or a remote one as written (https://..., '
                        'open-mmlab://NAME)')


def set_mixed_precision(optim_wrapper, dtype=None):
    """Autocast in ``dtype`` (on CUDA else the config's, else fp16; on the CPU bf16) for the
    optimiser wrapper config. fp16 on CUDA needs loss scaling (mmengine's
    AmpOptimWrapper, guarded); bf16 has fp32's exponent range and needs none, and without the
    scaler a step saves its pass over every gradient (unscale and overflow check), so bf16
    (the CPU's default, CUDA's on request) runs as plain autocast. The wrappers are named with
    their scope, so that mmdet and mmseg configs (another default scope) find them too."""
    import torch
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


def apply_args(cfg, args):
    """Fold the command-line flags into the config, as mmpretrain's train.py does. A config
    that sets ``resume = True`` itself (no checkpoint named) resumes from the work dir's latest
    checkpoint as ``--resume`` finds it, moved work dirs included."""
    from fastmim.cli import apply_launch_args
    from fastmim.engine.last_checkpoint import latest_checkpoint
    apply_launch_args(cfg, args)
    apply_config_flags(cfg, args)
    if args.resume is not None:
        apply_resume(cfg, args.resume)
    elif cfg.get('resume') and not cfg.get('load_from'):
        cfg.load_from = latest_checkpoint(cfg.work_dir)


def apply_config_flags(cfg, args):
    """The flags that only rewrite the config (``--fsdp``, ``--amp``/``--amp-dtype``,
    ``--compile``, ``--auto-scale-lr``: also the config's own ``auto_scale_lr.enable``), in
    the order training applies them; also what tools/misc/print_config.py shows."""
    if args.fsdp:
        from fastmim.engine.fsdp import enable_fsdp
        enable_fsdp(cfg)
    if args.amp or args.amp_dtype:
        set_mixed_precision(cfg.optim_wrapper, args.amp_dtype)
    if args.compile:
        add_compile_hook(cfg)
    prepare_auto_scale_lr(cfg, args.auto_scale_lr)


def add_compile_hook(cfg):
    """``--compile``: add ``CompileModulesHook`` unless the config lists one. A second hook
    compiled the modules again with the default options, after the config's hook, so the
    options the config gave it (``mode='max-autotune'``, as docs/pretrain.md suggests) were
    replaced without a word."""
    from mmengine.logging import print_log

    from fastmim.registry import type_name

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
    ``optim_wrapper.accumulative_counts=N`` it scaled by 1/N of the batch that each update
    averages over, without a word (the reference release counts the accumulation); the base
    is divided by N here so that mmengine's ratio counts it. Enabled in the config, the
    scaling missed this correction (an lr halved with 2 accumulated batches). A missing or
    non-positive base was an AssertionError or a ZeroDivisionError in mmengine."""
    from mmengine.logging import print_log

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
    line (the optimiser wrapper's base settings) stays the config's, so a log read later showed
    an lr that never trained. Called once the Runner knows ``world_size``; the factor is
    mmengine's, with the base batch size that :func:`prepare_auto_scale_lr` set."""
    from mmengine.logging import print_log

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
    """A ``last_checkpoint`` naming a deleted file was refused as a missing ``load_from``,
    a key the user never set."""
    from fastmim.engine.checkpoint import check_checkpoint_file
    from fastmim.errors import CheckpointError
    try:
        check_checkpoint_file(path)
    except CheckpointError as error:
        raise CheckpointError(f'--resume: {last_checkpoint} names {path}: {error}') from None


def apply_resume(cfg, resume):
    """``--resume [CKPT]``: resume from CKPT, or (``resume='auto'``) from the work dir's latest
    checkpoint (the one ``last_checkpoint`` names, or without that file the one that records
    the most iterations, :func:`~fastmim.engine.last_checkpoint.newest_recorded`); with none
    there yet, the run starts as it would without ``--resume``, from the config's ``load_from``
    weights if it names any. mmengine's tools clear ``load_from`` for
    ``--resume`` without a path, so the first start of a job restarted with the same command
    (``--resume --cfg-options load_from=CKPT``, the SLURM requeue recipe) trained from random
    weights without a word. A ``load_from`` that the resumed checkpoint replaces is named."""
    from mmengine.logging import print_log

    from fastmim.engine.last_checkpoint import checkpoint_named_by, latest_checkpoint
    load_from = cfg.get('load_from')
    resume_from = (latest_checkpoint(cfg.work_dir) if resume == 'auto' else
                   checkpoint_named_by(resume, 'resuming from'))
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
    needed: without this, a pre-training file moved or cleaned up since the run started stopped
    the resume with 'checkpoint not found'. A run with nothing to resume yet keeps them."""
    from mmengine.logging import print_log

    from fastmim.engine.checkpoint import pretrained_inits
    from fastmim.engine.last_checkpoint import latest_checkpoint

    if not cfg.get('resume'):
        return
    resume_from = cfg.get('load_from') or latest_checkpoint(cfg.work_dir)
    if resume_from is None:
        return
    for key, owner, init in list(pretrained_inits(cfg.model)):
        owner['init_cfg'] = None
        print_log(f'resuming from {resume_from}: {key} does not load {init["checkpoint"]} '
                  f'first', logger='current')


def load_run(argv):
    """The command line and config of the run. The signals recorded while the modules imported
    go to the config's PreemptionHook (``record_signals_before_training``); a run that ends
    before (an error, ``--help``) puts the handlers back and sends them again, to act as they
    would have: recorded, torchrun's SIGTERM left a process that waits before reporting an
    error (for the node's first process to report it, ``run_cli``) to print it once more."""
    try:
        args = parse_args(argv)
        import fastmim  # noqa: F401  registers modules, safe checkpoint I/O
        from fastmim.engine.config_loading import load_config
        from fastmim.engine.hooks.preemption_hook import record_signals_before_training
        from fastmim.engine.launcher_env import (check_launcher_env,
                                                 console_errors_only_beyond_rank_zero)

        check_launcher_env(args.launcher)
        console_errors_only_beyond_rank_zero(args.launcher)
        cfg = load_config(args.config, args.cfg_options)
        record_signals_before_training(cfg)
    except BaseException:
        # In sys.modules once anything records; not imported here: the error may be the
        # failed import of fastmim itself.
        early_signals = sys.modules.get(EARLY_SIGNALS)
        if early_signals is not None:
            early_signals.stop_recording(send_again=True)
        raise
    return args, cfg


def main(argv):
    args, cfg = load_run(argv)
    from fastmim.engine import early_signals
    from fastmim.engine.config_keys import refused_keys_located
    from fastmim.engine.launch import build_runner
    from fastmim.engine.launcher_lifecycle import stop_with_the_launcher
    from fastmim.models.data_preprocessors import check_device_decoding

    try:
        stop_with_the_launcher(args.launcher)
        apply_args(cfg, args)
        skip_pretrained_init_when_resuming(cfg)
        check_device_decoding(cfg)
        with refused_keys_located(cfg, args.cfg_options):
            runner = build_runner(cfg, ['train', 'val'] if cfg.get('val_cfg') else ['train'],
                                  trusted_checkpoints=args.trust_checkpoint)
            log_scaled_lr(cfg, runner.world_size)
            runner.train()
    finally:
        early_signals.stop_recording()


if __name__ == '__main__':
    from early_checks import refuse_a_missing_config, refuse_resuming_weights_only  # no fastmim
    refuse_a_missing_config(sys.argv[1:])
    refuse_resuming_weights_only(sys.argv[1:])
    record_signals_while_importing()
    from fastmim.cli import RESUME_HINT, run_cli
    run_cli(main, interrupted_hint=RESUME_HINT)
