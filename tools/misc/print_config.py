"""Print the config a training run will use: its ``_base_`` files merged, ``{{_base_.x}}``
resolved and ``--cfg-options`` applied, before anything is built.

    python tools/misc/print_config.py CONFIG [--cfg-options k=v ...] [--keys KEY ...]
                                             [--out FILE.py [--overwrite]]
                                             [--work-dir DIR] [--amp]
                                             [--amp-dtype {float16,bfloat16}] [--compile]
                                             [--auto-scale-lr] [--fsdp]

The config is loaded as tools/train.py loads it (``load_config``: the same checks, warnings and
errors; a ``_base_`` fragment, which train.py refuses, is printed too), and train.py's flags
that only rewrite the config are folded in as train.py folds them.
``--out`` writes the result as a config file that ``tools/train.py FILE.py`` loads as the same
config (``--resume`` and ``--launcher`` are given to train.py again; a work dir that neither the
config nor ``--work-dir`` set is then ``work_dirs/FILE``, see :func:`apply_train_flags`), its
length and warmup variables written with the values that run (:func:`flattened_text`); an
existing file is replaced only with ``--overwrite``, CONFIG itself never (:func:`check_out`).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for early_checks

NOT_MIRRORED = (
    "tools/train.py's --resume (it finds the checkpoint in the work dir when training starts) "
    'and --launcher are not taken, and what train.py adapts to the machine while it builds the '
    'runner is not shown (without CUDA: gloo, no SyncBN, bf16 instead of fp16 AMP). A work_dir '
    'that neither the config nor --work-dir sets is work_dirs/<config name> in training.')


def parse_args(argv):
    from fastmim.cli import CfgOptionsAction, add_debug_arg, add_overwrite_arg
    parser = argparse.ArgumentParser(
        description='Print the config tools/train.py would train with the same CONFIG, '
        '--cfg-options and flags', epilog=NOT_MIRRORED)
    parser.add_argument('config', help="config file (or 'fastmim::<path>', a packaged one)")
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                        help='override config keys, as tools/train.py does, e.g. '
                        'model.mask_ratio=0.6')
    parser.add_argument('--keys', nargs='+', metavar='KEY',
                        help='print only these keys, each as KEY = value (dots reach into '
                        'dicts and lists: model.mask_ratio, param_scheduler.0.end)')
    parser.add_argument('--out', metavar='FILE.py',
                        help='write the whole config to FILE.py instead of printing it (--keys '
                        'are still printed); tools/train.py FILE.py trains it')
    add_overwrite_arg(parser, '--out file')
    add_mirrored_train_args(parser)
    add_debug_arg(parser)
    return parser.parse_args(argv)


def add_mirrored_train_args(parser):
    """The flags of tools/train.py that only rewrite the config, so that its command line can
    be given here as it is (see :func:`apply_train_flags`)."""
    group = parser.add_argument_group('tools/train.py flags folded into the printed config')
    group.add_argument('--work-dir', help='the work dir (sets work_dir)')
    group.add_argument('--amp', action='store_true',
                       help='mixed precision as train.py sets it on this machine: fp16 with '
                       'loss scaling with CUDA, bf16 without')
    group.add_argument('--amp-dtype', choices=['float16', 'bfloat16'],
                       help='mixed precision in this dtype (implies --amp)')
    group.add_argument('--compile', action='store_true',
                       help='adds CompileModulesHook unless the config lists one')
    group.add_argument('--auto-scale-lr', action='store_true',
                       help='enables auto_scale_lr (the lr itself is scaled when training '
                       'starts: GPUs x batch_size over auto_scale_lr.base_batch_size)')
    group.add_argument('--fsdp', action='store_true',
                       help="mmengine's FlexibleRunner and fastmim's FSDP strategy")


def apply_train_flags(cfg, args):
    """Fold in the flags as tools/train.py does, with the function it folds them with
    (:func:`fastmim.train_flags.apply_config_flags`), so that what a flag does here cannot
    drift from what it does there. The work dir is set only where given: train.py's default
    (``work_dirs/<config name>``) written into ``--out`` would send a run of that file to the
    original config's work dir, where ``--resume`` continues another run."""
    from fastmim.cli import refuse_empty_work_dir
    from fastmim.train_flags import apply_config_flags
    refuse_empty_work_dir(args.work_dir)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    apply_config_flags(cfg, args)


