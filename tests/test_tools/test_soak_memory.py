"""tools/analysis/soak_memory.py: inputs that cannot work are refused in one line before the
soak (thousands of iterations) starts."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / 'tools' / 'analysis' / 'soak_memory.py'


def run(*args, **env):
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, 'PYTHONPATH': str(ROOT), **env},
                          timeout=120)


@pytest.mark.parametrize('args, line', [
    (['{tmp}/absent.py'], 'error: LaunchError: config file not found: {tmp}/absent.py'),
    (['--out', '{tmp}/a_file/soak.json'],
     'error: NotADirectoryError: --out {tmp}/a_file/soak.json: {tmp}/a_file is a file, not a '
     'folder'),
    (['--every', '0'], 'soak_memory.py: error: argument --every: must be a positive integer, '
     'got 0'),
    (['--out', '{tmp}'], 'error: IsADirectoryError: --out {tmp} is a folder; expected a file '
     'name'),
    # It wrote an empty list file and named that temporary file as the problem.
    (['--list-size', '-1'], 'error: ValueError: --list-size must be 0 or more, got -1'),
    # one sample: the growth was reported as null without a word
    (['--every', '2'], 'soak_memory.py: error: --every 2 leaves one sample in --iters 2: the '
     'growth needs two or more')])
def test_bad_inputs_end_in_one_line_before_training(tmp_path, args, line):
    """A missing config was a traceback; an unwritable --out failed after the whole soak."""
    (tmp_path / 'a_file').write_text('')
    result = run('--iters', '2', '--every', '1', *(arg.format(tmp=tmp_path) for arg in args))
    assert result.returncode in (1, 2)  # 2: argparse refused it
    assert result.stderr.strip().splitlines()[-1] == line.format(tmp=tmp_path)


def test_a_short_soak_reports_and_leaves_no_work_dir_behind(tmp_path):
    """The soak's work dir (log, list file) is scaffolding: it was left in /tmp on every run.
    --out's folder is made (it was refused: '--out folder does not exist')."""
    scratch = tmp_path / 'scratch'
    scratch.mkdir()
    out = tmp_path / 'not made yet' / 'soak.json'
    result = run('--iters', '4', '--every', '2', '--workers', '0', '--list-size', '64',
                 '--out', str(out), TMPDIR=str(scratch))
    assert result.returncode == 0, result.stderr
    assert [sample['iter'] for sample in json.loads(out.read_text())['samples']] == [2, 4]
    assert not list(scratch.glob('soak_*'))


def test_a_config_without_training_is_refused_in_one_line():
    """A k-NN evaluation config ended in 'NoneType' object has no attribute 'num_workers'."""
    config = 'configs/knn/demo_vit_tiny_embedded_knn.py'
    result = run(config, '--iters', '2', '--every', '1')
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f'error: ValueError: {config} has no train_dataloader or train_cfg: the soak trains the '
        'config; give a training config')


class RunnerBuilt(Exception):
    """Raised by the stand-in for Runner.from_cfg: the test only looks at the config."""


def config_the_soak_builds(config, tmp_path, load_script, monkeypatch, edit=lambda cfg: None):
    """The config (``edit``-ed after loading) as the soak hands it to Runner.from_cfg."""
    from mmengine.runner import Runner

    from fastmim.engine.config_loading import load_config
    soak_memory = load_script(TOOL)
    cfg = load_config(str(config))
    edit(cfg)
    built = []

    def from_cfg(cfg):
        built.append(cfg)
        raise RunnerBuilt
    monkeypatch.setattr(Runner, 'from_cfg', from_cfg)
    with pytest.raises(RunnerBuilt):
        soak_memory.soak(cfg, soak_memory.parse_args(['--iters', '30', '--every', '10']),
                         str(tmp_path))
    return built[0]


def test_an_iteration_based_loop_gets_max_iters(tmp_path, load_script, monkeypatch):
    """The segmentation configs' ResumableIterBasedTrainLoop was given max_epochs: 'got an
    unexpected keyword argument' once the runner was built (after 500 lines of log)."""
    from mmengine.config import ConfigDict

    def iteration_based(cfg):
        cfg.train_cfg = ConfigDict(type='fastmim.ResumableIterBasedTrainLoop', max_iters=160000)
    built = config_the_soak_builds(ROOT / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py',
                                   tmp_path, load_script, monkeypatch, iteration_based)
    assert built.train_cfg == dict(type='fastmim.ResumableIterBasedTrainLoop', max_iters=30)


def test_a_soak_does_not_validate(tmp_path, load_script, monkeypatch):
    """A config's validation inside training (the fine-tuning's, every epoch) ran during the
    soak, its loader and buffers counted as training's memory."""
    def validates(cfg):
        assert cfg.val_cfg is not None
    built = config_the_soak_builds(
        ROOT / 'configs' / 'finetune' / 'demo_vit_tiny_embedded_ft.py', tmp_path, load_script,
        monkeypatch, validates)
    assert (built.val_dataloader, built.val_cfg, built.val_evaluator) == (None,) * 3


def test_the_report_is_replaced_atomically(tmp_path, load_script, monkeypatch):
    """Path.write_text emptied an earlier report before writing: a run killed there left half
    a file. Now a temporary file beside it replaces it."""
    soak_memory = load_script(TOOL)
    samples = [dict(iter=i, main=(100., 50. + i), workers=[]) for i in (10, 20, 30, 40)]
    monkeypatch.setattr(soak_memory, 'soak', lambda cfg, args, work_dir: samples)
    replaced = []
    replace = os.replace
    monkeypatch.setattr(os, 'replace', lambda src, dst: (replaced.append((src, dst)),
                                                         replace(src, dst)))

    def exit_(status):
        raise SystemExit(status)
    monkeypatch.setattr(os, '_exit', exit_)
    out = tmp_path / 'soak.json'
    with pytest.raises(SystemExit):
        soak_memory.main(['--iters', '40', '--every', '10', '--out', str(out)])
    ((temporary, target), ) = replaced
    assert (Path(temporary).parent, target) == (tmp_path, str(out))
    assert json.loads(out.read_text())['samples'][-1]['iter'] == 40
