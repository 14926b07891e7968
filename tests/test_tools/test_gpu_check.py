"""tools/analysis/gpu_check.sh on a machine without a GPU: the steps run in order, each is
logged with its exit status, SKIP leaves steps out and BUDGET cuts the later ones."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'tools' / 'analysis' / 'gpu_check.sh'
HEAVY_STEPS = ('detection_swin_b segmentation_vit_b bench_vit_b bench_swin_b '
               'pretrain_jpeg_loader pretrain_nvjpeg_loader bench_vit_b_compile_bf16 '
               'bench_vit_b_compile_ro_bf16 '
               'projection bench_vit_b_bf16 bench_swin_b_bf16 '
               'profile_vit_b train_ddp_amp finetune_amp resume_compile_bf16')


def run_check(tmp_path, **env):
    # WHEELS='': never the offline wheels a developer has made for a GPU machine's Python.
    # OUT: a device run's folder, which sets the defaults of OUT_DIR and ARCHIVE.
    inherited = {key: value for key, value in os.environ.items() if key != 'OUT'}
    environment = {**inherited, 'PYTHON': sys.executable, 'WHEELS': '', **env}
    # tmp_path is OUT_DIR, which a test may leave unmade or put a file in the place of.
    cwd = tmp_path if tmp_path.is_dir() else tmp_path.parent
    return subprocess.run(['bash', str(SCRIPT), str(tmp_path)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_steps_are_logged_and_skipped_ones_say_so(tmp_path):
    result = run_check(tmp_path, SKIP=HEAVY_STEPS)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / 'gpu_check.log').read_text()
    assert '===== environment: exit 0' in log
    assert 'mmengine 0.10.7' in log
    # Without a GPU the CUDA-only tests are collected and skipped, not failed, and mmcv is
    # not rebuilt with CUDA kernels (an hour on this machine).
    assert '===== cuda_tests: exit 0' in log and 'needs a GPU' in log
    assert '===== mmcv_cuda: exit 0' in log and 'no GPU visible: mmcv left as it is' in log
    assert '[build_mmcv]' not in log
    for step in HEAVY_STEPS.split():
        assert f'===== {step}: skipped' in result.stdout


def test_budget_leaves_out_the_steps_it_cannot_fit(tmp_path):
    result = run_check(tmp_path, SKIP=HEAVY_STEPS, BUDGET='40')
    assert result.returncode == 0, result.stderr
    assert '===== environment: no time left' in result.stdout
    assert '===== mmcv_cuda: no time left' in result.stdout
    assert '===== cuda_tests: no time left' in result.stdout


def test_a_broken_environment_stops_before_the_other_steps(tmp_path):
    """Without its imports every step would fail in turn: the script stops, so that the GPU
    machine's time is left for a rerun."""
    python = tmp_path / 'python'
    python.write_text('#!/bin/sh\ncase "$1" in -m) exit 0 ;; *) exit 3 ;; esac\n')
    python.chmod(0o755)
    result = run_check(tmp_path, PYTHON=str(python))
    assert result.returncode == 1
    assert '===== environment: exit 3' in result.stdout
    assert 'mmcv_cuda' not in result.stdout and 'cuda_tests' not in result.stdout


def test_archive_holds_the_results_after_every_step(tmp_path):
    """For a machine that returns only a few files, or stops the script midway."""
    import tarfile
    out, archive = tmp_path / 'out', tmp_path / 'back' / 'gpu_check.tar.gz'
    archive.parent.mkdir()
    out.mkdir()
    result = run_check(out, SKIP=HEAVY_STEPS + ' cuda_tests', ARCHIVE=str(archive))
    assert result.returncode == 0, result.stderr
    with tarfile.open(archive) as packed:
        log = packed.extractfile('./gpu_check.log').read().decode()
    assert '===== mmcv_cuda: exit 0' in log  # the archive of the last step that ran
    assert not (archive.parent / 'gpu_check.tar.gz.partial').exists()