def value_at(tree, key):
    """The value of ``key`` (dots; list indices) in the plain config ``tree``; an unknown key
    is one error (:func:`unknown_key_message`)."""
    from fastmim.engine.config_loading import follow_key
    from fastmim.errors import LaunchError
    node, followed = follow_key(tree, key)
    parts = key.split('.')
    if followed < len(parts):
        raise LaunchError(unknown_key_message(tree, key, '.'.join(parts[:followed]), node))
    return node


def unknown_key_message(tree, key, found, node):
    """Name the part of ``key`` that is missing and the existing keys it resembles, as the
    config loader names a new ``--cfg-options`` key (``added_keys``); or, where the path runs
    into a list or a value (``found``, ``node``), what is there."""
    from fastmim.engine.config_loading import added_keys
    missing = added_keys(tree, [key])
    if missing:
        missing_key, close = missing[0]
        hint = f' (did you mean {" or ".join(close)}?)' if close else ''
        return f'--keys {key}: the config has no key {missing_key}{hint}'
    there = f'a list of {len(node)}' if isinstance(node, (list, tuple)) else repr(node)
    return f'--keys {key}: the config has no such key ({found} is {there})'


def key_line(key, value):
    """``key = value``, the value written as mmengine writes it in a config (``dict(...)``)."""
    from mmengine.config import Config
    text = Config({'value': value}).pretty_text.rstrip('\n')
    return f'{key} = {text[len("value = "):]}'


def check_out(out, config, overwrite):
    """Refuse an ``--out`` that cannot be written, that would replace the config file itself
    (its ``_base_`` inheritance flattened into it), or that exists without ``--overwrite``
    (another config, a published recipe among them, replaced by the flattened one)."""
    from fastmim.cli import (
        check_output_file, refuse_an_existing_output, refuse_overwriting_input)
    from fastmim.errors import LaunchError
    if not out.endswith('.py'):
        raise LaunchError(f'--out {out}: expected a .py file (the config as Python, which '
                          f'tools/train.py reads)')
    check_output_file(out, folders_made=True)
    refuse_overwriting_input(out, config, '--out', 'CONFIG')
    refuse_an_existing_output(out, overwrite, flag='--out')


def flattened_text(cfg):
    """The config as a file of its own, its length and warmup variables (``max_epochs``)
    written with the values they were copied into (``train_cfg``, the warmup's end). In a
    flat file they feed nothing; written as the recipe has them, a length that
    ``--cfg-options train_cfg.max_epochs=1`` changes would leave ``max_epochs = 12`` behind,
    and the loader would warn, on every run of the file, that the variable was changed too
    late."""
    from fastmim.engine.schedule_length import mirrored_values
    flat = cfg.copy()
    for variable, value in mirrored_values(cfg).items():
        flat[variable] = value
    return flat.pretty_text


def main(argv):
    args = parse_args(argv)
    import fastmim  # noqa: F401  registers modules
    from fastmim.fileio import AtomicLocalBackend
    from fastmim.engine.config_loading import load_config
    from fastmim.run_log import console_log_on_stderr

    # mmengine's log (the config loader's warnings, what a folded flag says) would be mixed
    # into a printed config redirected to a file (``print_config.py CONFIG > my_config.py``).
    with console_log_on_stderr():
        cfg = load_config(args.config, args.cfg_options, builds_model=False)  # a fragment too
        apply_train_flags(cfg, args)
        if args.out:
            check_out(args.out, cfg.filename, args.overwrite)
        if args.keys:
            tree = cfg.to_dict()
            print('\n'.join(key_line(key, value_at(tree, key)) for key in args.keys))
        if args.out:
            AtomicLocalBackend().put_text(flattened_text(cfg), args.out)
            print(f'wrote the config to {args.out}', file=sys.stderr)
        elif not args.keys:
            print(cfg.pretty_text, end='')
    return cfg


if __name__ == '__main__':
    from early_checks import refuse_a_missing_config  # in tools/; imports no fastmim
    refuse_a_missing_config(sys.argv[1:])
    from fastmim.cli import run_cli
    run_cli(main)
