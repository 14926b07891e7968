"""What a launcher (torchrun, srun, mpirun) told this process in its environment, read before
the process group forms: whether the environment it needs is there, and this process's rank and
local rank, which decide which process of a node reports an error or shows warnings."""
import logging
import os

from fastmim.errors import LaunchError
from fastmim.run_log import console_handlers


REQUIRED_ENV = {
    'pytorch': ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'),
    'slurm': ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'),
    'mpi': ('OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_LOCAL_RANK'),
}


def check_launcher_env(launcher):
    """Fail early, naming the missing variables, when a launcher's environment is absent, and
    when a process that torchrun started as one of several is told ``--launcher none``: each
    would then train the whole run alone and they would overwrite each other's checkpoints in
    the same work dir, without a word (``torchrun ... tools/train.py CONFIG`` without the flag)."""
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
    ``--cfg-options`` key, a schedule shorter than its warmup) come before it, once per
    process, so they would show eight times from an 8-GPU ``tools/dist_train.sh``. The log file is the Runner's; it is
    not affected."""
    if launched_rank(launcher) == 0:
        return
    for handler in console_handlers():
        handler.setLevel(max(handler.level, logging.ERROR))


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
