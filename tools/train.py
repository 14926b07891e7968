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
    import (seconds; more from a cluster's shared file system): a job preempted meanwhile would
    die of the signal, status 143, which a requeue script does not requeue although nothing is
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
    so it takes the config, and argparse then asks for the config ('the following arguments
    are required: config') without saying why; the error says how to give both instead."""
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


def load_run(argv):
    """The command line and config of the run. The signals recorded while the modules imported
    go to the config's PreemptionHook (``record_signals_before_training``); a run that ends
    before (an error, ``--help``) puts the handlers back and sends them again, to act as they
    would have: left recorded, torchrun's SIGTERM would leave a process that waits before
    reporting an error (for the node's first process to report it, ``run_cli``) to print it
    once more."""
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
    from fastmim.resume_target import note_the_start
    from fastmim.train_flags import apply_args, log_scaled_lr, skip_pretrained_init_when_resuming

    try:
        stop_with_the_launcher(args.launcher)
        apply_args(cfg, args)
        note_the_start(cfg)
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
    # No fastmim; importing it puts this checkout first on sys.path, where the record is found.
    from early_checks import (refuse_a_missing_config, refuse_a_missing_load_from,
                              refuse_resuming_weights_only)
    record_signals_while_importing()  # before the checks: they look for torch, and may read
    refuse_a_missing_config(sys.argv[1:])  # a checkpoint from a slow shared file system
    refuse_resuming_weights_only(sys.argv[1:])
    refuse_a_missing_load_from(sys.argv[1:])
    from fastmim.cli import run_cli
    from fastmim.resume_target import interrupted_hint
    run_cli(main, interrupted_hint=interrupted_hint)
