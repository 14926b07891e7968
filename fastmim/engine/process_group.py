"""The process group of a run without a GPU, and its teardown on any machine.

mmengine's own initialisation calls ``torch.cuda.set_device`` for every launcher: without CUDA
the gloo group is started here, SLURM's and Open MPI's variables first translated into those
of ``env://``. The teardown joins the group's threads before Python finalises.
"""
import datetime
import gc
import os

import torch
import torch.distributed as torch_dist

from fastmim.engine.launcher_env import launched_local_rank
from fastmim.errors import LaunchError


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
