"""The Fashion-MNIST dense-task study of docs/experiments.md, from data to table, in one command.

    python tools/experiments/run_fashion_mnist_dense.py [--work-dir work_dirs/fashion_mnist]
        [--seeds 0 1 2] [--jobs 2] [--train-canvases 4000] [--test-canvases 1000]
        [--docs docs/experiments.md README.md] [--fresh] [--cfg-options KEY=VALUE ...]

Does the FastMIM pre-training of the classification study carry into a dense task?

1. Data: Fashion-MNIST (``fastmim.datasets.fetch_fashion_mnist``), composed into 64-px canvases
   of 2-4 items (``fastmim.datasets.fashion_mnist_canvas``): training canvases from the
   training images, test canvases from the 10,000 test images only; ADE20K layout under
   ``WORK_DIR/canvases``.
2. The classification study's FastMIM pre-training (``run_fashion_mnist.py``'s stage 1, same
   command and work dir: a checkpoint that exists is reused).
3. For every seed, UperNet (``configs/experiments/fashion_mnist_upernet.py``) from the
   pre-trained ViT and from random initialisation (``fashion_mnist_upernet_scratch.py``): same
   recipe and budget, ``tools/train.py`` runs ``--jobs`` at a time with one thread each, mIoU
   of mmseg's IoUMetric on the test canvases.
4. The table (per seed, mean +- sample std) printed and written between the dense-result
   markers of every ``--docs`` file; every number, command and duration in
   ``WORK_DIR/dense_results.json``.

A run whose mIoU is already in its work dir is not repeated, so an interrupted study goes on
where it stopped; ``--fresh`` deletes the dense runs (not the pre-training or the canvases).
"""
import argparse
import json
import os
import os.path as osp
import shutil
import sys
import time
from dataclasses import dataclass
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import run_fashion_mnist as study  # noqa: E402  (the classification study's stages)

ROOT = study.ROOT
RESULTS_BEGIN = '<!-- fashion-mnist-dense-results:begin -->'
RESULTS_END = '<!-- fashion-mnist-dense-results:end -->'
# Row name, config, whether the backbone starts from the pre-training checkpoint.
METHODS = [
    ('FastMIM pre-trained', 'fashion_mnist_upernet.py', True),
    ('random init (same recipe and budget)', 'fashion_mnist_upernet_scratch.py', False),
]


@dataclass
class Run:
    method: str
    config: str
    pretrained: bool
    seed: int
    work_dir: str
    command: Optional[List[str]] = None
    miou: Optional[float] = None
    seconds: Optional[float] = None

    @property
    def label(self) -> str:
        return f'UperNet, {self.method}, seed {self.seed}'


def train_command(run: Run, canvases: str, checkpoint: str, extra: List[str]) -> List[str]:
    options = [f'randomness.seed={run.seed}', *extra]
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options.append(f'{loader}.dataset.data_root={canvases}/')
    if run.pretrained:
        options.append(f'model.backbone.init_cfg.checkpoint={checkpoint}')
    return study.python_tool('train.py') + [
        osp.join(study.CONFIGS, run.config), '--work-dir', run.work_dir, '--cfg-options',
        *options]


def read_miou(work_dir: str) -> Optional[float]:
    """The mIoU of the run's last validation (the test canvases), from mmengine's
    scalars.json; ``None`` if it has not finished."""
    return study.last_scalar(work_dir, 'mIoU')


def train_all(runs: List[Run], jobs: int) -> None:
    """Run every unfinished run, ``jobs`` at a time, one thread each; fills ``miou``."""
    pending = [run for run in runs if run.miou is None]
    study.run_pending(len(runs), pending, jobs,
                      finish=lambda run: setattr(run, 'miou', read_miou(run.work_dir)),
                      describe=lambda run: f'mIoU {run.miou:.2f}')


