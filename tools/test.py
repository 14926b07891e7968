"""Evaluate a checkpoint with any config that has a test loop (classification, kNN, mmdet, mmseg).

    .venv/bin/python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out METRICS.json]
                                                    [--show-dir DIR] [--trust-checkpoint]
                                                    [--cfg-options k=v ...]
                                                    [--launcher {none,pytorch,slurm,mpi}]
"""
import argparse
import inspect
import json
import os.path as osp
import sys

if __name__ == '__main__':  # a mistyped config or checkpoint is refused before fastmim imports torch
    from early_checks import (config_of, names_checkpoint_makers,  # beside this file; no fastmim
                              refuse_a_missing_checkpoint, refuse_a_missing_config)
    refuse_a_missing_config(sys.argv[1:])
    if not names_checkpoint_makers(config_of(sys.argv[1:])):  # else main names the maker
        refuse_a_missing_checkpoint(sys.argv[1:], 1, pointer_taken=True)

from fastmim.cli import (add_launch_args, add_trust_checkpoint_arg,  # noqa: E402
                         apply_launch_args, parse_launch_args)

# Added to every config this tool runs (see main).
TEST_HOOK = 'fastmim.CheckpointFitsModelHook'


def parse_args(argv):
    parser = argparse.ArgumentParser(description='Evaluate a checkpoint')
    add_launch_args(parser, cfg_options_example='test_dataloader.batch_size=64',
                    work_dir_holds="the test's log folder (with its metrics; no checkpoints)")
    parser.add_argument('checkpoint', help="checkpoint file (or a work dir's "
                        'last_checkpoint, which names the newest)')
    parser.add_argument('--out', help='dump the metrics to this JSON file')
    parser.add_argument('--show-dir', help='draw every test image with its ground truth and '
                        "predictions into this folder (detection and segmentation configs: "
                        "mmdet's / mmseg's visualization hook)")
    add_trust_checkpoint_arg(parser)
    return parse_launch_args(parser, argv)


# The names mmdet's and mmseg's test.py give --out, where they dump the predictions pickled.
PICKLE_SUFFIXES = ('.pkl', '.pickle')


def refuse_a_pickle_name(out):
    """``--out results.pkl``, mmdet's habit, where its test.py dumps the predictions: this
    tool writes the metrics there as JSON, a file no pickle reader opens."""
    if out.lower().endswith(PICKLE_SUFFIXES):
        raise ValueError(f'--out {out}: this tool writes the metrics as JSON (mmdet\'s and '
                         f'mmseg\'s test.py pickle their predictions there); name it '
                         f'{osp.splitext(out)[0]}.json. Drawn predictions: --show-dir')


def write_metrics(path, metrics):
    """Write ``metrics`` as JSON to ``path`` atomically (a temporary file in the same folder,
    then ``os.replace``): a script that polls for the file, or a run killed while writing it,
    never sees half a file, and a failed write leaves an earlier file as it was."""
    from fastmim.fileio import AtomicLocalBackend
    text = json.dumps({key: float(value) for key, value in metrics.items()}, indent=2)
    AtomicLocalBackend().put_text(text, path)


def write_metrics_once(path, metrics):
    """Every process of a distributed test holds the same metrics: the first one writes
    them (each process replaced the file with the same text; on shared storage, every process
    of every node)."""
    from mmengine.dist import is_main_process
    if is_main_process():
        write_metrics(path, metrics)


def read_file(path):
    """The bytes of ``path``, or None where it is no file."""
    if not osp.isfile(path):
        return None
    with open(path, 'rb') as file:
        return file.read()


def restore_config_dump(path, earlier, runner):
    """Put back the ``earlier`` content of ``path``, ``work_dir/<config name>``, where
    mmengine's Runner writes the config it runs. The default work dir of a test is that of the
    training run whose checkpoint it tests (the config's ``work_dir``, else
    ``work_dirs/<config name>``), so the record of how the checkpoints were trained would be
    replaced by the test's config (its ``load_from``, ``--cfg-options``), even by a test whose
    checkpoint is then refused. The test's config is in its own log. A config an earlier
    test wrote (it names the ``CheckpointFitsModelHook`` this tool adds) is replaced, as
    mmengine does: a work dir of tests only (kNN) shows the latest."""
    from mmengine.dist import is_main_process
    from mmengine.logging import print_log

    from fastmim.fileio import AtomicLocalBackend
    if (earlier is None or TEST_HOOK.encode() in earlier or not is_main_process()
            or read_file(path) == earlier):
        return
    AtomicLocalBackend().put(earlier, path)
    print_log(f'{path} is left as it was (the config of the run that wrote it); this test\'s '
              f'config is at the top of {osp.join(runner.log_dir, runner.timestamp)}.log',
              logger='current')


def drop_training(cfg):
    """A test trains nothing: without its training keys the Runner builds no training loop.
    mmseg's visualization hook reads ``runner.iter``, which builds the configured loop on first
    use (mmengine's own hooks check first), so a test with ``--show-dir`` listed the whole
    training set, or stopped where only the test images are on the machine."""
    for key in ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler'):
        cfg[key] = None


