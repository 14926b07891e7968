"""tools/torchrun.py: torchrun's endings in one line each (the training tools' are tested with
dist_train.sh in test_train.py)."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_a_process_killed_by_a_signal_is_named_as_such(tmp_path):
    """A process the kernel kills (out of memory: SIGKILL) prints nothing; the line said 'its
    message is above' and gave status -9."""
    script = tmp_path / 'killed.py'
    script.write_text('import os, signal, time\n'
                      "if os.environ['LOCAL_RANK'] == '1':\n"
                      '    os.kill(os.getpid(), signal.SIGKILL)\n'
                      'time.sleep(60)\n')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env.pop('LOCAL_RANK', None)
    done = subprocess.run([sys.executable, str(ROOT / 'tools' / 'torchrun.py'), '--standalone',
                           '--nproc-per-node', '2', str(script)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith('killed.py: the process of rank 1 was killed by SIGKILL first'), last
    assert 'above' not in last and 'out of memory' in last


def _torchrun_tool():
    spec = importlib.util.spec_from_file_location('torchrun_tool', ROOT / 'tools' / 'torchrun.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('node_rank, expected', [
    ('0', 'torchrun could not listen on node01:29500 (the socket failed): another job holds '
          'the port?'),
    ('1', 'node 1 could not reach the first node at node01:29500 (the socket failed): is its job '
          'running, and MASTER_ADDR and PORT the same on every node?')])
def test_a_failed_rendezvous_names_the_side_that_failed(monkeypatch, capsys, node_rank, expected):
    """Only the first node listens: the port advice was wrong on the others."""
    from torch.distributed import DistNetworkError

    tool = _torchrun_tool()

    def fails(args):
        raise DistNetworkError('the socket failed\nmore detail')

    monkeypatch.setattr(tool.torchrun, 'run', fails)
    with pytest.raises(SystemExit) as stopped:
        tool.main(['--nnodes', '2', '--node-rank', node_rank, '--master-addr', 'node01',
                   '--master-port', '29500', 'train.py'])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith(f'train.py: {expected}')


def test_a_preempted_first_process_is_not_called_a_failure():
    """A signal on one rank stops the job with status 75 from dist_train.sh, but the line read
    'the process of rank 0 ended first, with status 75 (its message is above)', a failure's."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    tool = _torchrun_tool()
    failure = ChildFailedError('train.py', {0: ProcessFailure(local_rank=0, pid=1, exitcode=75,
                                                              error_file='')})
    assert tool.first_failure(failure) == (
        'the process of rank 0 stopped first, preempted (status 75: the run is saved, --resume '
        'continues it)')
    from fastmim.engine.hooks import PREEMPTED_EXIT_STATUS
    assert tool.PREEMPTED_EXIT_STATUS == PREEMPTED_EXIT_STATUS
