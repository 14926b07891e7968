"""tools/early_checks.py: tools/train.py, tools/test.py, print_config.py and get_flops.py refuse a
mistyped config before they import fastmim, mmengine and torch (it took seconds of imports to
print one line)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ('torch', 'mmengine', 'fastmim', 'numpy', 'timm')
MISTYPED = 'configs/fastmim/vit_b_hog_80e.py'
NOT_FOUND = ('error: LaunchError: config file not found: configs/fastmim/vit_b_hog_80e.py (did '
             'you mean configs/fastmim/vit_b_hog_800e.py or configs/fastmim/pvtv2_b2_hog_800e.py?)')


@pytest.fixture(scope='module')
def early_checks(load_script):
    return load_script(ROOT / 'tools' / 'early_checks.py')


def run_tool(tool, args, *python_flags):
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    env.pop('FASTMIM_DEBUG', None)
    return subprocess.run([sys.executable, *python_flags, str(ROOT / 'tools' / tool), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def imported_modules(importtime_report):
    """The modules ``python -X importtime`` reports (``import time: self | total | name``)."""
    return [line.rpartition('|')[2].strip() for line in importtime_report.splitlines()
            if line.startswith('import time:') and '|' in line]


@pytest.mark.parametrize('tool, args', [('train.py', [MISTYPED, '--work-dir', 'w']),
                                        ('test.py', [MISTYPED, 'absent.pth']),
                                        ('misc/print_config.py', [MISTYPED]),
                                        ('analysis/get_flops.py', [MISTYPED])])
def test_a_mistyped_config_is_refused_before_any_heavy_import(tool, args):
    result = run_tool(tool, args, '-X', 'importtime')

    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert [line for line in lines if not line.startswith('import time:')] == [NOT_FOUND]
    imported = imported_modules(result.stderr)
    assert imported and not [name for name in imported if name.partition('.')[0] in HEAVY]


def test_a_checkpoint_given_as_the_config_is_named_before_the_imports(tmp_path):
    checkpoint = tmp_path / 'epoch_1.pth'
    checkpoint.write_bytes(b'')
    result = run_tool('test.py', [str(checkpoint), 'configs/knn/vit_b_knn.py'])
    assert result.returncode == 1
    assert result.stderr == (f'error: LaunchError: config file {checkpoint} is not a '
                             '.py/.json/.yaml/.yml file (a checkpoint given as the config? The '
                             'config comes first)\n')


def test_the_early_line_is_the_line_of_the_check_after_the_imports():
    """With an option first, the config is left to the tool's parser and load_config: the
    same mistake must read the same either way."""
    result = run_tool('train.py', ['--work-dir', 'w', MISTYPED])
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == NOT_FOUND


@pytest.mark.parametrize('argv, config', [
    (['a.py', '--work-dir', 'w'], 'a.py'),
    (['a.py', 'ckpt.pth', '--cfg-options', 'x=1'], 'a.py'),
    (['--work-dir', 'w', 'a.py'], None),  # which argument is the config: the parser's to say
    (['fastmim::fastmim/vit_b_hog_800e.py'], None),  # located through mmengine
    (['a.py', '--help'], None),  # the help wins over a wrong config, as argparse prints it
    (['a.py', '-h'], None),
    (['a.py', '--debug'], None),  # the full check's traceback
    (['a.py', '--launcher', 'pytorch'], None),  # every process would print the line
    (['a.py', '--launcher=slurm'], None),
    (['a.py', '--local-rank=1'], None),
    ([], None),
])
def test_the_config_is_taken_only_where_argparse_would_take_it(early_checks, argv, config,
                                                               monkeypatch):
    monkeypatch.delenv('FASTMIM_DEBUG', raising=False)
    assert early_checks.config_of(argv) == config


def test_fastmim_debug_leaves_the_config_to_the_full_check(early_checks, monkeypatch):
    monkeypatch.setenv('FASTMIM_DEBUG', '1')
    assert early_checks.config_of(['a.py']) is None


def test_an_existing_config_passes(early_checks):
    early_checks.refuse_a_missing_config([str(ROOT / 'configs' / 'knn' / 'vit_b_knn.py')])
