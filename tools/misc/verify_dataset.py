"""Decode every image file of a config's datasets before a run, and name the unreadable ones.

    python tools/misc/verify_dataset.py CONFIG [--split {train,val,test,all}]
                                               [--num-process N] [--out FILE]
                                               [--cfg-options k=v ...]

Training skips an unreadable file with a warning and draws another sample in its place
(``LoadImageRGB``), and an evaluation set stops at the first one, maybe hours into a run: this
finds them all up front. The config is loaded as tools/train.py loads it, each chosen
dataloader's dataset is built in the config's registry scope, and each distinct file its
samples read is decoded whole by the loader's own check
(:func:`fastmim.datasets.transforms.loading.image_file_problem`), so a file named here is one
training skips, for the reason its warning would give. Samples that hold their image already
(the embedded photos) have no file to check.

Prints a summary line per split and each unreadable file with its reason; ``--out`` writes the
unreadable files as ``path<TAB>reason`` lines (an empty file when none), replacing the file
atomically. Exit status: 0 when every file is readable, 1 when one is not, 2 when the check
cannot start (a command-line error, a missing config, a dataset that cannot be built, such as
an empty folder: the dataset's own message).
"""
import argparse
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for early_checks

SPLITS = ('train', 'val', 'test')
# argparse's status for a command-line error; this tool's for any error before the check.
USAGE_EXIT_STATUS = 2
# Beyond this many processes decoding waits on the disk more than on the CPUs.
MAX_DEFAULT_PROCESSES = 32
# How often the progress bar is redrawn: a log of a million files gets a line a second, not
# one per file.
PROGRESS_INTERVAL_S = 1.0


def available_cpus():
    """The CPUs this process may run on (a job scheduler's share, not the whole machine's)."""
    if hasattr(os, 'sched_getaffinity'):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def parse_args(argv):
    from fastmim.cli import CfgOptionsAction, add_debug_arg, positive_int
    parser = argparse.ArgumentParser(
        description="Decode every image file of a config's datasets, as training loads them, "
        'and name the unreadable ones (exit status 0: all readable, 1: some are not, '
        '2: the check could not start)')
    parser.add_argument('config', help="config file (or 'fastmim::<path>', a packaged one)")
    parser.add_argument('--split', choices=SPLITS + ('all', ), default='train',
                        help='the dataloader whose dataset is checked (default: train); all: '
                        'each of train, val and test the config has')
    default_processes = min(available_cpus(), MAX_DEFAULT_PROCESSES)
    parser.add_argument('--num-process', type=positive_int, default=default_processes,
                        metavar='N', help='processes decoding the files (default: the CPUs '
                        f'available, at most {MAX_DEFAULT_PROCESSES}; here {default_processes})')
    parser.add_argument('--out', metavar='FILE',
                        help='write the unreadable files to FILE, one "path<TAB>reason" line '
                        'each (an empty file when all are readable)')
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                        help='override config keys, as tools/train.py does, e.g. '
                        'train_dataloader.dataset.data_root=/data/imagenet')
    add_debug_arg(parser)
    return parser.parse_args(argv)


def chosen_loaders(cfg, split):
    """``(split, dataloader settings or None)`` for each split to check. A split named on the
    command line that the config lacks is refused (a typo would otherwise check nothing and
    pass); with ``all``, a missing one is reported as such."""
    from fastmim.errors import LaunchError
    splits = SPLITS if split == 'all' else (split, )
    loaders = [(name, cfg.get(f'{name}_dataloader')) for name in splits]
    if split != 'all' and loaders[0][1] is None:
        present = [f'{name}_dataloader' for name in SPLITS if cfg.get(f'{name}_dataloader')]
        raise LaunchError(f'--split {split}: {cfg.filename} has no {split}_dataloader (it has '
                          f'{", ".join(present) or "none"})')
    return loaders


def build_dataset(loader):
    """The dataloader's dataset, built as mmengine's Runner builds it: in the config's default
    scope (set by the caller), its list of samples loaded."""
    from mmengine.registry import DATASETS
    dataset = loader['dataset']
    if isinstance(dataset, dict):
        dataset = DATASETS.build(dataset)
    if hasattr(dataset, 'full_init'):
        dataset.full_init()
    return dataset


def dataset_name(dataset):
    """``ImageFolder '/data/imagenet/train'``: the class and where its samples come from."""
    source = (getattr(dataset, 'ann_file', '')
              or getattr(dataset, 'data_prefix', {}).get('img_path')
              or getattr(dataset, 'data_root', ''))
    return f'{type(dataset).__name__} {source!r}' if source else type(dataset).__name__


def image_files(dataset):
    """The distinct files ``LoadImageRGB`` reads for the dataset's samples, in the dataset's
    order: each sample's ``img_path``, unless the sample holds its decoded ``img`` already,
    which the loader passes through (the embedded photos), as does a sample with no path
    (Fashion-MNIST). A file shared by samples (a repeated dataset) is checked once."""
    data_info = getattr(dataset, 'get_data_info', None)
    if data_info is None:
        return []
    files = {}
    for index in range(len(dataset)):
        info = data_info(index)
        if 'img_path' in info and 'img' not in info:
            files.setdefault(info['img_path'], None)
    return list(files)


