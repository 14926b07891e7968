"""What ``tools/train.py`` and ``tools/test.py`` need beyond mmengine's Runner.

mmengine assumes a GPU when it launches distributed work: it calls ``torch.cuda.set_device``,
passes ``device_ids=[LOCAL_RANK]`` to DDP and keeps SyncBN layers. These helpers adapt a config
so that the same command runs on a laptop (gloo processes on the CPU) and on a GPU node, and turn
the usual set-up mistakes into one clear line. The two tools' shared command-line arguments and
start-up (checks, device adaptation, building the Runner) live here too, so they cannot drift.
"""
import argparse
import datetime
import errno
import gc
import logging
import os
import os.path as osp
import signal
import sys
import tempfile
import time
import traceback

import torch
import torch.distributed as torch_dist
from mmengine.config import DictAction
from mmengine.logging import print_log

from fastmim.errors import CheckpointError, LaunchError
from fastmim.run_log import console_handlers, log_to_files, rank_log_pattern


REQUIRED_ENV = {
    'pytorch': ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'),
    'slurm': ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'),
    'mpi': ('OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_LOCAL_RANK'),
}
INTERRUPTED_EXIT_STATUS = 128 + 2  # what a shell reports for a process that SIGINT ended


def check_launcher_env(launcher):
    """Fail early, naming the missing variables, when a launcher's environment is absent, and
    when a process that torchrun started as one of several is told ``--launcher none``: each
    then trained the whole run alone and they overwrote each other's checkpoints in the same
    work dir, without a word (``torchrun ... tools/train.py CONFIG`` without the flag)."""
    if launcher == 'none':
        world_size = os.environ.get('WORLD_SIZE', '1')
        if 'RANK' in os.environ and world_size.isdigit() and int(world_size) > 1:
            raise LaunchError(f'this process is rank {os.environ["RANK"]} of WORLD_SIZE='
                              f'{world_size} (torchrun), but --launcher is none: each process '
                              f'would train alone into the same work dir; add --launcher '
                              f'pytorch (tools/dist_train.sh adds it)')
        return
    missing = [name for name in REQUIRED_ENV[launcher] if name not in os.environ]
    if missing:
        hint = {'pytorch': 'start it with tools/dist_train.sh (torchrun)',
                'slurm': 'start it with tools/slurm_train.sh (srun)',
                'mpi': 'start it with mpirun'}[launcher]
        raise LaunchError(f'--launcher {launcher} needs the environment variables '
                          f'{", ".join(missing)}: {hint}')


def console_errors_only_beyond_rank_zero(launcher):
    """On every process but the first, show only errors on the console from now on, as
    mmengine's Runner logger does once it is built: the warnings of the config checks (an added
    ``--cfg-options`` key, a schedule shorter than its warmup) came before it, once per process,
    so eight times from an 8-GPU ``tools/dist_train.sh``. The log file is the Runner's; it is
    not affected."""
    if launched_rank(launcher) == 0:
        return
    for handler in console_handlers():
        handler.setLevel(max(handler.level, logging.ERROR))


# tools/torchrun.py names itself here to the processes it starts (torchrun names no parent).
LAUNCHER_PID_ENV = 'FASTMIM_LAUNCHER_PID'
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# The launcher this process stops with, once stop_with_the_launcher has asked the kernel.
_launcher_pid = None


