"""tools/torchrun.py: torchrun's endings in one line each (the training tools' are tested with
dist_train.sh in test_train.py)."""
import os
import subprocess
import sys
from pathlib import Path

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