def with_progress(results, total):
    """``results`` passed through while mmengine's progress bar (files done, files/s,
    elapsed, ETA) is drawn on stderr, at most every :data:`PROGRESS_INTERVAL_S`: stdout keeps
    the report alone."""
    from mmengine.utils import ProgressBar
    bar = ProgressBar(total, file=sys.stderr)
    shown, last_drawn = 0, time.monotonic()
    for done, result in enumerate(results, 1):
        yield result
        now = time.monotonic()
        if done == total or now - last_drawn >= PROGRESS_INTERVAL_S:
            bar.update(done - shown)
            shown, last_drawn = done, now
    sys.stderr.write('\n')


def check_files(paths, processes):
    """The loader's verdict on each of ``paths`` (a reason, or None), in their order. Worker
    processes are forked, as DataLoader workers are, so they decode with this process's PIL
    settings (a ``MAX_IMAGE_PIXELS`` raised by a module of the config's ``custom_imports``)."""
    import multiprocessing

    from fastmim.datasets.transforms.loading import image_file_problem
    if not paths:
        return []
    processes = min(processes, len(paths))
    if processes == 1:
        return list(with_progress(map(image_file_problem, paths), len(paths)))
    chunk = max(1, min(64, len(paths) // (processes * 16)))
    with multiprocessing.get_context('fork').Pool(processes) as pool:
        problems = pool.imap(image_file_problem, paths, chunksize=chunk)
        return list(with_progress(problems, len(paths)))


def verify_split(split, loader, processes, checked):
    """Check the dataset of one split and print its summary line and unreadable files;
    returns ``{path: reason}`` of those. ``checked``: the results of the datasets checked
    before, by their settings: ``test_dataloader = val_dataloader`` is checked once."""
    if loader is None:
        print(f'{split}: no {split}_dataloader in the config')
        return {}
    key = repr(loader['dataset'])
    if key in checked:
        earlier, unreadable = checked[key]
        print(f'{split}: the dataset of {earlier} (checked above)')
        return unreadable
    dataset = build_dataset(loader)
    paths = image_files(dataset)
    if not paths:
        print(f'{split}: {dataset_name(dataset)}: no image files to verify (its samples hold '
              f'their images, decoded by the dataset itself)')
        checked[key] = split, {}
        return {}
    start = time.monotonic()
    problems = check_files(paths, processes)
    unreadable = {path: problem for path, problem in zip(paths, problems) if problem}
    print(f'{split}: {dataset_name(dataset)}: {len(paths)} files checked, {len(unreadable)} '
          f'unreadable, {time.monotonic() - start:.1f} s')
    for path, problem in unreadable.items():
        print(f'  {path}: {problem}')
    checked[key] = split, unreadable
    return unreadable


def write_out(path, unreadable):
    """``path<TAB>reason`` lines, the file replaced atomically: a script that reads it never
    sees half a list, and a failed write leaves an earlier one as it was."""
    from fastmim.fileio import AtomicLocalBackend
    text = ''.join(f'{file}\t{problem}\n' for file, problem in unreadable.items())
    AtomicLocalBackend().put_text(text, path)


def main(argv):
    """Returns the exit status: 0 when every file checked is readable, 1 otherwise."""
    args = parse_args(argv)
    import fastmim  # noqa: F401  registers modules
    from mmengine.registry import init_default_scope

    from fastmim.cli import check_output_file, refuse_overwriting_input
    from fastmim.engine.config_loading import load_config
    from fastmim.run_log import console_log_on_stderr

    with console_log_on_stderr():  # stdout holds the report alone
        cfg = load_config(args.config, args.cfg_options, builds_model=False)
        if args.out:
            check_output_file(args.out, folders_made=True)
            refuse_overwriting_input(args.out, cfg.filename, '--out', 'CONFIG')
        loaders = chosen_loaders(cfg, args.split)
        init_default_scope(cfg.get('default_scope', 'fastmim'))
        unreadable, checked = {}, {}
        for split, loader in loaders:
            for path, problem in verify_split(split, loader, args.num_process,
                                              checked).items():
                unreadable.setdefault(path, problem)
    if args.out:
        write_out(args.out, unreadable)
    return 1 if unreadable else 0


def run(argv=None):
    """The command: :func:`main` under fastmim's error reporting (``run_cli``: one line for an
    error the user can fix), ending with its status. Such an error comes before any file is
    checked (the unreadable files are the result, not errors), so it ends with status 2, as
    argparse's own, leaving 1 to mean "unreadable files found"."""
    from early_checks import refuse_a_missing_config  # in tools/; imports no fastmim
    argv = sys.argv[1:] if argv is None else argv
    try:
        refuse_a_missing_config(argv)
        from fastmim.cli import run_cli
        status = run_cli(main, argv)
    except SystemExit as stop:
        raise SystemExit(USAGE_EXIT_STATUS if stop.code == 1 else stop.code) from None
    sys.exit(status)


if __name__ == '__main__':
    run()
