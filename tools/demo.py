"""`make demo`: pre-train FastMIM on the embedded real photos and show what came out.

Runs tools/train.py on configs/fastmim/demo_vit_tiny_embedded.py (work dir work_dirs/demo/, or
--work-dir), then prints how the loss fell, how it compares with predicting the average HOG
cell everywhere (tools/analysis/target_baseline.py), where the checkpoint is and where the
reconstruction pictures are. It takes tools/train.py's training flags (--amp, --resume,
--cfg-options ...) and passes them on.
"""
import argparse
import contextlib
import glob
import logging
import os.path as osp
import re
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'fastmim', 'demo_vit_tiny_embedded.py')
WORK_DIR = osp.join(ROOT, 'work_dirs', 'demo')
# The --help example: a 2-epoch demo, its cosine schedule (param_scheduler[1], after the 1-epoch
# warmup) ending with the training, so the config loads without a schedule-length warning.
CFG_OPTIONS_EXAMPLE = ('train_cfg.max_epochs=2', 'param_scheduler.1.end=2',
                       'param_scheduler.1.T_max=1')


def read_losses(work_dir):
    """(iteration, loss) pairs of the training in ``work_dir``, in training order: the runs of
    a stopped and resumed demo joined (the resumed run alone would show a loss that barely
    falls), a run started afresh alone. A last line cut short (a run stopped while writing it)
    is left out."""
    from fastmim.logged_scalars import scalars_files, training_history
    history = training_history(scalars_files(work_dir, missing_ok=True))
    return [(iteration, record['loss']) for iteration, record in history if 'loss' in record]


def reconstruction_pictures(work_dir, checkpoint=None):
    """The pictures ReconstructionVisualizationHook drew (``vis/<epoch|iter>_<n>_<i>.png``)
    when ``checkpoint`` (``epoch_<n>.pth`` / ``iter_<n>.pth``) was saved, else the newest
    ones. Ordered by number, not as text: as text, a 2-epoch run's ``epoch_2_*`` sorts after
    a later 10-epoch run's ``epoch_10_*`` in the same work dir and would be shown beside its
    checkpoint."""
    drawn = {}
    for path in glob.glob(osp.join(work_dir, 'vis', '*.png')):
        match = re.fullmatch(r'(epoch|iter)_(\d+)_(\d+)\.png', osp.basename(path))
        if match:
            kind, number, index = match.groups()
            drawn.setdefault((kind, int(number)), []).append((int(index), path))
    if not drawn:
        return []
    saved = re.fullmatch(r'(epoch|iter)_(\d+)\.pth', osp.basename(checkpoint or ''))
    tag = (saved[1], int(saved[2])) if saved else None
    if tag not in drawn:
        tag = max(drawn, key=lambda kind_number: kind_number[1])
    return [path for _, path in sorted(drawn[tag])]


def average_target_loss(cfg_options):
    """The loss of predicting the average HOG cell everywhere on the demo's data, the line the
    demo's loss must go below before the model predicts anything from the image (the 96-iteration
    demo's loss falls by 96% to that line and no further). One pass over the 256 photos
    (tools/analysis/target_baseline.py: crops, masks and HOG only, a few seconds)."""
    import target_baseline  # tools/analysis/, on the path parse_args added
    from fastmim.engine.config_loading import load_config
    with warnings_left_out():  # the config's warnings were printed before training
        cfg = load_config(CONFIG, cfg_options)
    return target_baseline.target_baseline(cfg, passes=1, config=CONFIG)


