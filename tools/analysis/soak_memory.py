"""Soak test: train for thousands of iterations with DataLoader workers and report the memory of
every process over time, to catch leaks and copy-on-write growth before a 800-epoch run does.

    python tools/analysis/soak_memory.py [CONFIG] [--iters 3000] [--every 100] [--workers 2]
        [--list-size 1281167] [--out soak.json] [--cfg-options k=v ...]

By default it trains the demo config (configs/fastmim/demo_vit_tiny_embedded.py) on the embedded
photos, with persistent workers, through tools/train.py's code path (same loop, sampler, hooks).
``--list-size N`` trains on an ``ImageList`` of N paths instead (the embedded photos repeated),
the size of ImageNet-1k's file list: its workers must not grow as they touch more of it.

Reported per process (the training process and each worker), in MiB: RSS, and USS, the memory
only that process holds. Forked workers share the parent's pages until they write to them, and
Python writes to every object it touches (reference counts), so a file list held as one Python
object per path shows up as USS growing with the number of samples read. The growth is the
least-squares slope over the second half of the run, in MiB per 1,000 iterations.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'
MIB = 2**20


class SoakDone(Exception):
    """Raised by the memory hook after the requested number of iterations."""


def parse_args(argv=None):
    from fastmim.cli import CfgOptionsAction, add_debug_arg, positive_int
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', nargs='?', default=str(DEMO))
    parser.add_argument('--iters', type=positive_int, default=3000, help='iterations to train')
    parser.add_argument('--every', type=positive_int, default=100,
                        help='iterations between samples')
    parser.add_argument('--workers', type=int, default=2, help='DataLoader workers')
    parser.add_argument('--list-size', type=int, default=0,
                        help='train on an ImageList of this many paths (0: the config dataset)')
    parser.add_argument('--out', help='write the samples and growth to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction, default={})
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if args.every >= args.iters:  # one sample: no growth to report
        parser.error(f'--every {args.every} leaves one sample in --iters {args.iters}: the '
                     'growth needs two or more')
    return args


def memory_of(process):
    """(RSS, USS) of a process in MiB."""
    info = process.memory_full_info()
    return info.rss / MIB, info.uss / MIB


def make_hook(total_iters, every, samples):
    import psutil
    from mmengine.hooks import Hook

    class MemorySamplerHook(Hook):
        """Records the memory of the training process and its workers every ``every``
        iterations; stops training after ``total_iters``."""
        priority = 'LOWEST'

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            done = runner.iter + 1
            if done % every == 0 or done == total_iters:
                main = psutil.Process()
                record = dict(iter=done, main=memory_of(main),
                              workers=[memory_of(child) for child in main.children()])
                samples.append(record)
                worker_uss = ' '.join(f'{uss:7.1f}' for _, uss in record['workers'])
                print(f'iter {done:6d}  main RSS {record["main"][0]:7.1f} '
                      f'USS {record["main"][1]:7.1f} MiB  workers USS {worker_uss} MiB',
                      flush=True)
            if done >= total_iters:
                raise SoakDone

    return MemorySamplerHook()


def write_list_file(size, folder):
    """An ImageList file of ``size`` lines naming the embedded photos over and over."""
    from fastmim.datasets import find_embedded_photos
    paths = [path for _, path in find_embedded_photos()]
    list_file = Path(folder) / 'train.txt'
    with open(list_file, 'w') as f:
        for i in range(size):
            f.write(paths[i % len(paths)] + '\n')
    return list_file


def growth_per_1000_iters(samples, key):
    """Least-squares slope of memory (MiB) against iterations over the second half."""
    import numpy as np
    half = samples[len(samples) // 2:]
    if len(half) < 2:
        return None
    iters = np.array([s['iter'] for s in half], dtype=float)
    if key == 'main':
        series = [np.array([s['main'][1] for s in half])]
    else:
        count = min(len(s['workers']) for s in half)
        series = [np.array([s['workers'][w][1] for s in half]) for w in range(count)]
    return [float(np.polyfit(iters, values, 1)[0] * 1000) for values in series]


def set_length(train_cfg, iters):
    """A schedule long enough for ``iters`` iterations (the memory hook stops the run there)
    in the config's own kind of loop: an iteration-based loop (``max_iters``, the segmentation
    configs') does not take ``max_epochs`` (a TypeError once the runner is built)."""
    if 'max_iters' in train_cfg:
        train_cfg.max_iters = iters
    else:
        train_cfg.max_epochs = iters + 1  # enough: every epoch has an iteration


