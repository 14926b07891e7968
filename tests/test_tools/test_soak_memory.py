"""tools/analysis/soak_memory.py: inputs that cannot work are refused in one line before the
soak (thousands of iterations) starts."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / 'tools' / 'analysis' / 'soak_memory.py'


def run(*args):
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, 'PYTHONPATH': str(ROOT)}, timeout=120)


@pytest.mark.parametrize('args, line', [
    (['{tmp}/absent.py'], 'error: LaunchError: config file not found: {tmp}/absent.py'),
    (['--out', '{tmp}/missing/soak.json'],
     'error: FileNotFoundError: --out folder does not exist: {tmp}/missing'),
    (['--out', '{tmp}'], 'error: IsADirectoryError: --out {tmp} is a folder; expected a file '
     'name')])
def test_bad_inputs_end_in_one_line_before_training(tmp_path, args, line):
    """A missing config was a traceback; an unwritable --out failed after the whole soak."""
    result = run(*(arg.format(tmp=tmp_path) for arg in args), '--iters', '2')
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [line.format(tmp=tmp_path)]
