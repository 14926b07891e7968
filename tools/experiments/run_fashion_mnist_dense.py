"""The Fashion-MNIST dense-task study of docs/experiments.md, from data to table, in one command.

    python tools/experiments/run_fashion_mnist_dense.py [--work-dir work_dirs/fashion_mnist]
        [--seeds 0 1 2] [--jobs 2] [--train-canvases 4000] [--test-canvases 1000]
        [--doc PATH ... | --no-doc] [--fresh] [--cfg-options KEY=VALUE ...]

Does the FastMIM pre-training of the classification study carry into a dense task?

1. Data: Fashion-MNIST (``fastmim.datasets.fetch_fashion_mnist``), composed into 64-px canvases
   of 2-4 items (``fastmim.datasets.fashion_mnist_canvas``): training canvases from the
   training images, test canvases from the 10,000 test images only; ADE20K layout under
   ``WORK_DIR/canvases``.
2. The classification study's FastMIM pre-training (``run_fashion_mnist.py``'s stage 1, same
   command and work dir: the checkpoint of its end is reused, a stopped one resumed).
3. For every seed, UperNet (``configs/experiments/fashion_mnist_upernet.py``) from the
   pre-trained ViT and from random initialisation (``fashion_mnist_upernet_scratch.py``): same
   recipe and budget, ``tools/train.py`` runs ``--jobs`` at a time with one thread each, mIoU
   of mmseg's IoUMetric on the test canvases.
4. The table (per seed, mean +- sample std) printed and written between the dense-result
   markers of ``docs/experiments.md`` and ``README.md`` when the study is the published one
   (default seeds and canvas counts, no ``--cfg-options``), of the ``--doc`` files when given,
   of none with ``--no-doc``; every number, command and duration in
   ``WORK_DIR/dense_results.json``.

A run whose mIoU is already in its work dir is not repeated, and a stopped one (the
``iter_N.pth`` it saved on SIGTERM, named in its ``last_checkpoint``) is resumed from it with
``tools/train.py --resume``, so an interrupted study goes on where it stopped; ``--fresh``
deletes the dense runs (not the pre-training or the canvases). Each run records what it is
trained with next to it before it starts (``dense_settings.json``: config and options, canvas
counts, the pre-training checkpoint's sha256); a finished or stopped run of other settings than
the command's is refused in one line, before the canvases are touched, rather than reported as
this command's or resumed under it.
"""
import argparse
import glob
import json
import os
import os.path as osp
import shutil
import sys
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import run_fashion_mnist as study  # noqa: E402  (the classification study's stages)
import study_settings  # noqa: E402  (the runs' settings records, shared with it)

ROOT = study.ROOT
RESULTS_BEGIN = '<!-- fashion-mnist-dense-results:begin -->'
RESULTS_END = '<!-- fashion-mnist-dense-results:end -->'
PUBLISHED_SEEDS = [0, 1, 2]
PUBLISHED_CANVASES = dict(train=4000, test=1000)
CANVAS_SEED = 0
SETTINGS_FILE = 'dense_settings.json'  # in each run's work dir: what it was trained with
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


def default_docs() -> List[str]:
    """Where the table is published."""
    return [osp.join(ROOT, 'docs', 'experiments.md'), osp.join(ROOT, 'README.md')]


def train_command(run: Run, canvases: str, checkpoint: str, extra: List[str]) -> List[str]:
    """``--resume``: a stopped run goes on from its checkpoint (exactly: the configs resume bit
    for bit; without the flag it would be trained again from the start); with no checkpoint tools/train.py starts
    from scratch. :func:`check_finished_runs` refuses a stopped run of other settings first."""
    options = [f'randomness.seed={run.seed}', *extra]
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options.append(f'{loader}.dataset.data_root={canvases}/')
    if run.pretrained:
        options.append(f'model.backbone.init_cfg.checkpoint={checkpoint}')
    return study.python_tool('train.py') + [
        osp.join(study.CONFIGS, run.config), '--work-dir', run.work_dir, '--cfg-options',
        *options, '--resume']


def read_miou(work_dir: str) -> Optional[float]:
    """The mIoU of the run's last validation (the test canvases), from mmengine's
    scalars.json; ``None`` if it has not finished."""
    return study.last_scalar(work_dir, 'mIoU')


