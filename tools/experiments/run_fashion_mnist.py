"""The Fashion-MNIST study of docs/experiments.md, from data to table, in one command.

    python tools/experiments/run_fashion_mnist.py [--work-dir work_dirs/fashion_mnist]
        [--seeds 0 1 2] [--fractions 0.01 0.1] [--jobs 2] [--doc PATH ... | --no-doc] [--fresh]

1. Data: the Debian package ``dataset-fashion-mnist``, installed, or fetched without root with
   ``apt-get download`` + ``dpkg -x`` into ``~/.cache/fastmim/data``
   (``fastmim.datasets.fetch_fashion_mnist``).
2. FastMIM pre-training on 20,000 training images without their labels
   (``configs/experiments/fashion_mnist_pretrain.py``), ``--jobs`` CPU processes with
   ``tools/dist_train.sh``.
3. For every seed and label fraction, each a ``tools/train.py`` / ``tools/test.py`` command run
   ``--jobs`` at a time with one thread each: fine-tuning from the checkpoint and from random
   initialisation (same recipe, same 200 updates), linear probing and kNN of the checkpoint and
   of the random initialisation the pre-training started from.
4. Top-1 on the 10,000 test images as a markdown table (mean +- sample std over the seeds),
   printed and written between the result markers of ``docs/experiments.md`` and ``README.md``
   when the grid is the published one (the default ``--seeds`` and ``--fractions``), of the
   ``--doc`` files when given, of none with ``--no-doc``; every number, command and duration
   in ``WORK_DIR/results.json``.

A run whose result is already in its work dir is not repeated, so an interrupted study goes on
where it stopped (a stopped pre-training is resumed from its last checkpoint, only with the
``--jobs`` it was started with, which ``pretrain/settings.json`` records; only the checkpoint
of its end is reused, under any ``--jobs``; a stopped fine-tuning or linear-probe run is
resumed from the ``iter_N.pth`` it saved, a stopped kNN run repeated); ``--fresh`` deletes what
the study wrote there first (the pre-training, the runs, ``results.json``) and keeps everything
else (the dense study's runs, a user's files). Each run records what it runs with next to it
before it starts (``settings.json``: config and options, the sha256 of the weights it starts
from); a finished or stopped run of other settings than the command's (another pre-training,
say) is refused in one line before the pre-training runs, rather than reported as this
command's or resumed under it.
"""
import argparse
import concurrent.futures
import json
import os
import os.path as osp
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from study_settings import (  # noqa: E402  (beside this file: the runs' settings records)
    checkpoint_digest, command_settings, held_to_settings, option_differences,
    recorded_settings, refuse_other_settings, weights_differences, write_settings)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = osp.join(ROOT, 'configs', 'experiments')
PRETRAIN_CONFIG = osp.join(CONFIGS, 'fashion_mnist_pretrain.py')
PRETRAIN_BATCH = 128  # total over the pre-training processes
# The grid of the table published in docs/experiments.md: only a study of it writes there
# unless --doc says otherwise.
PUBLISHED_SEEDS = [0, 1, 2]
PUBLISHED_FRACTIONS = [0.01, 0.1]
TRAIN_IMAGES_PER_CLASS = 6000  # Fashion-MNIST's training split: 60,000 images, 10 classes
RESULTS_BEGIN = '<!-- fashion-mnist-results:begin -->'
RESULTS_END = '<!-- fashion-mnist-results:end -->'


@dataclass
class Method:
    """A row of the table: which config, from which weights, read from which metric."""
    name: str
    config: str
    weights: Optional[str]  # 'pretrained', 'random' or None (the config's own initialisation)
    evaluate_only: bool = False

    @property
    def metric(self) -> str:
        return 'knn/top1' if self.evaluate_only else 'accuracy/top1'


METHODS = [
    Method('FastMIM pre-trained, fine-tuned', 'fashion_mnist_finetune.py', 'pretrained'),
    Method('random init, fine-tuned (same recipe and budget)',
           'fashion_mnist_finetune_scratch.py', None),
    Method('FastMIM pre-trained, linear probe', 'fashion_mnist_linear_probe.py', 'pretrained'),
    Method('random init, linear probe', 'fashion_mnist_linear_probe.py', 'random'),
    Method('FastMIM pre-trained, kNN (k=20)', 'fashion_mnist_knn.py', 'pretrained', True),
    Method('random init, kNN (k=20)', 'fashion_mnist_knn.py', 'random', True),
]


@dataclass
class Run:
    method: Method
    fraction: float
    seed: int
    work_dir: str
    command: List[str] = field(default_factory=list)
    top1: Optional[float] = None
    seconds: Optional[float] = None

    @property
    def label(self) -> str:
        return f'{self.method.name}, {self.fraction:.0%} labels, seed {self.seed}'


def method_folder(method: Method) -> str:
    """The folder of ``WORK_DIR`` that holds a method's runs."""
    return f'{method.config[:-3]}_{method.weights or "config"}'


def study_outputs() -> List[str]:
    """What the study writes in its work dir: all that ``--fresh`` deletes."""
    return ['pretrain', 'initial_weights.pth', 'results.json', *sorted(
        {method_folder(method) for method in METHODS})]


