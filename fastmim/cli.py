"""What every command-line tool of the toolbox shares: its arguments, the checks of the files
and folders it writes, and :func:`run_cli`, which ends a user error with one line.

``tools/train.py`` and ``tools/test.py`` share their arguments here (:func:`add_launch_args`),
so they cannot drift; the analysis tools and checkpoint converters take ``--debug``,
``--trust-checkpoint``, the counts and output checks from here without importing the
distributed launcher (:mod:`fastmim.engine.launch`).
"""
import argparse
import os
import os.path as osp
import signal
import sys
import time
import traceback

import torch.distributed as torch_dist
from mmengine.config import DictAction

from fastmim.engine.launcher_env import launched_local_rank
from fastmim.engine.process_group import shutdown_distributed
from fastmim.errors import LaunchError
from fastmim.file_checks import file_in_the_way
from fastmim.fileio import format_size
from fastmim.run_log import log_to_files, rank_log_pattern


INTERRUPTED_EXIT_STATUS = 128 + 2  # what a shell reports for a process that SIGINT ended


class CfgOptionsAction(DictAction):
    """mmengine's ``DictAction`` with the spaces of a single value kept.

    mmengine removes every space of a value before parsing it (so that ``[1, 2]`` parses), so
    ``data_root='/mnt/My Drive/imagenet'`` would become ``/mnt/MyDrive/imagenet`` without a
    word and fail, if at all, naming a folder the user never typed. A value that is no list or
    tuple (no brackets, no comma) keeps its inner spaces; lists and tuples parse as mmengine's.
    An item without ``KEY=`` (``train_cfg.max_epochs 2``, or the config given after the
    options) is an argparse error naming it, not mmengine's unpacking traceback; so is a dict
    inside a list or tuple, on which mmengine's parser recursed to Python's limit.
    """

    def __call__(self, parser, namespace, values, option_string=None):
        for item in values or ():
            key, equals, value = item.partition('=')
            if not (key and equals):
                hint = ' (give the config before --cfg-options)' if item.endswith('.py') else ''
                parser.error(f'argument {option_string}: expected KEY=VALUE, got {item!r}{hint}')
            if self._is_sequence(value) and ('{' in value or 'dict(' in value):
                # mmengine's parser recursed to Python's limit on it (a RecursionError).
                parser.error(f'argument {option_string}: {key}: a dict cannot be given on the '
                             f'command line inside a list or tuple; set its keys one by one '
                             f'({key}.0.type=...), or write a config with _base_ = [CONFIG] '
                             f'that sets it')
        super().__call__(parser, namespace, values, option_string)

    @staticmethod
    def _is_sequence(val):
        text = val.strip().strip('\'"')
        return text.startswith(('(', '[')) or ',' in text

    @classmethod
    def _parse_iterable(cls, val):
        if cls._is_sequence(val):
            return DictAction._parse_iterable(val)
        return DictAction._parse_int_float_bool(val.strip().strip('\'"'))


def add_launch_args(parser, cfg_options_example='train_dataloader.batch_size=64',
                    work_dir_holds='logs, checkpoints and results'):
    """Add the arguments every tool that starts a Runner shares: the config, ``--work-dir``,
    ``--cfg-options``, ``--launcher``, ``--debug`` (which :func:`run_cli` handles; it is added
    here so that ``--help`` lists the flag the README documents) and the hidden
    ``--local_rank``. ``work_dir_holds`` is what ``--help`` says goes in the work dir.

    They are the interface of mmengine's own tools, which ``tools/dist_train.sh`` and
    ``tools/slurm_train.sh`` (and users' scripts) rely on; keeping them in one place keeps
    ``tools/train.py`` and ``tools/test.py`` from drifting apart. The hidden ``--local_rank`` /
    ``--local-rank`` is what ``torch.distributed.launch`` (torchrun's predecessor) appends;
    :func:`parse_launch_args` passes it on as ``LOCAL_RANK``, the variable mmengine reads.
    """
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help=f'where {work_dir_holds} go (default: the '
                        "config's work_dir, else work_dirs/<config name>)")
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                        help=f'override config keys, e.g. {cfg_options_example}')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)
    add_debug_arg(parser)
    return parser


def add_trust_checkpoint_arg(parser, file='CHECKPOINT'):
    """``--trust-checkpoint`` of a tool that reads one checkpoint, named ``file`` in its usage:
    the file is loaded weights-only unless the user vouches for it
    (:func:`fastmim.engine.checkpoint.trust_checkpoint`)."""
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help=f'allow full unpickling of {file} (only for files you trust)')