# Options the runner derives from the work dir (the canvases and the checkpoint are compared by
# their settings and sha256): a work dir or repository moved elsewhere holds the same runs.
DERIVED_OPTIONS = tuple(f'{loader}.dataset.data_root=' for loader in (
    'train_dataloader', 'val_dataloader', 'test_dataloader')) + study_settings.DERIVED_OPTIONS


def run_settings(run: Run, canvases: dict, checkpoint_digest: Optional[str]) -> dict:
    """What a run is trained with: its config and options, the canvases' settings (as
    ``canvases.json`` records them) and, pre-trained, the checkpoint's sha256; the whole
    command too, for the reader."""
    return dict(**study_settings.command_settings(run.command, DERIVED_OPTIONS),
                canvases=canvases,
                checkpoint_sha256=checkpoint_digest if run.pretrained else None,
                command=run.command)


def recorded_settings(run: Run, canvas_dir: str, checkpoint: Optional[str],
                      checkpoint_digest: Optional[str]) -> dict:
    """The settings a finished or stopped run recorded
    (:func:`study_settings.recorded_settings`); for a run of a runner that recorded none, the
    canvases' settings too if ``canvases.json`` is older than its result (else ``None``:
    unknown)."""
    finished = run.miou is not None
    settings = study_settings.recorded_settings(
        run.work_dir, SETTINGS_FILE, finished, checkpoint if run.pretrained else None,
        checkpoint_digest, DERIVED_OPTIONS)
    if settings.get('unrecorded'):
        settings['canvases'] = None
        record = osp.join(canvas_dir, 'canvases.json')
        result_time = study_settings.result_time(run.work_dir, finished)
        if study_settings.written_before(record, result_time):
            with open(record) as f:
                settings['canvases'] = json.load(f).get('settings')
    return settings


def differences(then: dict, now: dict, pretrained: bool,
                no_checkpoint: str = 'its pre-training checkpoint is gone') -> List[str]:
    """What differs between a run's recorded settings and this command's, in words;
    ``no_checkpoint`` says why there is no checkpoint now."""
    return (study_settings.option_differences(then, now) + canvas_differences(then, now) +
            study_settings.weights_differences(then, now, pretrained, no_checkpoint,
                                               'another pre-training checkpoint'))


def canvas_differences(then: dict, now: dict) -> List[str]:
    """What differs between the canvases a run recorded and this command's, in words."""
    if then.get('canvases') == now['canvases']:
        return []
    counts, before = now['canvases'], then.get('canvases')
    if before is None:
        return [f'canvases: written after it finished; {counts["num_train"]} train / '
                f'{counts["num_test"]} test now']
    return [f'canvases: {counts["num_train"]} train / {counts["num_test"]} test now, '
            f'{before.get("num_train")} / {before.get("num_test")} then' +
            ('' if before.get('seed') == counts['seed'] else
             f' (canvas seed {before.get("seed")} then)')]


def check_finished_runs(runs: List[Run], canvas_dir: str, canvases: dict,
                        checkpoint: Optional[str], others: List[Run],
                        no_checkpoint: str) -> None:
    """Refuse, in one line, a finished run trained with other settings than these: its mIoU
    would be reported under this command's settings, and the canvases it was trained on would
    be rewritten under it. A stopped run (:func:`study_settings.held_to_settings`) too:
    ``--resume`` would continue it under this command's settings (the record is rewritten
    before a run starts). ``others``, runs of seeds not asked for, are held to the canvases
    only (they are not reported). Runs of an earlier runner that match get their record.
    ``checkpoint``: the finished pre-training's (None when there is none yet;
    ``no_checkpoint`` says why)."""
    digest = study_settings.checkpoint_digest(checkpoint)
    other = []
    for run in [*runs, *others]:
        if not study_settings.held_to_settings(run.work_dir, run.miou is not None):
            continue
        then = recorded_settings(run, canvas_dir, checkpoint, digest)
        now = run_settings(run, canvases, digest)
        said = differences(then, now, run.pretrained, no_checkpoint)
        if run not in runs:
            said = [words for words in said if words.startswith('canvases:')]
        elif not said and then.get('unrecorded'):
            study_settings.write_settings(run.work_dir, SETTINGS_FILE, now)
        if said:
            other.append((run.work_dir, run.miou is not None, said))
    study_settings.refuse_other_settings(other, '--fresh starts the dense runs over')


