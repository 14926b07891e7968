"""The process group's gloo threads end before Python finalises (CI saw rank 1 abort at exit).

A gloo group keeps one event-loop thread and two worker threads. When they outlive ``main``,
a worker may release a finished collective's Python-owned tensors during interpreter shutdown
and abort the process. The group stays alive after ``destroy_process_group`` as long as a
DDP model (its reducer holds the group) sits in a reference cycle, which is how a finished
mmengine Runner holds it; ``shutdown_distributed`` must end the threads anyway.

The two ranks are fresh interpreters: a fork of the pytest process is refused by torch once an
earlier test has run autograd in it, and a spawned child cannot import this module by name
(pytest's importlib mode).
"""
import subprocess
import sys

RANK_SCRIPT = '''
import os
import sys

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel

from fastmim.engine.process_group import shutdown_distributed


def thread_count():
    return len(os.listdir('/proc/self/task'))


class Holder:
    """Stands for the Runner: owns the wrapped model and is part of a reference cycle."""

    def __init__(self, model):
        self.model = model
        self.myself = self


rank, init_file, result_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
before = thread_count()
torch_dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                              world_size=2)
holder = Holder(DistributedDataParallel(torch.nn.Linear(4, 2)))
holder.model(torch.randn(3, 4)).sum().backward()
torch_dist.all_reduce(torch.ones(1))
running = thread_count()
del holder  # unreachable now, but not freed: only the garbage collector breaks the cycle
shutdown_distributed()
with open(f'{result_file}.{rank}', 'w') as result:
    result.write(f'{before} {running} {thread_count()} {torch_dist.is_initialized()}')
'''


def test_gloo_threads_end_when_a_runner_in_a_reference_cycle_still_holds_the_group(tmp_path):
    result = str(tmp_path / 'threads')
    ranks = [subprocess.Popen([sys.executable, '-c', RANK_SCRIPT, str(rank),
                               str(tmp_path / 'init'), result],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(2)]
    for rank, process in enumerate(ranks):
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 0, f'rank {rank} exited {process.returncode}:\n{output}'
    for rank in range(2):
        before, running, after, initialized = open(f'{result}.{rank}').read().split()
        assert int(running) > int(before), 'the group started no threads: nothing was tested'
        assert int(after) == int(before), f'rank {rank}: gloo threads still running at exit'
        assert initialized == 'False'
