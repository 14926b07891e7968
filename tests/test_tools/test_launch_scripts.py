"""The shell launchers refuse a wrong command line in one line, before torchrun or srun starts."""
import os
import subprocess
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / 'tools'


def launch(script, *args, env=None):
    environment = {k: v for k, v in os.environ.items() if k not in ('PORT', 'NNODES')}
    return subprocess.run(['bash', str(TOOLS / script), *args], capture_output=True, text=True,
                          timeout=60, env={**environment, **(env or {})})


@pytest.mark.parametrize('script, args, usage', [
    ('dist_train.sh', ['c.py'], 'CONFIG GPUS'),
    ('dist_test.sh', ['c.py', 'k.pth'], 'CONFIG CHECKPOINT GPUS'),
    ('slurm_train.sh', ['part', 'job'], 'PARTITION JOB_NAME CONFIG WORK_DIR'),
])
def test_missing_arguments_print_the_usage(script, args, usage):
    result = launch(script, *args)
    assert result.returncode == 2
    assert result.stderr.strip() == f'usage: tools/{script} {usage} ' + (
        '[test.py args]' if script == 'dist_test.sh' else '[train.py args]')


@pytest.mark.parametrize('gpus', ['two', '0', '-1', '1.5'])
def test_gpus_must_be_a_whole_number_of_processes(gpus):
    """Named by the script the user ran (it was dist_launch.sh, which dist_train.sh runs)."""
    result = launch('dist_train.sh', 'c.py', gpus)
    assert result.returncode == 2
    assert result.stderr.strip() == ("dist_train.sh: GPUS must be a whole number >= 1, "
                                     f"got '{gpus}'")


@pytest.mark.parametrize('port', ['99999', '65536', '0', 'abc', '080', '1e3'])
@pytest.mark.parametrize('script, args', [('dist_train.sh', ['c.py', '1']),
                                          ('dist_test.sh', ['c.py', 'k.pth', '1'])])
def test_port_must_be_a_port_number(script, args, port):
    """PORT=99999 was torchrun's 20-line traceback, PORT=abc its usage, neither naming PORT."""
    result = launch(script, *args, env={'PORT': port})
    assert result.returncode == 2
    assert result.stderr == f"{script}: PORT must be a whole number from 1 to 65535, got '{port}'\n"


@pytest.mark.parametrize('port', ['1', '29500', '65535'])
def test_a_valid_port_is_let_through(port):
    """To the next check: the config, here missing."""
    result = launch('dist_test.sh', 'c.py', 'k.pth', '1', env={'PORT': port})
    assert result.returncode == 2
    assert result.stderr == "dist_test.sh: config file not found: 'c.py'\n"


@pytest.mark.parametrize('given, seen', [(None, '110'), ('300', '300')])
def test_torchrun_waits_long_enough_for_a_preemption_save(tmp_path, given, seen):
    """torchrun kills the processes it signalled after TORCH_ELASTIC_SHUTDOWN_TIMEOUT, 30 s by
    default: a checkpoint write of 40 s after SIGUSR1 was cut off (no checkpoint, status 138),
    though --signal=USR1@120 leaves 120 s. The launcher sets 110 unless the user set it."""
    python = tmp_path / 'python'  # stands in for torchrun: prints what it was given
    python.write_text('#!/bin/bash\n[ "$1" = -m ] && exit 0\n'
                      'echo "timeout=$TORCH_ELASTIC_SHUTDOWN_TIMEOUT"\n')
    python.chmod(0o755)
    config = TOOLS.parent / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'
    env = {'PYTHON': str(python), 'TORCH_ELASTIC_SHUTDOWN_TIMEOUT': given or ''}
    result = launch('dist_train.sh', str(config), '1', env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f'timeout={seen}'