def runs_of(seeds: List[int], dense_dir: str) -> List[Run]:
    """The runs of ``seeds``, seed by seed, with the mIoU of those that finished."""
    runs = []
    for seed in seeds:
        for name, config, pretrained in METHODS:
            run = Run(name, config, pretrained, seed,
                      osp.join(dense_dir, 'pretrained' if pretrained else 'scratch',
                               f'seed{seed}'))
            run.miou = read_miou(run.work_dir)
            runs.append(run)
    return runs


def seeds_on_disk(dense_dir: str) -> List[int]:
    """The seeds of the run dirs under ``dense_dir`` (``pretrained/seed3``: 3)."""
    seeds = set()
    for path in glob.glob(osp.join(dense_dir, '*', 'seed*')):
        digits = osp.basename(path)[len('seed'):]
        if digits.isdigit():
            seeds.add(int(digits))
    return sorted(seeds)


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
                        help='the classification study\'s work dir: its pre-training is reused '
                        '(default: %(default)s)')
    parser.add_argument('--seeds', type=study.seed, nargs='+', default=list(PUBLISHED_SEEDS),
                        help='seeds of the runs, each setting a run\'s randomness (new layers, '
                        'the scratch backbone, batch order, flips; default: '
                        f'{" ".join(map(str, PUBLISHED_SEEDS))})')
    parser.add_argument('--jobs', type=study.positive_int, default=2,
                        help='processes at a time (one thread each); pre-training, when it '
                        'has to run, uses as many')
    parser.add_argument('--train-canvases', type=study.positive_int,
                        default=PUBLISHED_CANVASES['train'],
                        help='training canvases, drawn from the 60,000 training images '
                        '(default: %(default)s)')
    parser.add_argument('--test-canvases', type=study.positive_int,
                        default=PUBLISHED_CANVASES['test'],
                        help='test canvases, drawn from the 10,000 test images only; the mIoU '
                        'is measured on them (default: %(default)s)')
    study.add_doc_options(parser, default_docs(), 'the published study: the default --seeds '
                          'and canvas counts, no --cfg-options')
    parser.add_argument('--fresh', action='store_true',
                        help='delete the dense runs first (needed to change the settings of a '
                        'study whose runs finished)')
    parser.add_argument('--cfg-options', nargs='*', default=[],
                        help='more overrides for every run (e.g. train_cfg.max_iters=40)')
    args = parser.parse_args(argv)
    study.refuse_repeats(parser, '--seeds', args.seeds)
    return args


def main(argv=None):
    """Check everything that can refuse the study before anything is written (docs, work dir,
    pre-training, finished runs), then canvases, pre-training, the runs and the report."""
    args = parse_args(argv)
    sys.path.insert(0, ROOT)
    docs, no_doc = results_docs(args)
    study.check_work_dir(args.work_dir)
    study.stop_commands_on_signals()
    work_dir = osp.abspath(args.work_dir)
    found = checked_pretraining(osp.join(work_dir, 'pretrain'), args.jobs)
    dense_dir = osp.join(work_dir, 'upernet')
    if args.fresh and osp.isdir(dense_dir):
        shutil.rmtree(dense_dir)
    os.makedirs(work_dir, exist_ok=True)
    start, load_start = time.time(), os.getloadavg()[0]

    canvas_dir = osp.join(work_dir, 'canvases')
    canvas_settings = dict(num_train=args.train_canvases, num_test=args.test_canvases,
                           seed=CANVAS_SEED)  # as canvases.json records them
    runs = planned_runs(args, dense_dir, canvas_dir, canvas_settings, found)
    canvases = write_canvases(canvas_dir, args.train_canvases, args.test_canvases)
    checkpoint, facts = study.pretrain(found, args.jobs)
    train_runs(runs, args, canvas_dir, canvas_settings, checkpoint)

    facts.update(study.invocation_facts(start, load_start, args.jobs, runs))
    report_results(runs, args.seeds, canvases, facts, docs, no_doc,
                   osp.join(work_dir, 'dense_results.json'))


def results_docs(args) -> Tuple[List[str], Optional[str]]:
    """The docs whose results table this study writes (the published ones only for the
    published study), each checked for its markers, and the line saying why none is written
    (printed now, and in the summary)."""
    docs, no_doc = study.docs_to_write(args, default_docs(), [
        (f'--seeds {" ".join(map(str, args.seeds))}', args.seeds != PUBLISHED_SEEDS),
        (f'--train-canvases {args.train_canvases}',
         args.train_canvases != PUBLISHED_CANVASES['train']),
        (f'--test-canvases {args.test_canvases}',
         args.test_canvases != PUBLISHED_CANVASES['test']),
        (f'--cfg-options {" ".join(args.cfg_options)}', bool(args.cfg_options))])
    for doc in docs:
        study.check_doc(doc, RESULTS_BEGIN, RESULTS_END)
    if no_doc:
        print(no_doc, flush=True)
    return docs, no_doc