def delete_outputs(work_dir: str) -> None:
    """``--fresh``: delete what the study wrote in ``work_dir`` and keep the rest, named.

    It deleted the whole ``--work-dir``, a user's files in it too. A link (a pre-training
    linked in) is removed, not what it points to."""
    if not osp.isdir(work_dir):
        return
    deleted = []
    for name in study_outputs():
        path = osp.join(work_dir, name)
        if osp.islink(path) or osp.isfile(path):
            os.remove(path)
        elif osp.isdir(path):
            shutil.rmtree(path)
        else:
            continue
        deleted.append(name)
    kept = sorted(set(os.listdir(work_dir)) - set(study_outputs()))
    print(f'--fresh: deleted {", ".join(deleted) or "nothing (no earlier study)"} in {work_dir}'
          + (f'; kept what the study did not write: {", ".join(kept)}' if kept else ''),
          flush=True)


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------
# What would make dist_train.sh join a fixed rendezvous instead of a one-node job's own.
RENDEZVOUS_VARIABLES = ('PORT', 'MASTER_PORT', 'MASTER_ADDR', 'NNODES', 'NODE_RANK')


def python_tool(tool: str) -> List[str]:
    return [sys.executable, osp.join(ROOT, 'tools', tool)]


def pretrain_command(work_dir: str, jobs: int) -> List[str]:
    options = ['--work-dir', work_dir, '--cfg-options',
               f'train_dataloader.batch_size={PRETRAIN_BATCH // jobs}']
    if jobs == 1:
        return python_tool('train.py') + [PRETRAIN_CONFIG] + options
    return ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), PRETRAIN_CONFIG, str(jobs)] + options


def run_command(run: Run, checkpoints: Dict[str, str]) -> List[str]:
    """The tools/train.py or tools/test.py command of one run.

    A training run is given ``--resume``: a stopped one (SIGTERM: ``PreemptionHook`` saved
    ``iter_N.pth``, exit status 75) continues from its checkpoint, exactly, rather than
    training again from the start; with no checkpoint there tools/train.py starts from scratch. A
    run's work dir holds that run only (method, fraction and seed name it; ``--fresh`` deletes
    the runs with the pre-training they started from)."""
    config = osp.join(CONFIGS, run.method.config)
    checkpoint = checkpoints.get(run.method.weights)
    if run.method.evaluate_only:
        dataset = 'test_cfg.bank_dataloader.dataset'
        return python_tool('test.py') + [
            config, checkpoint, '--work-dir', run.work_dir,
            '--out', osp.join(run.work_dir, 'metrics.json'), '--cfg-options',
            f'{dataset}.label_fraction={run.fraction}', f'{dataset}.seed={run.seed}']
    options = [f'train_dataloader.dataset.label_fraction={run.fraction}',
               f'train_dataloader.dataset.seed={run.seed}', f'randomness.seed={run.seed}']
    if checkpoint:
        options.append(f'model.backbone.init_cfg.checkpoint={checkpoint}')
    return python_tool('train.py') + [config, '--work-dir', run.work_dir, '--cfg-options',
                                      *options, '--resume']


def read_top1(run: Run) -> Optional[float]:
    """The run's test top-1 if it finished: kNN from --out, training from the last validation
    in mmengine's scalars.json (the val split is the test split)."""
    if run.method.evaluate_only:
        path = osp.join(run.work_dir, 'metrics.json')
        if osp.isfile(path):
            with open(path) as f:
                return json.load(f).get(run.method.metric)
        return None
    return last_scalar(run.work_dir, run.method.metric)


def last_scalar(work_dir: str, key: str) -> Optional[float]:
    """The last ``key`` logged in the newest of mmengine's ``scalars.json`` of ``work_dir``
    that has one; ``None`` if none has (the run has not finished). A last line cut short (a
    run killed while writing it) is left out."""
    from fastmim.logged_scalars import read_records, scalars_files
    for path in reversed(scalars_files(work_dir, missing_ok=True)):
        values = [record[key] for record in read_records(path) if key in record]
        if values:
            return values[-1]
    return None


# Process groups of the commands running now, stopped with the study: a SIGTERM (timeout, a
# scheduler) that ended the study alone would leave torchrun and its workers training on, into
# the work dirs that a rerun then trains in too.
RUNNING_GROUPS = set()
# Set when the study is stopped: no command starts after it. Without it the runs queued in the
# thread pool would keep starting, one after another, while the stopped study waits for its
# pool to shut down.
STOPPING = threading.Event()
# What stops the study as PreemptionHook stops a training run: SIGTERM (a scheduler, timeout,
# SLURM's preemption), SIGUSR1 (SLURM's --signal=USR1@120, two minutes before the time limit)
# and Ctrl-C. SIGUSR1 killed the runner on the spot, without a word, and left its running
# commands training on unwatched.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class StudyStopped(SystemExit):
    """The study ended on request, not by a failure, with the status that says a rerun goes
    on: PreemptionHook's (75) for a scheduler's SIGTERM or SIGUSR1 and for runs that stopped
    after saving, as tools/train.py ends a preempted training, so that a requeue script's
    ``[ $? -eq 75 ]`` requeues the study too (it read 1, a failure); 130 for Ctrl-C.
    :func:`report_stops` prints the message (Python prints none for a numeric status)."""

    def __init__(self, message: str, status: int):
        super().__init__(status)
        self.message = message

    def __str__(self) -> str:
        return self.message