def add_debug_arg(parser):
    """``--debug``, which :func:`run_cli` reads and removes before the tool parses its
    arguments; declared so that every tool's ``--help`` lists it."""
    parser.add_argument('--debug', action='store_true',
                        help='show the full traceback of every error, not one line '
                        '(also FASTMIM_DEBUG=1)')


def parse_launch_args(parser, argv):
    """Parse ``argv`` with a parser made by :func:`add_launch_args`.

    ``torch.distributed.launch`` gives the local rank as ``--local-rank`` only; mmengine reads
    ``LOCAL_RANK``, so it is exported unless a launcher (torchrun) already set it. On a process
    other than its node's first, an error is raised for :func:`run_cli` to report once per node
    (:func:`_defer_usage_errors`), and ``--help`` prints nothing.
    """
    if launched_local_rank() != 0:
        _defer_usage_errors(parser)
        _leave_the_help_to_the_first_process(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


class UsageError(Exception):
    """A command-line error of a process other than its node's first: raised where argparse
    would print it and exit, so that :func:`run_cli` lets the first process report it
    before (``report`` prints the usage and the message, and exits with argparse's 2)."""

    def __init__(self, report, message):
        super().__init__(message)
        self.report = report


def _defer_usage_errors(parser):
    """Every process of a node parses the same command line, so ``tools/dist_train.sh CONFIG 8
    --bogus`` would print the usage error 8 times. The parser's error report (with what the tool
    added to it) is raised as a :class:`UsageError` instead, for :func:`run_cli` to report once."""
    report = parser.error

    def raise_usage_error(message):
        raise UsageError(report, message)
    parser.error = raise_usage_error


def _leave_the_help_to_the_first_process(parser):
    """``tools/dist_train.sh CONFIG 8 --help`` would print the help 8 times, so on a process
    other than its node's first, ``--help`` ends it (status 0) without printing."""
    def print_nothing(file=None):
        """The node's first process prints the help."""
    parser.print_help = print_nothing


def refuse_empty_work_dir(work_dir):
    """An empty ``--work-dir`` (``--work-dir "$DIR"`` with DIR unset) is refused: taken as not
    given, it would send the run to the default folder, where ``--resume`` continues whatever
    run is there."""
    if work_dir is not None and not work_dir.strip():
        raise LaunchError(f'--work-dir is empty ({work_dir!r}); give a folder, or leave the '
                          f'flag out for the default')


def apply_launch_args(cfg, args):
    """Fold ``--launcher`` and ``--work-dir`` into the config: the work dir on the command line,
    else the config's own, else ``work_dirs/<config name>`` (mmengine's tools' default); an
    empty one is refused (:func:`refuse_empty_work_dir`)."""
    refuse_empty_work_dir(args.work_dir)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])


def check_output_file(path, flag='--out', folders_made=False):
    """Refuse an output path that cannot be written, before the work that produces it: the
    analysis tools and converters write their file last, after minutes of measuring or
    training, and a missing folder or a folder given as the file would then fail only there
    (or, for torch's profiler trace, not at all: it only logs). ``folders_made``: the writer makes
    missing folders (fastmim's atomic writes do), so only a file in the way is refused."""
    folder = osp.dirname(osp.abspath(path))
    blocked = file_in_the_way(folder)
    if blocked:
        raise NotADirectoryError(f'{flag} {path}: {blocked}')
    if not osp.isdir(folder) and not folders_made:
        raise FileNotFoundError(f'{flag} folder does not exist: {folder}')
    if osp.isdir(path):
        raise IsADirectoryError(f'{flag} {path} is a folder; expected a file name')
    if path.endswith(('/', os.sep)):
        raise IsADirectoryError(f'{flag} {path} ends in {path[-1]!r}, so names a folder; '
                                f'expected a file name')


def refuse_overwriting_input(out, source, out_name='OUT', source_name='CHECKPOINT'):
    """A converter reads its input whole, then replaces OUT atomically: an OUT that names the
    input replaced the original with the converted file, which cannot be converted back."""
    if osp.exists(out) and osp.exists(source) and osp.samefile(out, source):
        raise ValueError(f'{out_name} {out} is {source_name} itself: writing it would replace '
                         f'the original; give another {out_name}')


def add_overwrite_arg(parser, what='OUT'):
    """``--overwrite``: the consent :func:`refuse_an_existing_output` asks for."""
    parser.add_argument('--overwrite', action='store_true',
                        help=f'replace an existing {what} (refused without it)')