def check_trains(cfg, config):
    """Refuse a config that trains nothing (a k-NN evaluation config has no training loader):
    the soak's setup would fail with 'NoneType' object has no attribute 'num_workers'."""
    missing = [key for key in ('train_dataloader', 'train_cfg') if not cfg.get(key)]
    if missing:
        raise ValueError(f'{config} has no {" or ".join(missing)}: the soak trains the config; '
                         'give a training config')


def soak(cfg, args, work_dir):
    """Train ``args.iters`` iterations of ``cfg`` in ``work_dir``; the memory samples taken."""
    from mmengine.runner import Runner

    from fastmim.engine.launch import adapt_to_device

    cfg.work_dir = work_dir
    loader = cfg.train_dataloader
    loader.num_workers = args.workers
    loader.persistent_workers = args.workers > 0
    if args.list_size:
        pipeline = loader.dataset.pipeline
        loader.dataset = dict(type='ImageList', ann_file=str(write_list_file(args.list_size,
                                                                             work_dir)),
                              pipeline=pipeline)
    set_length(cfg.train_cfg, args.iters)
    cfg.default_hooks.checkpoint.interval = 10**9  # no checkpoints: memory only
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=args.every)
    cfg.custom_hooks = []
    # Memory of training only: a validation inside the soak (a UperNet config's every 16k
    # iterations, a fine-tuning's every epoch) would add its own loader and buffers.
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    adapt_to_device(cfg)

    samples = []
    runner = Runner.from_cfg(cfg)
    runner.register_hook(make_hook(args.iters, args.every, samples))
    try:
        runner.train()
    except SoakDone:
        pass
    return samples


def main(argv=None):
    args = parse_args(argv)
    # Checked before the config is loaded and the runner built: a negative --list-size writes
    # an empty list file, refused as 'list file /tmp/soak_.../train.txt names no images'.
    for flag, value in (('--workers', args.workers), ('--list-size', args.list_size)):
        if value < 0:
            raise ValueError(f'{flag} must be 0 or more, got {value}')
    sys.path.insert(0, str(REPO))
    import fastmim  # noqa: F401
    from fastmim.engine.config_loading import load_config
    from fastmim.cli import check_output_file
    if args.out:
        check_output_file(args.out, '--out', folders_made=True)  # the atomic write makes it

    cfg = load_config(args.config, args.cfg_options)
    check_trains(cfg, args.config)
    work_dir = tempfile.mkdtemp(prefix='soak_')
    try:
        samples = soak(cfg, args, work_dir)
    finally:  # the log and list file are only scaffolding for the measurement
        shutil.rmtree(work_dir, ignore_errors=True)
    report = dict(config=args.config, iters=args.iters, workers=args.workers,
                  list_size=args.list_size or None, samples=samples,
                  main_growth_mib_per_1000_iters=growth_per_1000_iters(samples, 'main'),
                  worker_growth_mib_per_1000_iters=growth_per_1000_iters(samples, 'workers'))
    print(json.dumps({k: v for k, v in report.items() if k != 'samples'}, indent=1))
    if args.out:
        # Replaced atomically: a run killed while writing leaves the earlier report whole, not
        # half a file.
        from fastmim.fileio import AtomicLocalBackend
        AtomicLocalBackend().put_text(json.dumps(report, indent=1), args.out)
    sys.stdout.flush()
    os._exit(0)  # persistent workers need no orderly shutdown here


if __name__ == '__main__':
    sys.path.insert(0, str(REPO / 'tools'))
    from early_checks import refuse_a_missing_config  # imports no fastmim
    refuse_a_missing_config(sys.argv[1:])
    sys.path.insert(0, str(REPO))
    from fastmim.cli import run_cli  # a missing config in one line, not a traceback
    run_cli(main)