def draw_predictions_into(cfg, folder, config_path):
    """Turn on the config's own ``default_hooks.visualization`` (mmdet's and mmseg's default
    runtimes have one) for every test image, drawing into ``folder``.

    mmdet's hook takes ``test_out_dir`` and writes each image there under its file name; it
    joins the folder to ``work_dir/<timestamp>`` on every iteration, so a relative folder nested
    one level deeper per batch: the folder is made absolute here. mmseg's hook draws through the
    visualizer, whose ``LocalVisBackend`` writes images to its ``img_save_dir`` (a folder name
    under the run's ``vis_data`` unless absolute): pointing only that at ``folder`` keeps the
    test's scalars and config in its own run folder, where mmseg's ``--show-dir`` moved them.
    """
    from mmengine.registry import HOOKS

    from fastmim.errors import LaunchError
    from fastmim.registry import type_name
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise LaunchError(f'--show-dir: {config_path} has no default_hooks.visualization to draw '
                          f'predictions with; detection and segmentation configs (mmdet, mmseg) '
                          f'have one')
    folder = osp.abspath(folder)
    hook.update(draw=True, interval=1)
    hook_class = hook['type']
    if isinstance(hook_class, str):  # Registry.get reads no default scope: name it
        scope = cfg.get('default_scope')
        hook_class = HOOKS.get(hook_class if '.' in hook_class or not scope
                               else f'{scope}.{hook_class}')
    if hook_class is not None and 'test_out_dir' in inspect.signature(hook_class).parameters:
        hook['test_out_dir'] = folder
    else:
        backends = cfg.visualizer.setdefault('vis_backends', [])
        local = [backend for backend in backends if type_name(backend) == 'LocalVisBackend']
        if not local:
            backends.append(dict(type='LocalVisBackend'))
            local = backends[-1:]
        for backend in local:
            backend['img_save_dir'] = folder


def checkpoint_maker_hint(config, checkpoint):
    """``'; it is made by COMMAND'`` for a ``checkpoint`` that is not there, where ``config``
    names the command that writes it (``checkpoints_made_by``: the kNN demo tests the last
    checkpoint of the pre-training demo), in the words of a training run's start checkpoint
    (:func:`~fastmim.engine.config_loading.missing_checkpoint_hint`); else ''."""
    from mmengine.config import Config

    from fastmim.engine.config_loading import missing_checkpoint_hint, packaged_config_file
    cfg = Config.fromfile(packaged_config_file(config))
    return missing_checkpoint_hint(cfg, 'CHECKPOINT', checkpoint)


def main(argv):
    args = parse_args(argv)
    import fastmim  # noqa: F401  registers modules, safe checkpoint I/O
    from fastmim.checkpoint_files import last_checkpoint_pointer
    from fastmim.engine.checkpoint import check_checkpoint_file
    from fastmim.file_checks import file_in_the_way
    from fastmim.engine.config_keys import refused_keys_located
    from fastmim.engine.config_loading import load_config
    from fastmim.cli import check_output_file, refuse_overwriting_input
    from fastmim.engine.last_checkpoint import checkpoint_named_by
    from fastmim.engine.launch import build_runner
    from fastmim.engine.launcher_env import check_launcher_env, console_errors_only_beyond_rank_zero
    from fastmim.engine.launcher_lifecycle import stop_with_the_launcher
    from fastmim.errors import CheckpointError, LaunchError

    check_launcher_env(args.launcher)
    console_errors_only_beyond_rank_zero(args.launcher)
    stop_with_the_launcher(args.launcher)  # an evaluation has nothing to save: it just ends
    args.checkpoint = checkpoint_named_by(args.checkpoint, 'testing')
    try:  # before the config: a work dir given as CHECKPOINT
        check_checkpoint_file(args.checkpoint)
    except CheckpointError as error:  # a work dir given: its last_checkpoint names the newest
        pointer = last_checkpoint_pointer(osp.expanduser(args.checkpoint))
        raise CheckpointError(f'{error}{pointer}'
                              f'{checkpoint_maker_hint(args.config, args.checkpoint)}') from None
    if args.out:  # written after the whole evaluation: a path that cannot be is refused now
        check_output_file(args.out, folders_made=True)
        refuse_a_pickle_name(args.out)
        # The metrics JSON would replace it, after the evaluation.
        refuse_overwriting_input(args.out, args.checkpoint, '--out', 'CHECKPOINT')
        refuse_overwriting_input(args.out, args.config, '--out', 'CONFIG')
    cfg = load_config(args.config, args.cfg_options)
    if cfg.get('test_dataloader') is None:
        raise LaunchError(f'{args.config} has no test_dataloader/test_evaluator: nothing to '
                          f'evaluate; a pre-training checkpoint is evaluated by a kNN config '
                          f'(tools/test.py configs/knn/vit_b_knn.py CHECKPOINT) or by training a '
                          f'linear-probe or fine-tuning config from it')
    apply_launch_args(cfg, args)
    drop_training(cfg)
    if args.show_dir:  # refused now rather than at the first image drawn
        blocked = file_in_the_way(osp.abspath(args.show_dir))
        if blocked:
            raise NotADirectoryError(f'--show-dir {args.show_dir}: {blocked}')
        draw_predictions_into(cfg, args.show_dir, args.config)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    # mmengine loads it non-strictly: a pre-training checkpoint would test untrained heads
    cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
        dict(type=TEST_HOOK, checkpoint=args.checkpoint)]
    config_dump = osp.join(cfg.work_dir, osp.basename(cfg.filename or ''))
    earlier_dump = read_file(config_dump)
    with refused_keys_located(cfg, args.cfg_options):
        runner = build_runner(
            cfg, ['test'], trusted_checkpoints=[args.checkpoint] if args.trust_checkpoint else [])
        restore_config_dump(config_dump, earlier_dump, runner)
        metrics = runner.test()
    if args.out:
        write_metrics_once(args.out, metrics)
    return metrics


if __name__ == '__main__':
    from fastmim.cli import run_cli
    run_cli(main)