def refuse_an_existing_output(path, overwrite, flag='OUT', held=None):
    """Refuse a file at ``path`` unless ``--overwrite`` was given, before any work: a
    converter's two positionals in the wrong order (``to_timm.py epoch_8.pth epoch_7.pth``)
    replaced a training checkpoint by the converted file, exit 0. ``flag``: the name the line
    gives ``path`` (None: the path alone); ``held``: what the file holds, where the caller
    knows (else its size, which tells a checkpoint from a converted file). A folder at
    ``path`` is left to the writer's own refusal (:func:`check_output_file`)."""
    if overwrite or not osp.isfile(path):
        return
    name = f'{flag} {path}' if flag else path
    held = f'({format_size(osp.getsize(path))})' if held is None else held
    raise FileExistsError(f'{name} exists {held}: pass --overwrite to replace it')


def positive_int(text):
    """argparse type of a count: 0 or a negative number is refused where it is typed (a 0 would
    be taken as 'not given', a negative number would reach a model as a shape)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be a positive integer, got {text}')
    return value


def non_negative_int(text):
    """argparse type of a count that may be 0 (iterations skipped): a negative number would
    slice a list from its end, or reach a library as a shape, without a word."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'must be 0 or more, got {text}')
    return value


# The largest seed numpy's generator takes (mmengine's set_random_seed seeds numpy with it).
SEED_MAX = 2 ** 32 - 1


def seed_int(text):
    """argparse type of ``--seed``: numpy takes 0 to 2**32 - 1 only, and refused another seed
    with its traceback after the config and model were loaded."""
    value = non_negative_int(text)
    if value > SEED_MAX:
        raise argparse.ArgumentTypeError(f'must be at most {SEED_MAX} (2**32 - 1), got {text}')
    return value


# How long the other processes of a node leave the first one to report an error they share.
FIRST_PROCESS_GRACE_S = 10