def report_stops(main: Callable[[], None]) -> None:
    """Run a runner's ``main``; a :class:`StudyStopped` prints its message, then exits with
    its status."""
    try:
        main()
    except StudyStopped as stop:
        print(stop.message, file=sys.stderr, flush=True)
        raise


def preempted_exit_status() -> int:
    """tools/train.py's status after PreemptionHook saved the training (imported when needed:
    the runner loads no fastmim module until a study starts)."""
    from fastmim.engine.hooks.preemption_hook import PREEMPTED_EXIT_STATUS
    return PREEMPTED_EXIT_STATUS


def stop_status(signum: int) -> int:
    """The study's status when ``signum`` stops it: tools/train.py's for the same signal (a
    shell's 130 for Ctrl-C, PreemptionHook's for a scheduler's SIGTERM or SIGUSR1)."""
    from fastmim.cli import INTERRUPTED_EXIT_STATUS
    return INTERRUPTED_EXIT_STATUS if signum == signal.SIGINT else preempted_exit_status()


class Stopped(RuntimeError):
    """A command that did not finish because it was stopped (preempted, or the study is
    stopping), not because it failed: a rerun of the study goes on with it."""


def execute(command: List[str], log_path: str, threads: int) -> float:
    """Run a command with its output in ``log_path``; seconds taken. Raises on failure.

    The command leads a process group of its own (:func:`stop_commands_on_signals` ends it).
    Once the study is stopping (:data:`STOPPING`) no command starts, and one that started while
    the stop ended the others is ended by its own thread. A stop waits for the command it
    ended: a training run saves its checkpoint on the way out, and under SLURM the job's
    processes die with the runner (a stop that did not wait would cut the pre-training's save
    short: the runner, waiting for it in its main thread, would leave at once)."""
    if STOPPING.is_set():
        raise Stopped('not started: the study is stopping')
    # Each run is a job of one node: dist_train.sh then lets torchrun pick a free port
    # (--standalone), so the runs of --jobs may start at once. A port probed here and passed
    # on could be taken by another run between the probe and torchrun's bind.
    env = {name: value for name, value in os.environ.items() if name not in RENDEZVOUS_VARIABLES}
    env.update(PYTHONPATH=ROOT, OMP_NUM_THREADS=str(threads))
    start = time.time()
    with open(log_path, 'w') as log:
        log.write(' '.join(command) + '\n\n')
        log.flush()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        RUNNING_GROUPS.add(process.pid)
        if STOPPING.is_set():  # the stop may have ended the groups before this one was added
            stop_group(process.pid)
        try:
            returncode = process.wait()
        except BaseException:  # the stop, raised in this (the main) thread, ended its wait
            if STOPPING.is_set():
                process.wait()
            raise
        finally:
            RUNNING_GROUPS.discard(process.pid)
    if returncode:
        raise failure(returncode, log_path)
    return time.time() - start


def failure(returncode: int, log_path: str) -> RuntimeError:
    """What a command's non-zero exit status says: :class:`Stopped` for PreemptionHook's
    status (the training saved its checkpoint) and for any status of a command the study's
    stop ended, else the failure with the log's tail."""
    if STOPPING.is_set():
        return Stopped(f'stopped with the study (exit code {returncode}); log {log_path}')
    if returncode == preempted_exit_status():
        return Stopped(f'preempted (exit code {returncode}): it saved its checkpoint, which a '
                       f'rerun resumes; log {log_path}')
    with open(log_path) as log:
        tail = ''.join(log.readlines()[-15:])
    return RuntimeError(f'exit code {returncode}; log {log_path}:\n{tail}')


def stop_commands_on_signals() -> None:
    """On any of :data:`STOP_SIGNALS`, end the running commands' process groups, then the
    study, once they have ended.

    The groups are ended in the handler itself: the study's thread pool waits for its
    threads, and so for their commands, before any ``finally`` of the main thread runs."""
    def stop(signum, frame):
        STOPPING.set()  # first: a thread that starts a command after this ends it itself
        for group in list(RUNNING_GROUPS):
            stop_group(group)
        raise StudyStopped(f'error: stopped by {signal.Signals(signum).name}; the running '
                           'commands were stopped too; rerun the same command to go on where '
                           'the study stopped (a stopped training run resumes from the '
                           'checkpoint it saved)', stop_status(signum))
    STOPPING.clear()
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)