def results_table(runs: List[Run], seeds: List[int], canvases: dict) -> str:
    """One row per initialisation, one column per seed, and the mean ± std column when there
    are several seeds."""
    several = len(seeds) > 1
    lines = ['| UperNet, mIoU (%) on the test canvases | ' +
             ' | '.join(f'seed {seed}' for seed in seeds) + (' | mean ± std |' if several else
                                                             ' |'),
             '|---|' + '---|' * (len(seeds) + several)]
    for name, _, _ in METHODS:
        by_seed = {run.seed: run.miou for run in runs if run.method == name}
        cells = [f'{by_seed[seed]:.1f}' if by_seed.get(seed) is not None else 'n/a'
                 for seed in seeds]
        if several:
            cells.append(study.mean_std([value for value in by_seed.values()
                                         if value is not None]))
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    test = canvases['counts']['test']
    over = (f'mean ± sample standard deviation over seeds {", ".join(map(str, seeds))}'
            if several else f'one seed ({seeds[0]})')
    lines.append('')
    lines.append(f'mIoU over 11 classes (background + 10) of mmseg\'s IoUMetric on '
                 f'{test["canvases"]:,} test canvases ({test["items"]:,} of the 10,000 test '
                 f'images); {over} (a seed sets the run\'s randomness: new layers, the scratch '
                 'backbone, batch order, flips).')
    return '\n'.join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'fashion_mnist'),
                        help='the classification study\'s work dir: its pre-training is reused')
    parser.add_argument('--seeds', type=study.seed, nargs='+', default=[0, 1, 2])
    parser.add_argument('--jobs', type=study.positive_int, default=2,
                        help='processes at a time (one thread each); pre-training, when it '
                        'has to run, uses as many')
    parser.add_argument('--train-canvases', type=study.positive_int, default=4000)
    parser.add_argument('--test-canvases', type=study.positive_int, default=1000)
    parser.add_argument('--docs', nargs='*',
                        default=[osp.join(ROOT, 'docs', 'experiments.md'),
                                 osp.join(ROOT, 'README.md')],
                        help='markdown files whose dense-result markers receive the table')
    parser.add_argument('--fresh', action='store_true', help='delete the dense runs first')
    parser.add_argument('--cfg-options', nargs='*', default=[],
                        help='more overrides for every run (e.g. train_cfg.max_iters=40)')
    args = parser.parse_args(argv)
    study.refuse_repeats(parser, '--seeds', args.seeds)
    return args


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, ROOT)
    for doc in args.docs:
        study.check_doc(doc, RESULTS_BEGIN, RESULTS_END)
    study.check_work_dir(args.work_dir)
    study.stop_commands_on_signals()
    work_dir = osp.abspath(args.work_dir)
    pretrained = osp.isfile(osp.join(work_dir, 'pretrain', 'last_checkpoint'))
    if args.jobs < 1 or (not pretrained and study.PRETRAIN_BATCH % args.jobs):
        sys.exit(f'error: --jobs must divide the pre-training batch {study.PRETRAIN_BATCH}')
    dense_dir = osp.join(work_dir, 'upernet')
    if args.fresh and osp.isdir(dense_dir):
        shutil.rmtree(dense_dir)
    os.makedirs(work_dir, exist_ok=True)
    start, load_start = time.time(), os.getloadavg()[0]

    from fastmim.datasets import fetch_fashion_mnist
    from fastmim.datasets.fashion_mnist_canvas import write_canvas_segmentation
    try:
        data_root = fetch_fashion_mnist()
    except RuntimeError as error:
        sys.exit(f'error: {error}')
    canvas_dir = osp.join(work_dir, 'canvases')
    canvases = write_canvas_segmentation(canvas_dir, args.train_canvases, args.test_canvases,
                                         seed=0, data_root=data_root)
    print(f'canvases in {canvas_dir}: {canvases["counts"]["train"]["canvases"]} train, '
          f'{canvases["counts"]["test"]["canvases"]} test', flush=True)
    facts = study.pretrain(work_dir, args.jobs)
    checkpoint = study.latest_checkpoint(osp.join(work_dir, 'pretrain'))

    results_path = osp.join(work_dir, 'dense_results.json')
    earlier = {}
    if osp.isfile(results_path):  # durations of runs an interrupted invocation finished
        with open(results_path) as f:
            earlier = {(r['method'], r['seed']): r['seconds'] for r in json.load(f)['runs']}
    runs = []
    for seed in args.seeds:
        for name, config, pretrained in METHODS:
            run = Run(name, config, pretrained, seed,
                      osp.join(dense_dir, 'pretrained' if pretrained else 'scratch',
                               f'seed{seed}'))
            run.command = train_command(run, canvas_dir, checkpoint, args.cfg_options)
            run.miou = read_miou(run.work_dir)
            if run.miou is not None:
                run.seconds = earlier.get((name, seed))
            runs.append(run)
    train_all(runs, args.jobs)

    facts.update(total_seconds=time.time() - start, load_average_start=load_start,
                 load_average_end=os.getloadavg()[0], cpu_count=os.cpu_count(), jobs=args.jobs)
    table = results_table(runs, args.seeds, canvases)
    with open(results_path, 'w') as f:
        json.dump(dict(facts=facts, canvases=canvases, runs=[dict(
            method=run.method, seed=run.seed, miou=run.miou, seconds=run.seconds,
            command=run.command) for run in runs]), f, indent=2)
    for doc in args.docs:
        study.write_doc(doc, table, RESULTS_BEGIN, RESULTS_END)
    print('\n' + table)
    print(f'\nwall time {facts["total_seconds"] / 60:.1f} min on {os.cpu_count()} CPU cores '
          f'(load average {load_start:.1f} at the start, {facts["load_average_end"]:.1f} at '
          f'the end); table written to {", ".join(args.docs) or "no document (--docs)"}, '
          f'details in {work_dir}/dense_results.json')


if __name__ == '__main__':
    main()
