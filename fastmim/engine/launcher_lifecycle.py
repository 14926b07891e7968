"""Tying a process's life to the torchrun that started it (``--launcher pytorch``): the kernel
stops it when torchrun dies (``PR_SET_PDEATHSIG``), it refuses to start once torchrun has
ended, and it keeps ``tools/dist_launch.sh`` waiting on (and records in) the script's preemption
record, so that the script can tell a preempted job (status 75) from a crashed one."""
import logging
import os
import signal
import sys

from mmengine.logging import print_log

from fastmim.errors import LaunchError


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


# tools/dist_launch.sh's record of preempted processes (see record_preemption).
PREEMPTED_RECORD_ENV = 'FASTMIM_PREEMPTED_RECORD'
# The record, open and share-locked for as long as this process lives.
_held_record = None


def _keep_the_launch_script_waiting():
    """Hold a shared lock on ``tools/dist_launch.sh``'s preemption record until this process
    ends (the kernel drops it then). With torchrun killed outright the script learns of it at
    once and, without the lock, would exit 137 while the processes, stopped by the kernel's
    SIGTERM, still save: a requeue script would not retry a job that had saved. The script
    takes the lock exclusively after torchrun ends, so it waits for them and exits 75 when
    each recorded its preemption. A process forked from this one (a DataLoader worker) closes its copy: the lock
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


def record_preemption():
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