def stop_group(group: int) -> None:
    """SIGTERM to a command's process group: tools/train.py's PreemptionHook saves and exits
    with ``PREEMPTED_EXIT_STATUS``, tools/dist_launch.sh waits for its processes to."""
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------
def pretrain(found: 'Pretraining', jobs: int) -> Tuple[str, Dict[str, float]]:
    """FastMIM pre-training in ``found.folder``, as the runner found it
    (:func:`find_pretraining`); returns the checkpoint of its end and timing facts.

    Skipped when ``found`` finished. Any other checkpoint (a stopped study's: the training saves
    ``iter_N.pth`` on SIGTERM and names it in ``last_checkpoint``) is resumed with
    ``tools/train.py --resume``: the mere presence of ``last_checkpoint`` counted as a finished
    pre-training, so every downstream run of a study stopped during stage 1 started from the
    partial weights; only with the settings it was started with (:func:`pretraining_settings`,
    recorded before it starts)."""
    pretrain_dir = found.folder
    os.makedirs(pretrain_dir, exist_ok=True)
    if found.finished:
        print(f'pre-training: reusing {found.finished}', flush=True)
        return found.finished, {}
    if PRETRAIN_BATCH % jobs:  # its callers check first; this holds for any caller
        sys.exit(f'error: --jobs must divide the pre-training batch {PRETRAIN_BATCH} (the '
                 f'pre-training in {pretrain_dir} has not finished)')
    refuse_other_pretraining(found, jobs)
    write_settings(pretrain_dir, SETTINGS_FILE, pretraining_settings(pretrain_dir, jobs))
    partial = found.checkpoint
    facts = {}
    if partial:
        print(f'pre-training: {partial} is not of its end ({found.position}); '
              f'resuming it on {jobs} CPU process(es), log {pretrain_dir}/run.log', flush=True)
        facts['pretrain_resumed_from'] = partial
    else:
        print(f'pre-training on {jobs} CPU process(es), log {pretrain_dir}/run.log', flush=True)
    try:
        seconds = execute(pretrain_command(pretrain_dir, jobs) + ['--resume'],
                          osp.join(pretrain_dir, 'run.log'), threads=1)
    except Stopped as error:
        raise StudyStopped(f'error: pre-training {error}', preempted_exit_status())
    except RuntimeError as error:  # no traceback of the runner: the log says why
        sys.exit(f'error: pre-training {error}')
    done = find_pretraining(pretrain_dir)
    if not done.finished:
        sys.exit(f'error: the pre-training ended without the checkpoint of its end '
                 f'({pretrain_dir}/last_checkpoint names {done.checkpoint}); '
                 f'log {pretrain_dir}/run.log')
    print(f'pre-training done in {seconds:.0f} s: {done.finished}', flush=True)
    return done.finished, dict(pretrain_seconds=seconds, **facts)


def pretraining_length() -> Tuple[str, int]:
    """What the pre-training config trains, in the unit its checkpoints' ``meta`` counts:
    ``('epoch', 3)``."""
    from mmengine.config import Config
    train_cfg = Config.fromfile(PRETRAIN_CONFIG).train_cfg
    if 'max_epochs' in train_cfg:
        return 'epoch', int(train_cfg.max_epochs)
    return 'iter', int(train_cfg.max_iters)


@dataclass
class Pretraining:
    """The pre-training as a runner finds it, once (:func:`find_pretraining`), and hands to
    what needs it, so that asking in a row whether it finished, where it stopped and what the
    runs start from loads the checkpoint once, and a moved work dir's fallback is logged
    once."""
    folder: str
    checkpoint: Optional[str]  # what its last_checkpoint names (:func:`latest_checkpoint`)
    meta: Optional[dict]  # the checkpoint's; None without one or when it cannot be read
    finished: Optional[str]  # the checkpoint if it was saved at the pre-training's end

    @property
    def position(self) -> str:
        """``'epoch 0, iteration 22'``: where the checkpoint's ``meta`` says it was saved."""
        if self.meta is None:
            return 'unreadable'
        return f'epoch {self.meta.get("epoch")}, iteration {self.meta.get("iter")}'


def find_pretraining(folder: str) -> Pretraining:
    """The pre-training in ``folder``. It finished if the checkpoint ``last_checkpoint`` names
    was saved at its end (its ``meta`` counts the config's epochs); not with none yet, one
    saved on the way (a stopped run's ``iter_N.pth``) or one that cannot be read (``--resume``
    names the problem)."""
    checkpoint = latest_checkpoint(folder)
    meta = read_meta(checkpoint) if checkpoint else None
    return Pretraining(folder, checkpoint, meta, checkpoint if ends_pretraining(meta) else None)


def ends_pretraining(meta: Optional[dict]) -> bool:
    """Whether a checkpoint's ``meta`` counts the epochs (or iterations) of the config."""
    if not meta:
        return False
    unit, total = pretraining_length()
    done = meta.get(unit)
    return isinstance(done, (int, float)) and not isinstance(done, bool) and done >= total


def read_meta(path: str) -> Optional[dict]:
    """A checkpoint's ``meta``, read weights-only; None when the file cannot be read."""
    from fastmim.engine.checkpoint import load_from_local
    from fastmim.errors import CheckpointError
    try:
        checkpoint = load_from_local(path, map_location='cpu')
    except CheckpointError:
        return None
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    return meta if isinstance(meta, dict) else {}