def stop_with_the_launcher(launcher):
    """Have the kernel send this process SIGTERM when torchrun, which started it, dies.

    torchrun killed outright (``kill -9``, the out-of-memory killer) cannot stop its processes:
    they trained on unwatched, and the next job's processes collided with them in the work
    dir. With the signal, ``PreemptionHook`` saves and stops them as for a cluster's SIGTERM.
    The kernel sends it when the *thread* that started the process ends: torchrun starts its
    processes with ``subprocess.Popen`` from its main thread, which lives as long as torchrun.
    A launcher that died before this call is caught by the process's parent being another
    process now (tools/torchrun.py names itself in ``FASTMIM_LAUNCHER_PID``; started by another
    torchrun, the parent of this moment is taken as the launcher). Only for ``--launcher
    pytorch``, on Linux (``prctl``); a no-op elsewhere."""
    global _launcher_pid
    if launcher != 'pytorch' or not sys.platform.startswith('linux'):
        return
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        print_log(f'could not ask to be stopped with the launcher (prctl: '
                  f'{os.strerror(ctypes.get_errno())}): if torchrun is killed, this process '
                  f'runs on', logger='current', level=logging.WARNING)
        return
    _launcher_pid = int(os.environ.get(LAUNCHER_PID_ENV) or os.getppid())
    check_launcher_running()
    _keep_the_launch_script_waiting()


# tools/dist_launch.sh's record of preempted processes (see _record_preemption).
PREEMPTED_RECORD_ENV = 'FASTMIM_PREEMPTED_RECORD'
# The record, open and share-locked for as long as this process lives.
_held_record = None


