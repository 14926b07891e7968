"""Plot the scalars of training runs and time their iterations, from mmengine's log.

    python tools/analysis/analyze_logs.py plot_curve RUN [RUN ...] [--keys loss lr]
                                                     [--out curves.png] [--title TEXT]
    python tools/analysis/analyze_logs.py cal_train_time RUN [RUN ...] [--include-outliers]

mmpretrain's tool of the same name, for this toolbox's logs. A RUN is mmengine's scalars file
(``vis_data/scalars.json``, one JSON record per line, which every run here writes through the
default ``LocalVisBackend``), or a folder holding it:

- a run folder (``<work_dir>/<timestamp>``): that run alone;
- a work dir: every run folder in it, joined in timestamp order into one history. A run that
  resumed starts at an iteration its predecessor may already have logged (it trained on past
  the checkpoint before it stopped); the later run's records replace the earlier ones from that
  iteration on, so a run started afresh in the same work dir replaces all before it. Which runs
  were joined, and which a later run left out, is printed; give one run folder to see that run
  alone.

Training records (those with ``iter``) are plotted against their iteration. A validation record
has no iteration of its own (mmengine steps it by epoch): it is plotted at the last training
iteration logged before it. ``time`` is mmengine's mean seconds per iteration over the log
processor's window (``log_processor.window_size``) at each logged iteration; ``cal_train_time``
averages those of each epoch, leaving out each epoch's first record (the data loader's start)
unless ``--include-outliers``, as mmpretrain's tool does.
"""
import argparse
import os.path as osp
import statistics
import sys
from itertools import groupby

# What mmengine adds to every record beside the logged scalars: not a curve.
NOT_A_CURVE = ('step', 'iter', 'epoch')


def parse_args(argv):
    from fastmim.cli import add_debug_arg
    parser = argparse.ArgumentParser(
        description="Plot and time training runs from mmengine's vis_data/scalars.json",
        epilog='RUN: a scalars.json, a run folder <work_dir>/<timestamp>, or a work dir (its '
        'runs joined in timestamp order; a resumed run replaces the records of the run before '
        'it from the iteration it starts at)')
    commands = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    plot = commands.add_parser('plot_curve', help='plot logged scalars against the iteration')
    plot.add_argument('runs', nargs='+', metavar='RUN', help='work dirs, run folders or json')
    plot.add_argument('--keys', nargs='+', default=['loss'],
                      help='the scalars to plot, one panel each (default: loss)')
    plot.add_argument('--out', default='curves.png',
                      help='the image to write (default: curves.png in the current folder); '
                      'no window is opened')
    plot.add_argument('--title', help='title of the figure')
    timing = commands.add_parser('cal_train_time',
                                 help='average seconds per iteration, slowest and fastest epoch')
    timing.add_argument('runs', nargs='+', metavar='RUN', help='work dirs, run folders or json')
    timing.add_argument('--include-outliers', action='store_true',
                        help="keep each epoch's first record (the data loader's start)")
    for command in (parser, plot, timing):
        add_debug_arg(command)
    return parser.parse_args(argv)


def load_history(run):
    """The ``(iteration, record)`` history of ``run``; the runs joined, and those a later run
    left out, are printed."""
    from fastmim.logged_scalars import join_runs, run_name, scalars_files
    joined = join_runs(scalars_files(run))
    for replacement in joined.replacements:
        print(f"{run}: {replacement.message()}; give a run's folder to read it alone",
              file=sys.stderr)
    if len(joined.kept) > 1:
        print(f'{run}: {len(joined.kept)} runs joined in this order: '
              f'{", ".join(map(run_name, joined.kept))}', file=sys.stderr)
    return joined.history


def curve(history, key, run):
    """``(iterations, values)`` of ``key``; an unknown key is an error naming those present."""
    from fastmim.errors import LaunchError
    points = [(iteration, record[key]) for iteration, record in history if key in record]
    if key in NOT_A_CURVE or not points:
        present = sorted({name for _, record in history for name in record} - set(NOT_A_CURVE))
        raise LaunchError(f'{run}: no scalar {key!r} in the log; it has '
                          f'{", ".join(present) or "no records"}')
    return [x for x, _ in points], [y for _, y in points]


def plot_curves(runs, keys, title=None):
    """A figure with one panel per key, one line per run (labelled by it); no screen needed."""
    from matplotlib.figure import Figure
    histories = {run: load_history(run) for run in runs}
    figure = Figure(figsize=(8, 3 * len(keys)), layout='constrained')
    axes = figure.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    for axis, key in zip(axes, keys):
        for run, history in histories.items():
            axis.plot(*curve(history, key, run), label=run)
        axis.set_ylabel(key)
        axis.legend(fontsize='small')
    axes[-1].set_xlabel('iteration')
    if title:
        figure.suptitle(title)
    return figure


def train_time(history, include_outliers=False, run='the log'):
    """Mean seconds per iteration over the training records (``time``), and per epoch where
    the run is counted in epochs, each epoch's first record left out unless
    ``include_outliers``. ``run``: the RUN given, which an error names."""
    from fastmim.errors import LaunchError
    records = [record for _, record in history if 'iter' in record]
    if not any('time' in record for record in records):
        present = sorted({name for record in records for name in record})
        raise LaunchError(f"{run}: no training record has 'time' (IterTimerHook's seconds per "
                          f'iteration); the training records have {", ".join(present) or "none"}')
    timed = [record for record in records if 'time' in record]
    if 'epoch' not in timed[0]:
        return dict(s_per_iter=statistics.mean(record['time'] for record in timed))
    epochs = {}
    for epoch, group in groupby(timed, key=lambda record: record['epoch']):
        times = [record['time'] for record in group]
        epochs[epoch] = times if include_outliers or len(times) == 1 else times[1:]
    means = {epoch: statistics.mean(times) for epoch, times in epochs.items()}
    return dict(s_per_iter=statistics.mean(t for times in epochs.values() for t in times),
                epoch_means=means,
                slowest_epoch=max(means, key=means.get), fastest_epoch=min(means, key=means.get),
                std_over_epochs=statistics.pstdev(means.values()))


def print_train_time(run, times):
    print(f'{"-" * 5}Analyze train time of {run}{"-" * 5}')
    if 'epoch_means' in times:
        means = times['epoch_means']
        for name in ('slowest', 'fastest'):
            epoch = times[f'{name}_epoch']
            print(f'{name} epoch {epoch}, average time is {means[epoch]:.4f} s/iter')
        print(f'time std over epochs is {times["std_over_epochs"]:.4f}')
    print(f'average iter time: {times["s_per_iter"]:.4f} s/iter')


def main(argv):
    args = parse_args(argv)
    if args.command == 'cal_train_time':
        results = {run: train_time(load_history(run), args.include_outliers, run)
                   for run in args.runs}
        for run, times in results.items():
            print_train_time(run, times)
        return results
    from fastmim.benchmark.report import check_plot_format
    from fastmim.cli import check_output_file
    check_output_file(args.out)
    check_plot_format(args.out, '--out')
    figure = plot_curves(args.runs, args.keys, args.title)
    figure.savefig(args.out)
    # The default lands in the current folder: the line says which one.
    print(f'curves written to {osp.abspath(args.out)}')
    return figure


if __name__ == '__main__':
    from fastmim.cli import run_cli
    run_cli(main)