def latest_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``work_dir/last_checkpoint`` names, as tools/train.py reads it
    (``fastmim.engine.last_checkpoint.latest_checkpoint``); None without one.

    The file holds an absolute path: in a work dir that was copied or moved (or a
    pre-training copied into another work dir) it names the original's checkpoint, and taken as
    is it would reuse or train from the other folder's file. A file of that name in
    ``work_dir`` is taken instead, logged. An empty one is refused in one line."""
    if not osp.isfile(osp.join(work_dir, 'last_checkpoint')):
        return None  # (mmengine's reader prints 'Did not find last_checkpoint to be resumed.')
    from fastmim.engine.last_checkpoint import latest_checkpoint as named
    from fastmim.errors import CheckpointError
    try:
        return named(work_dir, use='the study takes')
    except CheckpointError as error:
        sys.exit(f'error: {error}')


def pretraining_settings(pretrain_dir: str, jobs: int) -> dict:
    """What the pre-training is started with: its config and options (the per-process batch),
    its processes (``--jobs``) and the whole command, for the reader."""
    command = pretrain_command(pretrain_dir, jobs)
    return dict(**command_settings(command), processes=jobs, command=command)


def refuse_other_pretraining(found: Pretraining, jobs: int) -> None:
    """Refuse, in one line, to resume a stopped pre-training with other settings than it was
    started with: another ``--jobs`` trained it on with another number of processes and
    per-process batch, not the run it was. A finished one is reused under any (the runs record
    its weights' sha256); one that recorded nothing is held to the command in its run.log."""
    if found.finished or not found.checkpoint:
        return
    then = recorded_settings(found.folder, SETTINGS_FILE, False, None, None)
    if then.get('options') is None:
        return  # nothing says how it was started
    said = option_differences(then, pretraining_settings(found.folder, jobs))
    processes = then.get('processes')
    if processes not in (None, jobs):
        said.insert(0, f'--jobs {jobs} now, {processes} then')
    resume = f'--jobs {processes}' if processes else 'the --jobs it was started with'
    refuse_other_settings([(found.folder, False, said)] if said else [],
                          f'rerun with {resume} to resume it, or delete {found.folder} to '
                          'start it over')


def save_initial_weights(path: str, seed: int = 0) -> str:
    """The weights pre-training starts from (pre-training config, ``seed``), as a checkpoint:
    the 'random init' of the linear-probe and kNN baselines."""
    if osp.isfile(path):
        return path
    import torch
    from mmengine.config import Config
    from mmengine.runner import set_random_seed

    import fastmim  # noqa: F401  registers the modules
    from fastmim.registry import MODELS
    set_random_seed(seed)
    model = MODELS.build(Config.fromfile(PRETRAIN_CONFIG).model)  # initialised when built
    torch.save(dict(state_dict=model.state_dict(), meta=dict(geometry=model.geometry())), path)
    return path


def downstream(runs: List[Run], checkpoints: Dict[str, str], jobs: int) -> None:
    """Run every unfinished run, ``jobs`` at a time, one thread each; fills ``top1``. Each
    records its settings before it starts (:data:`SETTINGS_FILE`)."""
    digests = weight_digests(checkpoints)
    pending = []
    for run in runs:
        run.command = run_command(run, checkpoints)
        run.top1 = read_top1(run)
        if run.top1 is None:
            write_settings(run.work_dir, SETTINGS_FILE, run_settings(run, digests))
            pending.append(run)
    run_pending(len(runs), pending, jobs, finish=lambda run: setattr(run, 'top1', read_top1(run)),
                describe=lambda run: f'top-1 {run.top1:.2f}')


def run_pending(total: int, pending: list, jobs: int, finish: Callable,
                describe: Callable) -> None:
    """Execute the ``command`` of every pending run, ``jobs`` at a time, one thread each;
    ``finish(run)`` reads its result into the run and ``describe(run)`` says it. Exits naming
    how many failed or were stopped once the others are done (a rerun retries only those). A
    run preempted (exit status 75: it saved its checkpoint) or ended while the study stops is
    stopped, not failed, rather than 'FAILED: exit code 75' with its log's tail."""
    print(f'{total - len(pending)} of {total} runs already done; running '
          f'{len(pending)}, {jobs} at a time', flush=True)

    def one(run):
        if STOPPING.is_set():  # taken from the queue as the study stopped
            raise Stopped('not started: the study is stopping')
        os.makedirs(run.work_dir, exist_ok=True)
        run.seconds = execute(run.command, osp.join(run.work_dir, 'run.log'), threads=1)
        finish(run)

    failures = stopped = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        try:
            futures = {pool.submit(one, run): run for run in pending}
            for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                run = futures[future]
                try:
                    future.result()
                    print(f'[{done}/{len(pending)}] {run.label}: {describe(run)} '
                          f'({run.seconds:.0f} s)', flush=True)
                except RuntimeError as error:
                    if isinstance(error, Stopped) or STOPPING.is_set():
                        stopped += 1
                        print(f'[{done}/{len(pending)}] {run.label} stopped: {error}',
                              flush=True)
                        continue
                    failures += 1
                    print(f'[{done}/{len(pending)}] {run.label} FAILED: {error}', flush=True)
        except BaseException:
            # Stopped (STOP_SIGNALS): leaving the ``with`` waits for the pool, which ran
            # every queued run first. The queued ones are cancelled; the running ones, whose
            # commands the stop has ended, are waited for.
            STOPPING.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    if failures or stopped:
        said = [words for count, words in [(failures, f'{failures} runs failed'), (
            stopped, f'{stopped} runs were stopped (a rerun resumes those that saved a '
            'checkpoint)')] if count]
        message = f'error: {" and ".join(said)}; rerun the command to go on with them'
        if failures:
            sys.exit(message)
        raise StudyStopped(message, preempted_exit_status())


# --------------------------------------------------------------------------------------------
# Settings records: what each run was trained with, next to it (both runners)
# --------------------------------------------------------------------------------------------
SETTINGS_FILE = 'settings.json'  # in each run's work dir and in pretrain (dense: its own)


def run_settings(run: Run, digests: Dict[Optional[str], Optional[str]]) -> dict:
    """What a run is trained (or kNN-evaluated) with: its config and options and the sha256 of
    the weights it starts from (``digests``: by ``Method.weights``); the whole command too, for
    the reader."""
    return dict(**command_settings(run.command), checkpoint_sha256=digests.get(
        run.method.weights), command=run.command)


def weight_digests(checkpoints: Dict[str, Optional[str]]) -> Dict[str, Optional[str]]:
    """The sha256 of each checkpoint the runs start from, by ``Method.weights``."""
    return {weights: checkpoint_digest(path) for weights, path in checkpoints.items()}


def check_finished_runs(runs: List[Run], checkpoints: Dict[str, Optional[str]],
                        no_pretraining: Optional[str]) -> None:
    """Refuse, in one line, a finished or stopped run made with other settings than this
    command's (another pre-training or other initial weights, other options): its result was
    reported under them, or ``--resume`` would continue it under them. A run of an earlier
    runner that matches gets its record. ``checkpoints``: the weights the runs start from, by
    ``Method.weights`` (the pre-training's ``None`` when it has not finished:
    ``no_pretraining`` says why)."""
    digests = weight_digests(checkpoints)
    missing = dict(pretrained=no_pretraining, random='its initial weights are gone')
    others = dict(pretrained='another pre-training checkpoint',
                  random='other initial weights (initial_weights.pth)')
    other = []
    for run in runs:
        run.command = run_command(run, checkpoints)
        finished = read_top1(run) is not None
        if not held_to_settings(run.work_dir, finished):
            continue
        weights = run.method.weights
        then = recorded_settings(run.work_dir, SETTINGS_FILE, finished,
                                 checkpoints.get(weights), digests.get(weights))
        now = run_settings(run, digests)
        said = option_differences(then, now) + weights_differences(
            then, now, weights is not None, missing.get(weights), others.get(weights))
        if said:
            other.append((run.work_dir, finished, said))
        elif then.get('unrecorded'):
            write_settings(run.work_dir, SETTINGS_FILE, now)
    refuse_other_settings(other, '--fresh starts the study over')


def why_no_pretraining(found: Pretraining) -> Optional[str]:
    """Why there is no finished pre-training to hold the runs that started from one to; None
    when it finished."""
    if found.finished:
        return None
    if found.checkpoint:
        return f'the pre-training has not finished ({found.checkpoint}: {found.position})'
    return 'its pre-training checkpoint is gone'


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
def mean_std(values: List[float]) -> str:
    if not values:
        return 'n/a'
    if len(values) == 1:
        return f'{values[0]:.1f}'
    return f'{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}'


def results_table(runs: List[Run], fractions: List[float], seeds: List[int]) -> str:
    header = '| top-1 on the 10,000 test images (%) | ' + ' | '.join(
        f'{fraction:.0%} labels ({round(fraction * 60000):,} images)' for fraction in fractions)
    lines = [header + ' |', '|---|' + '---|' * len(fractions)]
    for method in METHODS:
        cells = [mean_std([run.top1 for run in runs if run.method is method and
                           run.fraction == fraction and run.top1 is not None])
                 for fraction in fractions]
        lines.append(f'| {method.name} | ' + ' | '.join(cells) + ' |')
    lines.append('')
    over = (f'One seed ({seeds[0]})' if len(seeds) == 1 else
            f'Mean ± sample standard deviation over {len(seeds)} seeds '
            f'({", ".join(map(str, seeds))})')
    lines.append(f'{over}; a seed draws the labelled subset and the run\'s randomness.')
    return '\n'.join(lines)


def invocation_facts(start: float, load_start: float, jobs: int, runs: list) -> dict:
    """What this invocation of a runner cost and where it ran: wall time, load, cores, and how
    many runs it trained (those with ``seconds``)."""
    return dict(started=time.strftime('%Y-%m-%dT%H:%M:%S%z', time.localtime(start)),
                total_seconds=time.time() - start, load_average_start=load_start,
                load_average_end=os.getloadavg()[0], cpu_count=os.cpu_count(), jobs=jobs,
                runs_trained=sum(run.seconds is not None for run in runs))


def write_results(path: str, facts: dict, runs: List[dict], **parts) -> None:
    """Write a study's results file: this invocation's ``facts``, one dict per run in ``runs``
    (``seconds`` None where this invocation did not train it) and any other ``parts``.

    What earlier invocations recorded stays: their facts (``invocations``, oldest first, this
    one last) and the seconds of the runs they trained. A rerun of a finished study, which
    trains nothing, replaced the wall time of the invocation that trained it with its own
    0.1 s, and the classification runs' durations with nulls."""
    earlier = {}
    if osp.isfile(path):
        with open(path) as f:
            earlier = json.load(f)
    invocations = earlier.get('invocations', [earlier['facts']] if 'facts' in earlier else [])
    seconds = {run_identity(run): run.get('seconds') for run in earlier.get('runs', [])}
    for run in runs:
        if run['seconds'] is None:
            run['seconds'] = seconds.get(run_identity(run))
    from fastmim.fileio import AtomicLocalBackend
    AtomicLocalBackend().put_text(
        json.dumps(dict(invocations=invocations + [facts], runs=runs, **parts), indent=2), path)


def run_identity(run: dict) -> tuple:
    """Which run of a study a results entry is: its method, label fraction (the dense study
    has none) and seed."""
    return run['method'], run.get('fraction'), run['seed']


def print_summary(table: str, facts: dict, docs: List[str], no_doc: str,
                  results_path: str) -> None:
    """The table, then what the invocation cost and where the table and the details went."""
    print('\n' + table)
    print(f'\nwall time {facts["total_seconds"] / 60:.1f} min on {facts["cpu_count"]} CPU '
          f'cores (load average {facts["load_average_start"]:.1f} at the start, '
          f'{facts["load_average_end"]:.1f} at the end); ' +
          (f'table written to {", ".join(docs)}' if docs else no_doc) +
          f', details in {results_path}')


def write_doc(path: str, section: str, begin: str = RESULTS_BEGIN,
              end: str = RESULTS_END) -> None:
    """Replace what lies between the markers ``begin`` and ``end`` of ``path`` (or create
    it). The dense-task runner passes its own markers."""
    block = f'{begin}\n{section}\n{end}'
    if not osp.isfile(path):
        with open(path, 'w') as f:
            f.write(block + '\n')
        return
    with open(path) as f:
        text = f.read()
    if begin not in text or end not in text:
        sys.exit(f'error: {path} lacks the markers {begin} ... {end} that say '
                 'where the results go')
    before, rest = text.split(begin, 1)
    after = rest.split(end, 1)[1]
    with open(path, 'w') as f:
        f.write(before + block + after)


def check_work_dir(path: str) -> None:
    """Make the work dir, or refuse one that cannot be written (it lies under a file), in one
    line before the study starts: os.makedirs ended in a NotADirectoryError traceback."""
    from fastmim.errors import LaunchError
    from fastmim.file_checks import check_work_dir as check_writable
    try:
        check_writable(path, '--work-dir')
    except LaunchError as error:
        sys.exit(f'error: {error}')


def check_doc(path: str, begin: str = RESULTS_BEGIN, end: str = RESULTS_END) -> None:
    """Refuse a results document that cannot receive the table before the study runs (tens of
    minutes): :func:`write_doc` found a missing folder or missing markers only at the end."""
    if osp.isdir(path):
        sys.exit(f'error: {path} is a folder; expected the markdown file for the results')
    folder = osp.dirname(osp.abspath(path))
    if not osp.isdir(folder):
        sys.exit(f'error: the folder of {path} does not exist: {folder}')
    if osp.isfile(path):
        with open(path) as f:
            text = f.read()
        if begin not in text or end not in text:
            sys.exit(f'error: {path} lacks the markers {begin} ... {end} that say '
                     'where the results go')


# Argument types: a count or fraction that cannot work is refused while parsing, in one line,
# before any work (--fractions 1.5 would run the pre-training, then fail every run).
def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a whole number') from None


def positive_int(text: str) -> int:
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
    return value


def seed(text: str) -> int:
    value = whole_number(text)
    if not 0 <= value < 2**32:  # numpy's seeds
        raise argparse.ArgumentTypeError(f'a seed must be in [0, 2**32), got {value}')
    return value


def label_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f'a fraction of the labels must be in (0, 1], got {text}')
    if round(value * TRAIN_IMAGES_PER_CLASS) < 1:
        raise argparse.ArgumentTypeError(
            f'{text} keeps no image of a class (of {TRAIN_IMAGES_PER_CLASS:,} per class)')
    return value