def _keep_the_launch_script_waiting():
    """Hold a shared lock on ``tools/dist_launch.sh``'s preemption record until this process
    ends (the kernel drops it then). With torchrun killed outright the script learnt of it at
    once and exited 137 while the processes, stopped by the kernel's SIGTERM, still saved:
    a requeue script did not retry a job that had saved. The script now takes the lock
    exclusively after torchrun ends, so it waits for them and exits 75 when each recorded its
    preemption. A process forked from this one (a DataLoader worker) closes its copy: the lock
    is this process's only."""
    global _held_record
    path = os.environ.get(PREEMPTED_RECORD_ENV)
    if not path or _held_record is not None:
        return
    import fcntl
    try:  # not there: the script has ended (removed it), so nobody waits
        _held_record = os.open(path, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        return
    fcntl.flock(_held_record, fcntl.LOCK_SH)
    os.register_at_fork(after_in_child=_close_held_record_in_child)


def _close_held_record_in_child():
    global _held_record
    if _held_record is not None:
        os.close(_held_record)
        _held_record = None


def check_launcher_running():
    """Refuse to go on when the launcher this process stops with has already ended: the job it
    belonged to is gone, and joining its process group would wait for torchrun's store until
    the group's timeout (30 minutes by default)."""
    if _launcher_pid is not None and os.getppid() != _launcher_pid:
        raise LaunchError(f'torchrun (process {_launcher_pid}), which started this process, '
                          f'has ended: nothing was trained; start the job again')


def check_work_dir(work_dir, name='work dir'):
    """Create ``work_dir`` if needed and prove it is writable, before anything runs.

    ``name`` is how the user gave the folder (``'--out-dir'``) for the error line."""
    try:
        os.makedirs(work_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=work_dir, prefix='.write_test'):
            pass
    except OSError as error:
        raise LaunchError(f'{name} {osp.abspath(work_dir)} is not writable: '
                          f'{_why_not_a_folder(work_dir, error)}') from None


def _why_not_a_folder(path, error):
    """A path under a file (or a file itself) fails with 'File exists' or 'Not a directory';
    the file that is in the way says more."""
    if error.errno in (errno.EEXIST, errno.ENOTDIR):
        existing = osp.abspath(path)
        while not osp.exists(existing):
            existing = osp.dirname(existing)
        if not osp.isdir(existing):
            return f'{existing} is a file, not a folder'
    return error.strerror


def replace_sync_bn(cfg_node):
    """Replace every ``SyncBN`` norm config by ``BN`` in place; return how many were replaced.

    SyncBN only works on CUDA tensors, so a CPU (gloo) run of a detection or segmentation config
    that uses it needs plain BatchNorm.
    """
    replaced = 0
    if isinstance(cfg_node, dict):
        if cfg_node.get('type') in ('SyncBN', 'MMSyncBN'):
            cfg_node['type'] = 'BN'
            replaced += 1
        for value in cfg_node.values():
            replaced += replace_sync_bn(value)
    elif isinstance(cfg_node, (list, tuple)):
        for value in cfg_node:
            replaced += replace_sync_bn(value)
    return replaced


def unpin_dataloaders(cfg):
    """Set ``pin_memory=False`` in every dataloader of ``cfg`` (``train_dataloader``,
    ``val_dataloader``, ``test_dataloader``, and those a loop config holds, such as the kNN
    loop's ``bank_dataloader``).

    Page-locked memory only speeds a copy to an accelerator: without one, torch warns
    "'pin_memory' argument is set as true but no accelerator is found" for every dataloader
    the published recipes (which pin, for the GPU) build."""
    loops = [cfg.get(loop) for loop in ('train_cfg', 'val_cfg', 'test_cfg')]
    for holder in [cfg._cfg_dict] + loops:
        if not isinstance(holder, dict):
            continue
        for key, loader in holder.items():
            if key.endswith('_dataloader') and isinstance(loader, dict) \
                    and loader.get('pin_memory'):
                loader['pin_memory'] = False


def adapt_to_device(cfg):
    """Adapt a config in place to a machine without CUDA: gloo, no DDP device ids, no SyncBN,
    bf16 autocast instead of fp16 AMP (fp32 for mmdet, whose CPU ops take fp32 only), no
    pinned memory in the dataloaders."""
    if torch.cuda.is_available():
        return
    unpin_dataloaders(cfg)
    from fastmim.engine.fsdp import is_fsdp_strategy
    from fastmim.engine.optim_wrappers import mixed_precision_of
    env_cfg = cfg.setdefault('env_cfg', {})
    env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper_cfg = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper_cfg['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper_cfg
    optim_wrapper = cfg.get('optim_wrapper')
    precision = mixed_precision_of(optim_wrapper.get('type') if optim_wrapper else None)
    if cfg.get('default_scope') == 'mmdet' and precision:
        # mmcv's CPU kernels of NMS and RoIAlign refuse bf16 ("expected scalar type Float but
        # found BFloat16" in the RPN's NMS at the first iteration).
        optim_wrapper.type = 'fastmim.GuardedOptimWrapper'  # keeps the non-finite loss guard
        optim_wrapper.pop('loss_scale', None)
        optim_wrapper.pop('dtype', None)
        print_log('no CUDA device: mmdet configs train in fp32 on the CPU (mmcv\'s CPU NMS and '
                  'RoIAlign take fp32 only); mixed precision left out', logger='current')
    elif precision == 'loss_scaling':
        # mmengine's AmpOptimWrapper refuses to run without an accelerator; bf16 autocast is
        # the CPU's mixed precision and needs no loss scaling. Scoped: mmdet and mmseg configs
        # (another default scope) must find it too.
        optim_wrapper.type = 'fastmim.AutocastOptimWrapper'
        optim_wrapper.pop('loss_scale', None)
        optim_wrapper.dtype = 'bfloat16'
        print_log('no CUDA device: mixed precision runs as bf16 autocast on the CPU',
                  logger='current')
    if is_fsdp_strategy(cfg.get('strategy')):
        # FSDP1 looks for an accelerator unless told the device ('FSDP needs a non-CPU
        # accelerator device'); mmengine's FSDPStrategy would pass LOCAL_RANK, a CUDA index.
        cfg.strategy.model_wrapper = {**(cfg.strategy.get('model_wrapper') or {}),
                                      'device_id': 'cpu'}
        if cfg.strategy.get('state_dict_cfg') == 'full':
            # mmengine's 'full' offloads the gathered state to the CPU with ``.cpu()``, which
            # on the CPU copies nothing: each optimiser state of a parameter was a view of
            # torch's one gather buffer, so a checkpoint held exp_avg_sq as exp_avg too, and
            # a resumed run went on with the wrong momentum. Without offloading torch clones.
            cfg.strategy.state_dict_cfg = dict(
                state_dict_type='FULL_STATE_DICT',
                state_dict_config=dict(type='FullStateDictConfig', rank0_only=True,
                                       offload_to_cpu=False),
                optim_state_dict_config=dict(type='FullOptimStateDictConfig', rank0_only=True,
                                             offload_to_cpu=False))
    if cfg.get('sync_bn'):
        cfg.sync_bn = None
    replaced = replace_sync_bn(cfg._cfg_dict)
    if replaced and cfg.get('launcher', 'none') != 'none':
        print_log(f'no CUDA device: replaced {replaced} SyncBN layer config(s) by BN',
                  logger='current')


def init_cpu_distributed(launcher, dist_cfg=None):
    """Start the gloo process group ourselves when there is no GPU.

    mmengine's own initialisation calls ``torch.cuda.set_device`` for every launcher, which
    fails on CPU-only machines ('Found no NVIDIA driver', a traceback, for ``--launcher slurm``
    and ``mpi``); once the group exists, the Runner skips its initialisation and uses this one.
    SLURM's and Open MPI's variables are first translated into those of ``env://``, as
    mmengine does.
    """
    if launcher == 'none' or torch.cuda.is_available() or torch_dist.is_initialized():
        return
    kwargs = dict(dist_cfg or {})
    kwargs.pop('backend', None)
    port = kwargs.pop('port', None)
    if launcher in ('slurm', 'mpi'):
        _export_env_of(launcher, port)
    timeout = kwargs.pop('timeout', None)
    if timeout is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    torch_dist.init_process_group(backend='gloo', **kwargs)


# The variable each launcher gives a process's global rank in ('none': rank 0), and its index
# on its node in ('none' and 'pytorch': LOCAL_RANK), read before the process group forms.
RANK_ENV = {'pytorch': 'RANK', 'slurm': 'SLURM_PROCID', 'mpi': 'OMPI_COMM_WORLD_RANK'}
LOCAL_RANK_ENV = {'slurm': 'SLURM_LOCALID', 'mpi': 'OMPI_COMM_WORLD_LOCAL_RANK'}


def launched_rank(launcher) -> int:
    """This process's global rank as ``launcher`` set it; 0 for ``'none'`` or without one."""
    return _index_from_env((RANK_ENV[launcher], ) if launcher in RANK_ENV else ())


def launched_local_rank(launcher=None) -> int:
    """This process's index on its node as ``launcher`` set it; with ``launcher`` None (not
    parsed yet), as whichever launcher set one; 0 without any."""
    return _index_from_env(('LOCAL_RANK', *LOCAL_RANK_ENV.values()) if launcher is None else
                           (LOCAL_RANK_ENV.get(launcher, 'LOCAL_RANK'), ))


def _index_from_env(names) -> int:
    """The whole number in the first of the environment variables ``names`` that is set; 0
    where none is, or it holds no whole number."""
    value = next((os.environ[name] for name in names if name in os.environ), '0').strip()
    return int(value) if value.isdigit() else 0


def _export_env_of(launcher, port=None):
    """Set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT from a SLURM or Open MPI
    launch (``--launcher slurm`` / ``mpi``). The port is ``env_cfg.dist_cfg.port``, else
    MASTER_PORT, else 29500; the address MASTER_ADDR, else (SLURM) the job's first node."""
    if launcher == 'slurm':
        rank, world_size = os.environ['SLURM_PROCID'], os.environ['SLURM_NTASKS']
        if 'MASTER_ADDR' not in os.environ:
            os.environ['MASTER_ADDR'] = _first_slurm_host(os.environ['SLURM_NODELIST'])
    else:
        rank, world_size = os.environ['OMPI_COMM_WORLD_RANK'], os.environ['OMPI_COMM_WORLD_SIZE']
        if 'MASTER_ADDR' not in os.environ:
            raise LaunchError('--launcher mpi needs MASTER_ADDR, the address of the rank-0 '
                              'host, in the environment (mpirun -x MASTER_ADDR=...)')
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', '29500')
    os.environ.update(RANK=rank, WORLD_SIZE=world_size,
                      LOCAL_RANK=str(launched_local_rank(launcher)))


def _first_slurm_host(node_list):
    """The first host of a SLURM node list (``node[01-04]`` -> ``node01``), from scontrol."""
    import subprocess
    try:
        hosts = subprocess.run(['scontrol', 'show', 'hostnames', node_list], check=True,
                               capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as error:
        raise LaunchError(f'--launcher slurm: could not expand SLURM_NODELIST={node_list} '
                          f'with scontrol ({error}); set MASTER_ADDR to the rank-0 host') from None
    if not hosts:
        raise LaunchError(f'--launcher slurm: scontrol names no host in SLURM_NODELIST='
                          f'{node_list}; set MASTER_ADDR to the rank-0 host')
    return hosts[0]


def shutdown_distributed():
    """Tear the process group down, its worker threads included, before Python finalises.

    ``destroy_process_group`` only unregisters a group that something still references, and
    the finished Runner does: DDP's reducer holds the group, and the Runner lives in reference
    cycles that only the garbage collector frees. The group's gloo worker threads then outlive
    ``main`` and may drop their last reference to a finished collective (holding tensors owned
    by Python) while the interpreter shuts down; taking the GIL then ends the thread and the
    process with "terminate called without an active exception" (SIGABRT), at random, on a
    run that had succeeded. Collecting the cycles first lets the group's destructor join its
    threads while the interpreter is alive.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        gc.collect()
        torch_dist.destroy_process_group()


class CfgOptionsAction(DictAction):
    """mmengine's ``DictAction`` with the spaces of a single value kept.

    mmengine removes every space of a value before parsing it (so that ``[1, 2]`` parses), so
    ``data_root='/mnt/My Drive/imagenet'`` became ``/mnt/MyDrive/imagenet`` without a word and
    failed, if at all, naming a folder the user never typed. A value that is no list or tuple
    (no brackets, no comma) now keeps its inner spaces; lists and tuples parse as mmengine's.
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


def add_launch_args(parser, cfg_options_example='train_dataloader.batch_size=64'):
    """Add the arguments every tool that starts a Runner shares: the config, ``--work-dir``,
    ``--cfg-options``, ``--launcher``, ``--debug`` (which :func:`run_cli` handles; without it
    here, ``--help`` did not list the flag the README documents) and the hidden
    ``--local_rank``.

    They are the interface of mmengine's own tools, which ``tools/dist_train.sh`` and
    ``tools/slurm_train.sh`` (and users' scripts) rely on; keeping them in one place keeps
    ``tools/train.py`` and ``tools/test.py`` from drifting apart. The hidden ``--local_rank`` /
    ``--local-rank`` is what ``torch.distributed.launch`` (torchrun's predecessor) appends;
    :func:`parse_launch_args` passes it on as ``LOCAL_RANK``, the variable mmengine reads.
    """
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs, checkpoints and results go (default: '
                        "the config's work_dir, else work_dirs/<config name>)")
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
    """Every process of a node parses the same command line: ``tools/dist_train.sh CONFIG 8
    --bogus`` printed the usage error 8 times. The parser's error report (with what the tool
    added to it) is now raised as a :class:`UsageError`, for :func:`run_cli` to report once."""
    report = parser.error

    def raise_usage_error(message):
        raise UsageError(report, message)
    parser.error = raise_usage_error


def _leave_the_help_to_the_first_process(parser):
    """``tools/dist_train.sh CONFIG 8 --help`` printed the help 8 times: on a process other
    than its node's first, ``--help`` ends it (status 0) without printing."""
    def print_nothing(file=None):
        """The node's first process prints the help."""
    parser.print_help = print_nothing


def refuse_empty_work_dir(work_dir):
    """An empty ``--work-dir`` (``--work-dir "$DIR"`` with DIR unset) is refused: it was taken
    as not given, and the run went to the default folder, where ``--resume`` continues whatever
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


def build_runner(cfg, splits, trusted_checkpoints=()):
    """Check what the run needs, adapt the config to this machine and build its Runner.

    ``cfg`` is the prepared config (command-line flags folded in); ``splits`` are the dataset
    splits the run reads (``'train'``, ``'val'``, ``'test'``); ``trusted_checkpoints`` the
    files the user allowed to unpickle fully (``--trust-checkpoint``). The checks run before
    the Runner is built because building it already builds the model, writes the work dir's
    log and joins the process group: a missing dataset, an unwritable work dir or mmcv
    without kernels for the GPU then ends in one line, not after the start-up and on every
    rank; so does a checkpoint the run starts from that is not there. A config that names
    its ``runner_type`` (e.g. mmengine's FlexibleRunner) is built through the registry, as
    mmengine's tools do.
    """
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from fastmim.engine.checkpoint import check_start_checkpoints, trust_checkpoint
    from fastmim.engine.dataset_paths import check_dataset_paths
    from fastmim.engine.fsdp import check_fsdp, scale_losses_across_shards
    from fastmim.engine.mmcv_ops import check_mmcv_cuda_ops

    check_mmcv_cuda_ops(cfg)
    check_dataset_paths(cfg, splits)
    check_start_checkpoints(cfg, training='train' in splits)
    check_work_dir(cfg.work_dir)
    for path in trusted_checkpoints:
        trust_checkpoint(path)
    check_fsdp(cfg)
    adapt_to_device(cfg)
    scale_losses_across_shards(cfg)
    check_launcher_running()  # last, before the process joins the group
    init_cpu_distributed(cfg.launcher, cfg.get('env_cfg', {}).get('dist_cfg'))
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)


def check_output_file(path, flag='--out', folders_made=False):
    """Refuse an output path that cannot be written, before the work that produces it: the
    analysis tools and converters write their file last, after minutes of measuring or
    training, and a missing folder or a folder given as the file then failed only there (or,
    for torch's profiler trace, not at all: it only logs). ``folders_made``: the writer makes
    missing folders (fastmim's atomic writes do), so only a file in the way is refused."""
    from fastmim.engine.checkpoint import file_in_the_way
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


def positive_int(text):
    """argparse type of a count: 0 or a negative number is refused where it is typed (a 0 was
    taken as 'not given', a negative number reached a model as a shape)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be a positive integer, got {text}')
    return value


# How long the other processes of a node leave the first one to report an error they share.
FIRST_PROCESS_GRACE_S = 10


def _let_the_first_process_report():
    """Before the process group forms, every process of a node checks the same config and
    files, so a mistake failed on each with the same line (``dist_train.sh CONFIG 8`` printed
    it 8 times), and torchrun stopped the rest at the first exit, sometimes before the first
    process had printed. A process other than the node's first now waits: torchrun stops it
    once the first has reported, and an error of its own (it is still running) is reported
    after the wait. Once the processes have met, each reports what it hits at once."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return
    if launched_local_rank() != 0:
        time.sleep(FIRST_PROCESS_GRACE_S)


def latest_checkpoint(work_dir, use='resuming from'):
    """The checkpoint ``work_dir/last_checkpoint`` names, or None. It holds an absolute path,
    so in a work dir that was moved or copied (to other storage, to branch a run) it named the
    old place: ``--resume`` failed with 'checkpoint not found' there, or resumed from the other
    run's newest checkpoint. A file of that name in ``work_dir`` is taken instead, logged
    with ``use`` (what the caller does with it)."""
    from mmengine.runner import find_latest_checkpoint

    recorded = find_latest_checkpoint(work_dir)
    if recorded is None:
        return None
    if not recorded:  # a last_checkpoint emptied outside the toolbox (its own writes are atomic)
        from fastmim.engine.checkpoint import checkpoints_in
        raise CheckpointError(f'{osp.join(work_dir, "last_checkpoint")} is empty: it names no '
                              f'checkpoint to resume from or test; give one by its path'
                              f'{checkpoints_in(work_dir)}')
    here = osp.join(work_dir, osp.basename(recorded))
    if osp.isfile(here) and not (osp.exists(recorded) and osp.samefile(recorded, here)):
        print_log(f'{osp.join(work_dir, "last_checkpoint")} names {recorded}, outside the work '
                  f'dir (moved or copied): {use} {here}', logger='current')
        return here
    return recorded


def checkpoint_named_by(path, use):
    """``path``, or the checkpoint it names when it is a work dir's ``last_checkpoint``
    (:func:`latest_checkpoint`): mmengine's text file naming the newest checkpoint, given as
    a checkpoint (``tools/test.py``'s CHECKPOINT, ``--resume``), was refused as 'not a readable
    checkpoint (truncated or corrupt?)'. An empty one is left to that refusal."""
    if osp.basename(path) != 'last_checkpoint' or not osp.isfile(path):
        return path
    named = latest_checkpoint(osp.dirname(path), use)
    if named is None:
        return path
    print_log(f'{path} names {named}: {use} it', logger='current')
    return named


# What run_cli's Ctrl-C line adds for a tool that trains.
RESUME_HINT = ('--resume continues from the last checkpoint it saved (from the start when it '
               'saved none yet)')


def _record_preemption():
    """Add this process's local rank to the file ``tools/dist_launch.sh`` names in
    ``FASTMIM_PREEMPTED_RECORD``: torchrun reports any process's non-zero status as its own
    status 1, so the script exits with ``PREEMPTED_EXIT_STATUS`` itself when every process it
    started recorded a preemption, and a requeue script can tell a preempted job from a
    crashed one."""
    path = os.environ.get(PREEMPTED_RECORD_ENV)
    if not path:
        return
    try:  # not created: a script that has already ended (torchrun killed) removed it
        record = os.open(path, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        return
    with os.fdopen(record, 'w') as record:  # one short append per process
        record.write(f'{os.environ.get("LOCAL_RANK", "0")}\n')


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
    stopped by Ctrl-C says so in one line, followed by ``interrupted_hint`` (a tool that
    trains: :data:`RESUME_HINT`), and exits with ``INTERRUPTED_EXIT_STATUS``, as a shell
    reports a process killed by SIGINT. The process exits after ``main``, so a preemption
    hook keeps its signals to the exit (:func:`early_signals.exit_follows_the_run`); a
    ``main`` called in-process instead leaves the signal handlers as it found them.
    """
    from fastmim.engine import early_signals
    from fastmim.engine.hooks import PREEMPTED_EXIT_STATUS, TrainingPreempted
    from fastmim.engine.hooks.preemption_hook import PreemptionSaveFailed
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
        _record_preemption()
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


# What gloo raises in the processes left when another one of the job has gone (it failed, or
# was killed): the connection to it is closed or reset in the middle of a collective.
PEER_GONE = ('Connection closed by peer', 'Connection reset by peer')


def _a_peer_ended(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing because another process of the job ended.
    Each of the others printed a 50-line traceback of it, below the line of the process that
    failed, and the work dir's log ended without a word of why."""
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
    prints it (torchrun's processes printed it once each), every one logs it."""
    line = 'interrupted (Ctrl-C)' + (f'; {interrupted_hint}' if interrupted_hint else '')
    if launched_local_rank() == 0:
        print(line, file=sys.stderr)
    log_to_files(line)
    sys.exit(INTERRUPTED_EXIT_STATUS)


def _report_the_stop(line: str, printed: bool = True) -> None:
    """Print the line that ends a run (unless ``printed`` is False: another process prints
    it), and append it to the run's log file when one was opened, or on a rank > 0 to its rank
    log beside it: the work dir's log otherwise ends at the last iteration without a word of
    why, and a rank > 0's reason was only on its console (a node's, after a multi-node job)."""
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
