"""tools/setup_env.sh: inputs it cannot use are refused before it creates anything."""
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_python_that_is_not_installed_is_refused_naming_it(tmp_path):
    """PYTHON=python9 (a typo for python3.9 or python3.12) fell back to python3 silently."""
    venv = tmp_path / 'venv'
    result = subprocess.run(['bash', str(ROOT / 'tools' / 'setup_env.sh')], cwd=ROOT,
                            env={**os.environ, 'PYTHON': 'python9', 'FASTMIM_VENV': str(venv)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        '[setup_env] ERROR: PYTHON=python9: no such command; give an installed python '
        '(>= 3.10) or unset PYTHON')
    assert not venv.exists()


def test_no_python_at_all_is_named_without_blaming_pythons_setting(tmp_path):
    """With PYTHON unset and neither python3.11 nor python3 on the PATH the message said
    'PYTHON=python3: no such command ... or unset PYTHON', of a setting the user never made."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'dirname').symlink_to(shutil.which('dirname'))  # the script's only tool
    result = subprocess.run(['/bin/bash', str(ROOT / 'tools' / 'setup_env.sh')], cwd=ROOT,
                            env={'PATH': str(bin_dir), 'HOME': str(tmp_path),
                                 'FASTMIM_VENV': str(tmp_path / 'venv')},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        '[setup_env] ERROR: no python3.11 or python3 found; install Python >= 3.10 or give '
        'PYTHON=...')


def test_a_disk_without_room_for_torch_is_named_before_the_venv_is_made(tmp_path):
    """On a full disk pip failed midway through torch with '[Errno 28] No space left on
    device', leaving a half-made .venv; the space is now asked for first. ``df`` here reports
    what a nearly full disk reports (the figures CI's failed run met: 225 MiB free)."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    fake_df = bin_dir / 'df'
    fake_df.write_text('#!/bin/sh\n'
                       'echo "Filesystem 1024-blocks Used Available Capacity Mounted on"\n'
                       'echo "/dev/vda 264241152 106954752 230400 100% /"\n')
    fake_df.chmod(0o755)
    venv = tmp_path / 'not' / 'yet' / 'venv'
    result = subprocess.run(['bash', str(ROOT / 'tools' / 'setup_env.sh')], cwd=ROOT,
                            env={**os.environ, 'PATH': f'{bin_dir}:{os.environ["PATH"]}',
                                 'FASTMIM_VENV': str(venv)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f'[setup_env] ERROR: installing torch 2.14.1 into {venv} needs '
                              'about 7 GiB free on its disk; 225 MiB are free there')
    assert message.endswith('or give FASTMIM_VENV=<a folder on a larger disk> '
                            '(make demo FASTMIM_VENV=...)')
    assert not (tmp_path / 'not').exists()