def refuse_repeats(parser: argparse.ArgumentParser, option: str, values: list) -> None:
    """Two seeds or fractions that name one run dir (0.1 and 0.10: ``labels0.1``) would be
    trained in twice at once."""
    seen = set()
    for value in values:
        name = f'{value:g}' if isinstance(value, float) else str(value)  # as the run dir does
        if name in seen:
            parser.error(f'{option} names {name} twice')
        seen.add(name)


def default_docs() -> List[str]:
    """Where the table is published."""
    return [osp.join(ROOT, 'docs', 'experiments.md'), osp.join(ROOT, 'README.md')]


def add_doc_options(parser: argparse.ArgumentParser, default: List[str],
                    published: str) -> None:
    """``--doc PATH ...`` and ``--no-doc``, alike in both runners (``--docs``, the dense
    runner's spelling, and ``--no-docs`` are the same options; a bare ``--doc`` writes none)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--doc', '--docs', dest='docs', nargs='*', metavar='PATH',
                       help='markdown files whose result markers receive the table; by '
                       f'default {" and ".join(display(path) for path in default)}, and only '
                       f'for {published} (otherwise the table is only printed and saved in '
                       'the work dir)')
    group.add_argument('--no-doc', '--no-docs', dest='no_doc', action='store_true',
                       help='write the table into no document')


def docs_to_write(args: argparse.Namespace, default: List[str],
                  options: List[Tuple[str, bool]]) -> Tuple[List[str], str]:
    """The documents that receive the table, and what to say when there are none.

    ``options``: ``(the option as typed, whether it differs from the published study)`` for
    each option that sets the study. A study other than the published one writes the default
    document only when ``--doc`` names it: otherwise any run, however small (``--seeds 0
    --fractions 0.01``), would replace the published 3-seed table with a one-column one, under
    prose that quotes it."""
    unpublished = [words for words, differs in options if differs]
    if args.no_doc:
        return [], 'the table was written into no document (--no-doc)'
    if args.docs is not None:
        return args.docs, ('' if args.docs else
                           'the table was written into no document (--doc with no file)')
    if not unpublished:
        return default, ''
    return [], (f'the table was not written into {", ".join(map(display, default))}: '
                f'{" ".join(unpublished)} is not the published study; '
                f'--doc {" ".join(map(display, default))} writes it there')


def display(path: str) -> str:
    """``path`` relative to the current folder when it lies under it."""
    relative = osp.relpath(path)
    return path if relative.startswith('..') else relative


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'fashion_mnist'),
                        help='where the pre-training, the runs and results.json go (default: '
                        '%(default)s); a rerun goes on from what is there')
    parser.add_argument('--seeds', type=seed, nargs='+', default=list(PUBLISHED_SEEDS),
                        help='seeds of the downstream runs, each drawing the labelled subset '
                        'and the run\'s randomness (default: '
                        f'{" ".join(map(str, PUBLISHED_SEEDS))})')
    parser.add_argument('--fractions', type=label_fraction, nargs='+', default=[0.01, 0.1],
                        help='fractions of the training labels, each in (0, 1] (default: '
                        f'{" ".join(map(str, PUBLISHED_FRACTIONS))})')
    parser.add_argument('--jobs', type=positive_int, default=2,
                        help='processes at a time (one thread each); pre-training uses as many')
    add_doc_options(parser, default_docs(), 'the published grid: the default --seeds and '
                    '--fractions')
    parser.add_argument('--fresh', action='store_true',
                        help='delete what the study wrote in the work dir first (its '
                        'pre-training, runs and results.json; nothing else)')
    args = parser.parse_args(argv)
    refuse_repeats(parser, '--seeds', args.seeds)
    refuse_repeats(parser, '--fractions', args.fractions)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.jobs < 1 or PRETRAIN_BATCH % args.jobs:
        sys.exit(f'error: --jobs must divide the pre-training batch {PRETRAIN_BATCH}')
    sys.path.insert(0, ROOT)
    docs, no_doc = docs_to_write(args, default_docs(), [
        (f'--seeds {" ".join(map(str, args.seeds))}', args.seeds != PUBLISHED_SEEDS),
        (f'--fractions {" ".join(f"{value:g}" for value in args.fractions)}',
         args.fractions != PUBLISHED_FRACTIONS)])
    for doc in docs:
        check_doc(doc)
    if no_doc:
        print(no_doc, flush=True)
    check_work_dir(args.work_dir)
    stop_commands_on_signals()
    work_dir = osp.abspath(args.work_dir)
    if args.fresh:
        delete_outputs(work_dir)
    os.makedirs(work_dir, exist_ok=True)
    start, load_start = time.time(), os.getloadavg()[0]

    from fastmim.datasets import fetch_fashion_mnist
    try:
        print(f'Fashion-MNIST: {fetch_fashion_mnist()}', flush=True)
    except RuntimeError as error:
        sys.exit(f'error: {error}')
    initial = save_initial_weights(osp.join(work_dir, 'initial_weights.pth'))
    runs = [Run(method, fraction, seed, osp.join(
                work_dir, method_folder(method), f'labels{fraction:g}_seed{seed}'))
            for seed in args.seeds for fraction in args.fractions for method in METHODS]
    # Before the pre-training (minutes) runs or resumes: a new one would not make them fit.
    found = find_pretraining(osp.join(work_dir, 'pretrain'))
    check_finished_runs(runs, dict(pretrained=found.finished, random=initial),
                        no_pretraining=why_no_pretraining(found))
    pretrained, facts = pretrain(found, args.jobs)
    downstream(runs, dict(pretrained=pretrained, random=initial), args.jobs)

    facts.update(invocation_facts(start, load_start, args.jobs, runs))
    table = results_table(runs, args.fractions, args.seeds)
    results_path = osp.join(work_dir, 'results.json')
    write_results(results_path, facts, [dict(
        method=run.method.name, fraction=run.fraction, seed=run.seed, top1=run.top1,
        seconds=run.seconds, command=run.command) for run in runs])
    for doc in docs:
        write_doc(doc, table)
    print_summary(table, facts, docs, no_doc, results_path)


if __name__ == '__main__':
    report_stops(main)