@contextlib.contextmanager
def warnings_left_out():
    """The current mmengine logger (the run's, after training) logs errors only: a warning of
    the config, re-loaded for the baseline, came again in the middle of the summary."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def compared_with_baseline(final, baseline):
    """One sentence: the final loss against the baseline (``dict(loss, batch_spread)``), and
    what the difference says. Differences within twice the baseline's batch-to-batch spread
    are chance."""
    average, spread = baseline['loss'], baseline['batch_spread']
    side = 'below' if final < average else 'above'
    if average - final > 2 * spread:
        meaning = 'the model predicts more than the average: it uses the image'
    elif final - average > 2 * spread:
        meaning = 'the model has not learned even the average HOG cell yet'
    else:
        meaning = ('the same within chance: the model has learned the HOG statistics, not yet '
                   'what is in the image')
    return (f'  predicting the average HOG cell everywhere (no image seen) scores {average:.4f} '
            f'(+-{spread:.4f} from batch to batch); the final loss {final:.4f} is '
            f'{100 * abs(average - final) / average:.1f}% {side} it: {meaning}')


def parse_args(argv):
    """The demo's arguments: train.py's training flags, with the demo's own usage and errors
    (train.py's help would ask for a CONFIG that the demo refuses, and its usage would name
    flags the demo does not take). A config given to it is refused: it trains the demo config
    only."""
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
    import train
    from fastmim.cli import CfgOptionsAction, add_debug_arg

    parser = argparse.ArgumentParser(
        prog='demo.py', allow_abbrev=False,
        description='Pre-train FastMIM on the embedded photos '
                    f'({osp.relpath(CONFIG, ROOT)}), then show how the loss fell, the '
                    'checkpoint and the reconstruction pictures.',
        epilog='The options after --work-dir are passed to tools/train.py.')
    parser.add_argument('--work-dir', default=WORK_DIR,
                        help='where the run writes (default: work_dirs/demo)')
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                        help='override keys of the demo config, e.g. '
                        f'{" ".join(CFG_OPTIONS_EXAMPLE)}')
    train.add_train_args(parser)
    add_debug_arg(parser)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not unknown[0].startswith('-'):
        parser.error(f'demo.py trains {osp.relpath(CONFIG, ROOT)}; for another config run '
                     f'tools/train.py {unknown[0]}')
    if unknown:
        parser.error(f'unrecognized arguments: {" ".join(unknown)}')
    return args


def last_save(work_dir):
    """When the run in ``work_dir`` last saved a checkpoint (``last_checkpoint``'s modification
    time), or None: unchanged by a ``--resume`` of a finished run, which trains nothing."""
    path = osp.join(work_dir, 'last_checkpoint')
    return osp.getmtime(path) if osp.exists(path) else None


def interrupted_hint():
    """The Ctrl-C line's words for resuming the demo: its own command, which `make demo` cannot
    pass ``--resume`` to, with the work dir of the run when it is not the default
    (:func:`fastmim.resume_target.interrupted_hint`)."""
    from fastmim.resume_target import interrupted_hint, started_work_dir
    work_dir = started_work_dir()
    where = (f' --work-dir {work_dir}' if work_dir and osp.abspath(work_dir) != WORK_DIR
             else '')
    return interrupted_hint(f'`.venv/bin/python tools/demo.py{where} --resume`')


def main(argv):
    args = parse_args(argv)
    import train
    saved = last_save(args.work_dir)
    # argv goes on as given: train.py parses the same flags and, as the demo's parser did,
    # keeps the last --work-dir, argv's own where it gives one.
    train.main([CONFIG, '--work-dir', args.work_dir, *argv])

    losses = read_losses(args.work_dir)
    last_checkpoint = osp.join(args.work_dir, 'last_checkpoint')
    checkpoint = open(last_checkpoint).read().strip() if osp.exists(last_checkpoint) else None
    pictures = reconstruction_pictures(args.work_dir, checkpoint)
    print('\nFastMIM demo finished' if saved is None or last_save(args.work_dir) != saved else
          f'\nFastMIM demo: nothing trained, the run in {args.work_dir} had already finished '
          '(the warning above); its summary:')
    if losses:
        (first_iter, first), (last_iter, last) = losses[0], losses[-1]
        print(f'  loss: {first:.4f} at iteration {first_iter} -> {last:.4f} at iteration '
              f'{last_iter} ({100 * (first - last) / first:.0f}% lower)')
        print(compared_with_baseline(last, average_target_loss(args.cfg_options)))
    print(f'  checkpoint: {checkpoint}')
    print('  reconstructions (input | masked input | HOG target | HOG prediction):')
    for path in pictures:
        print(f'    {path}')


if __name__ == '__main__':
    from early_checks import refuse_a_python_without_the_stack  # puts ROOT first on sys.path
    refuse_a_python_without_the_stack()
    from fastmim.cli import run_cli
    run_cli(main, interrupted_hint=interrupted_hint)