def test_archive_inside_the_results_folder_is_refused(tmp_path):
    result = run_check(tmp_path, SKIP=HEAVY_STEPS, ARCHIVE=str(tmp_path / 'results.tar.gz'))
    assert result.returncode == 2 and 'is inside OUT_DIR' in result.stdout


def test_a_failing_projection_is_reported_as_failed(tmp_path):
    """The step pipes the tool into tee: the tool's status, not tee's, is the step's."""
    (tmp_path / 'vit_b_cuda.json').write_text('{not json')
    others = HEAVY_STEPS.replace('projection', '') + ' environment mmcv_cuda cuda_tests'
    result = run_check(tmp_path, SKIP=others)
    assert result.returncode == 0, result.stderr
    assert '===== projection: exit 1' in result.stdout


def test_a_step_that_ignores_its_time_limit_is_killed(tmp_path):
    """A training run stops on SIGTERM only at its next iteration, and a compiling one can take
    minutes to reach it: 20 s after the SIGTERM the step is killed, so that the device time
    goes to the next steps."""
    python = tmp_path / 'python'
    python.write_text("#!/bin/sh\ntrap '' TERM\nsleep 300\n")
    python.chmod(0o755)
    out = tmp_path / 'out'
    out.mkdir()
    # BUDGET 55: the first step may run 30 to 35 s (20 s are kept for the end, a step gets
    # no less than 30, and the script's start may take some of the 5 s beside them on a
    # loaded machine: with 50 a start past a second boundary left no time), then it is killed.
    result = run_check(out, PYTHON=str(python), BUDGET='55')
    assert '===== environment: exit 137' in result.stdout


def test_a_device_run_packs_its_results_into_out(tmp_path):
    """Where $OUT is set (the folder a device run sends back) the archive goes there."""
    import tarfile
    out, back = tmp_path / 'out', tmp_path / 'back'
    out.mkdir()
    back.mkdir()
    result = run_check(out, SKIP=HEAVY_STEPS + ' cuda_tests', OUT=str(back))
    assert result.returncode == 0, result.stderr
    with tarfile.open(back / 'gpu_check.tar.gz') as packed:
        assert '===== mmcv_cuda: exit 0' in packed.extractfile('./gpu_check.log').read().decode()


@pytest.mark.parametrize('env, message', [
    (dict(TIME_SCALE='1.5'), "TIME_SCALE must be a whole number >= 1 (it multiplies every "
                             "step's limit), got '1.5'"),
    (dict(TIME_SCALE='0'), "TIME_SCALE must be a whole number >= 1"),
    (dict(TIME_SCALE='08'), "TIME_SCALE must be a whole number >= 1"),
    (dict(BUDGET='abc'), "BUDGET must be a whole number of seconds >= 0 (0: no budget), "
                         "got 'abc'"),
    (dict(BUDGET='-5'), "BUDGET must be a whole number of seconds >= 0")])
def test_a_bad_time_setting_stops_the_script_in_one_line(tmp_path, env, message):
    """TIME_SCALE=1.5 was an arithmetic error in every step, each skipped, and the script exited
    0 having run nothing; TIME_SCALE=0 was `timeout 0`, no limit at all; BUDGET=abc was
    ignored. Refused before anything is written."""
    out = tmp_path / 'out'
    result = run_check(out, SKIP=HEAVY_STEPS, **env)
    assert result.returncode == 2
    assert result.stderr.startswith(f'gpu_check.sh: {message}'), result.stderr
    assert result.stderr.count('\n') == 1 and result.stdout == ''
    assert not out.exists()


def test_a_file_in_the_place_of_out_dir_is_named_in_one_line(tmp_path):
    """Every command that writes the log failed in turn (6 lines), the first step too."""
    taken = tmp_path / 'taken'
    taken.write_text('')
    result = run_check(taken, SKIP=HEAVY_STEPS)
    assert result.returncode == 2
    assert result.stderr.startswith('gpu_check.sh: OUT_DIR: ') and str(taken) in result.stderr
    assert result.stderr.count('\n') == 1 and result.stdout == ''