def _let_the_first_process_report():
    """Before the process group forms, every process of a node checks the same config and
    files, so a mistake fails on each with the same line (``dist_train.sh CONFIG 8`` would print
    it 8 times), and torchrun stops the rest at the first exit, sometimes before the first
    process has printed. A process other than the node's first therefore waits: torchrun stops it
    once the first has reported, and an error of its own (it is still running) is reported
    after the wait. Once the processes have met, each reports what it hits at once."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return
    if launched_local_rank() != 0:
        time.sleep(FIRST_PROCESS_GRACE_S)


def run_cli(main, argv=None, interrupted_hint=''):
    """Run ``main(argv)``; a user error ends with one line on stderr instead of a traceback.

    User errors are the ones whose message names what to fix: a missing file, a key a
    module does not accept, an unusable checkpoint or launcher, a full or unwritable disk
    (:func:`fastmim.engine.user_errors.is_user_error`); a bug keeps its traceback. A
    command-line error is argparse's usage and status 2, once per node (:class:`UsageError`).
    ``--debug`` (or ``FASTMIM_DEBUG=1``) shows the full traceback of every error. A run
    stopped by a preemption signal after saving (``PreemptionHook``) exits with
    ``PREEMPTED_EXIT_STATUS``; one whose preemption save failed exits with 1 after one line
    naming why and the last good checkpoint (printed by the process it failed in). One
    stopped by Ctrl-C says so in one line, followed by ``interrupted_hint``, or what it returns
    when it is a function (asked at the interrupt: a tool that trains names what ``--resume``
    would continue then, :func:`fastmim.resume_target.interrupted_hint`), and exits with
    ``INTERRUPTED_EXIT_STATUS``, as a shell
    reports a process killed by SIGINT. The process exits after ``main``, so a preemption
    hook keeps its signals to the exit (:func:`early_signals.exit_follows_the_run`); a
    ``main`` called in-process instead leaves the signal handlers as it found them. Signals
    the hook noted after training was complete are named in one line at the end
    (:func:`_report_signals_after_training`).
    """
    from fastmim.engine import early_signals
    from fastmim.engine.hooks import PREEMPTED_EXIT_STATUS, TrainingPreempted
    from fastmim.engine.hooks.preemption_hook import PreemptionSaveFailed
    from fastmim.engine.launcher_lifecycle import record_preemption
    from fastmim.engine.user_errors import is_user_error, user_message
    argv = sys.argv[1:] if argv is None else argv
    debug = '--debug' in argv or os.environ.get('FASTMIM_DEBUG') == '1'
    try:
        with early_signals.exit_follows_the_run():
            return main([arg for arg in argv if arg != '--debug'])
    except UsageError as usage:
        _let_the_first_process_report()
        usage.report(str(usage))
    except TrainingPreempted as stop:
        print(f'preempted: {stop}', file=sys.stderr)
        record_preemption()
        sys.exit(PREEMPTED_EXIT_STATUS)
    except PreemptionSaveFailed as failure:
        if debug:
            raise
        _report_the_stop(f'error: {failure}', printed=failure.own)
        sys.exit(1)
    except KeyboardInterrupt:
        if debug:
            raise
        _report_interruption(interrupted_hint)
    except Exception as error:
        if not debug and _interrupted_inside(error):
            _report_interruption(interrupted_hint)
        if not debug and _a_peer_ended(error):
            time.sleep(FIRST_PROCESS_GRACE_S)  # the launcher stops this process meanwhile
            _report_the_stop(f'error: rank {torch_dist.get_rank()}: another process of the '
                             'job ended during a collective operation (its own message and the '
                             f"launcher's line say why{_where_the_ranks_log()})")
            sys.exit(1)
        if debug or not is_user_error(error, project_errors=(LaunchError,)):
            _log_the_traceback(error)
            raise
        _let_the_first_process_report()
        _report_the_stop(f'error: {user_message(error)}')
        sys.exit(1)
    finally:
        shutdown_distributed()
        _report_signals_after_training(early_signals.take_arrived_late())


def _report_signals_after_training(arrived) -> None:
    """Say in one line that signals came after training was complete (the node's first
    process prints it; the run's log gets it): the last checkpoint was saved, so they ended
    nothing, and the log says why a job cancelled then still exits 0."""
    if not arrived:
        return
    names = ', '.join(dict.fromkeys(signal.Signals(signum).name for signum in arrived))
    line = f'{names} after training was complete: nothing to save'
    if launched_local_rank() == 0:
        print(line, file=sys.stderr)
    log_to_files(line)


# What gloo raises in the processes left when another one of the job has gone (it failed, or
# was killed): the connection to it is closed or reset in the middle of a collective.
PEER_GONE = ('Connection closed by peer', 'Connection reset by peer')


def _a_peer_ended(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing because another process of the job ended.
    Each of the others would print a 50-line traceback of it, below the line of the process
    that failed, and the work dir's log would end without a word of why."""
    if not (torch_dist.is_available() and torch_dist.is_initialized()
            and torch_dist.get_world_size() > 1):
        return False
    return isinstance(error, RuntimeError) and any(text in str(error) for text in PEER_GONE)


def _interrupted_inside(error: BaseException) -> bool:
    """Whether a Ctrl-C is what ``error`` was raised while handling: mmengine formats the
    config at every checkpoint save inside a bare ``except:`` that turns anything into a
    ``SyntaxError`` printing the whole config, a Ctrl-C during the save too."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _report_interruption(interrupted_hint: str) -> None:
    """The Ctrl-C line and status. Ctrl-C reaches every process of a node: the first one
    prints it (otherwise torchrun's processes would print it once each), every one logs it."""
    if callable(interrupted_hint):
        interrupted_hint = interrupted_hint()
    line = 'interrupted (Ctrl-C)' + (f'; {interrupted_hint}' if interrupted_hint else '')
    if launched_local_rank() == 0:
        print(line, file=sys.stderr)
    log_to_files(line)
    sys.exit(INTERRUPTED_EXIT_STATUS)


def _report_the_stop(line: str, printed: bool = True) -> None:
    """Print the line that ends a run (unless ``printed`` is False: another process prints
    it), and append it to the run's log file when one was opened, or on a rank > 0 to its rank
    log beside it: the work dir's log otherwise ends at the last iteration without a word of
    why, and a rank > 0's reason would be only on its console (a node's, after a multi-node
    job)."""
    if printed:
        print(line, file=sys.stderr)
    log_to_files(line, every_rank=True)


def _log_the_traceback(error: BaseException) -> None:
    """Append the traceback of the bug that ends this process (Python prints it next) to the
    run's log, or on a rank > 0 to its rank log, as :func:`_report_the_stop` does a line."""
    log_to_files(''.join(traceback.format_exception(error)).rstrip(), every_rank=True)


def _where_the_ranks_log() -> str:
    """Where the ranks > 0 write the error that ends them, for the line of a process that
    another one's end stopped; nothing outside a run."""
    pattern = rank_log_pattern()
    return f'; a process of rank R > 0 writes its own to {pattern}' if pattern else ''
