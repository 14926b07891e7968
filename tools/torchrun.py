"""torchrun for tools/dist_launch.sh: the same launcher (``torch.distributed.run``), ending in
one line where torchrun ends in its own traceback.

torchrun reports a process that failed by raising ``ChildFailedError`` from its agent: after
the process's own one-line error (``run_cli``) come some 35 lines of the launcher's traceback
and a failure table that also blames the ranks it has stopped. A Ctrl-C (or SIGTERM) that
reaches it raises ``SignalException``: a traceback again, and status 1 where a shell reports
130. A PORT in use by another job is a ``DistNetworkError`` traceback. Here each is one line
and the status a shell expects (``128 + signal`` for a signal); ``FASTMIM_DEBUG=1`` keeps
torchrun's own logging and tracebacks.

    python tools/torchrun.py [torchrun arguments] SCRIPT [script arguments]
"""
import logging
import os
import sys

from torch.distributed import DistNetworkError
from torch.distributed import run as torchrun
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError


# PreemptionHook's status (fastmim.engine.hooks.PREEMPTED_EXIT_STATUS; not imported: this
# launcher loads no fastmim module).
PREEMPTED_EXIT_STATUS = 75
# How this launcher names itself to its processes
# (fastmim.engine.launcher_lifecycle.LAUNCHER_PID_ENV): each asks the kernel for SIGTERM when
# torchrun dies, and one started after it died (torchrun killed while the process started) is
# told by its parent no longer being this process.
LAUNCHER_PID_ENV = 'FASTMIM_LAUNCHER_PID'


def first_failure(failure: ChildFailedError) -> str:
    """How the first process to fail ended: a process killed by a signal printed nothing; a
    preempted one saved the run (its line read like a failure)."""
    rank, first = failure.get_first_failure()
    if first.exitcode == PREEMPTED_EXIT_STATUS:
        return (f'the process of rank {rank} stopped first, preempted (status '
                f'{PREEMPTED_EXIT_STATUS}: the run is saved, --resume continues it)')
    if first.exitcode < 0:
        signal = first.signal_name()
        cause = ' (out of memory, or the job scheduler?)' if signal == 'SIGKILL' else ''
        return (f'the process of rank {rank} was killed by {signal} first, without a message of '
                f'its own{cause}')
    return f'the process of rank {rank} ended first, with status {first.exitcode} (its message ' \
           f'is above)'


# argparse's status for a command-line error, which every process of the job shares.
USAGE_EXIT_STATUS = 2


def job_status(failure: ChildFailedError) -> int:
    """The launcher's status for a job ended by ``failure``: 1, as torchrun's, except for a
    command-line error (status 2, as ``tools/train.py`` alone ends with it)."""
    _, first = failure.get_first_failure()
    return USAGE_EXIT_STATUS if first.exitcode == USAGE_EXIT_STATUS else 1


def rendezvous_failure(args, error: DistNetworkError) -> str:
    """The first node listens on MASTER_ADDR:PORT, the others connect to it: a port in use
    there, a master not (yet) reachable here."""
    reason = str(error).splitlines()[0]
    address = f'{args.master_addr}:{args.master_port}'
    if int(args.node_rank) > 0:
        return (f'node {args.node_rank} could not reach the first node at {address} ({reason}): '
                f'is its job running, and MASTER_ADDR and PORT the same on every node?')
    return (f'torchrun could not listen on {address} ({reason}): another job holds the port? '
            f'Give this one another PORT, or leave PORT unset on a single node')


def main(argv):
    args = torchrun.parse_args(argv)
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())  # the processes inherit it
    if os.environ.get('FASTMIM_DEBUG') == '1':
        return torchrun.run(args)
    # Its W/E lines repeat what the processes said, and name the ranks it stopped as failed.
    logging.getLogger('torch.distributed.elastic').setLevel(logging.CRITICAL)
    script = os.path.basename(args.training_script)
    try:
        return torchrun.run(args)
    except SignalException as stop:
        sys.exit(128 + int(stop.sigval))
    except ChildFailedError as failure:
        print(f'{script}: {first_failure(failure)}; the others were stopped', file=sys.stderr)
        sys.exit(job_status(failure))
    except DistNetworkError as error:
        print(f'{script}: {rendezvous_failure(args, error)}', file=sys.stderr)
        sys.exit(2)


if __name__ == '__main__':
    main(sys.argv[1:])