def checked_pretraining(pretrain_dir: str, jobs: int):
    """The classification study's pre-training in ``pretrain_dir`` (``study.find_pretraining``),
    refused in one line before the canvases when ``--jobs`` cannot run (or resume) it, or when
    it is another pre-training than the one the finished runs were trained from."""
    # The checkpoint of the pre-training's end (found.finished), as study.pretrain reuses it,
    # not a stopped one's iter_N.pth, though last_checkpoint names that too: counted as
    # pre-trained here, its sha256 would be what finished runs are held to, and --jobs would go
    # unchecked for the resume it needs.
    found = study.find_pretraining(pretrain_dir)
    checkpoint = found.finished
    if jobs < 1 or (not checkpoint and study.PRETRAIN_BATCH % jobs):
        sys.exit(f'error: --jobs must divide the pre-training batch {study.PRETRAIN_BATCH}' +
                 ('' if checkpoint else ' (the pre-training has not finished: it runs first)'))
    study.refuse_other_pretraining(found, jobs)  # before the canvases, as the rest
    return found


def planned_runs(args, dense_dir: str, canvas_dir: str, canvas_settings: dict,
                 found) -> List[Run]:
    """The runs of ``args.seeds``, after the finished and stopped runs in ``dense_dir`` (of
    these seeds and of others) are checked against this command's settings: before the
    canvases are written, since other counts would rewrite those of the finished runs."""
    checkpoint = found.finished
    runs = runs_of(args.seeds, dense_dir)
    others = runs_of([seed for seed in seeds_on_disk(dense_dir) if seed not in args.seeds],
                     dense_dir)
    for run in [*runs, *others]:
        run.command = train_command(run, canvas_dir, checkpoint, args.cfg_options)
    check_finished_runs(runs, canvas_dir, canvas_settings, checkpoint, others,
                        no_checkpoint=study.why_no_pretraining(found))
    return runs


def write_canvases(canvas_dir: str, num_train: int, num_test: int) -> dict:
    """Fashion-MNIST (fetched when missing) composed into the study's canvases; their
    description (``canvases.json``)."""
    from fastmim.datasets import fetch_fashion_mnist
    from fastmim.datasets.fashion_mnist_canvas import write_canvas_segmentation
    try:
        data_root = fetch_fashion_mnist()
    except RuntimeError as error:
        sys.exit(f'error: {error}')
    canvases = write_canvas_segmentation(canvas_dir, num_train, num_test,
                                         seed=CANVAS_SEED, data_root=data_root)
    print(f'canvases in {canvas_dir}: {canvases["counts"]["train"]["canvases"]} train, '
          f'{canvases["counts"]["test"]["canvases"]} test', flush=True)
    return canvases


def train_runs(runs: List[Run], args, canvas_dir: str, canvas_settings: dict,
               checkpoint: str) -> None:
    """Every run's command from ``checkpoint`` (the pre-training's end); what an unfinished
    run is trained with recorded before it starts (a finished run has its record); then the
    unfinished runs trained."""
    digest = study_settings.checkpoint_digest(checkpoint)
    for run in runs:
        run.command = train_command(run, canvas_dir, checkpoint, args.cfg_options)
        if run.miou is None:
            study_settings.write_settings(run.work_dir, SETTINGS_FILE,
                                          run_settings(run, canvas_settings, digest))
    train_all(runs, args.jobs)


def report_results(runs: List[Run], seeds: List[int], canvases: dict, facts: dict,
                   docs: List[str], no_doc: Optional[str], results_path: str) -> None:
    """The table in ``results_path`` with every run and the invocation's facts, in ``docs``
    and printed."""
    table = results_table(runs, seeds, canvases)
    study.write_results(results_path, facts, [dict(
        method=run.method, seed=run.seed, miou=run.miou, seconds=run.seconds,
        command=run.command) for run in runs], canvases=canvases)
    for doc in docs:
        study.write_doc(doc, table, RESULTS_BEGIN, RESULTS_END)
    study.print_summary(table, facts, docs, no_doc, results_path)


if __name__ == '__main__':
    study.report_stops(main)
