"""tools/analysis/analyze_logs.py: curves and iteration times read from mmengine's
vis_data/scalars.json, of hand-written logs (a resumed run, validation records) and of a real
short training run."""
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastmim.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def analyze_logs(load_script):
    return load_script(ROOT / 'tools' / 'analysis' / 'analyze_logs.py')


def write_run(work_dir, timestamp, records):
    folder = Path(work_dir) / timestamp / 'vis_data'
    folder.mkdir(parents=True)
    (folder / 'scalars.json').write_text(''.join(json.dumps(r) + '\n' for r in records))


def train_record(iteration, epoch, loss, time):
    return dict(lr=1e-3 * iteration, loss=loss, time=time, data_time=0.01, epoch=epoch,
                iter=iteration, step=iteration)


# A run of 2 epochs of 4 iterations, killed at iteration 6 after saving epoch 1's checkpoint,
# then resumed from it: iterations 5 and 6 are logged twice, the resumed run's count.
FIRST = [train_record(i, 1 + (i - 1) // 4, 1.0 / i, 0.5 + i / 10) for i in range(1, 5)] + [
    {'accuracy/top1': 40.0, 'time': 9.0, 'data_time': 1.0, 'step': 1}] + [
    train_record(i, 2, 9.0, 9.0) for i in (5, 6)]
RESUMED = [train_record(i, 2, 0.1 / i, 0.2 + i / 100) for i in range(5, 9)] + [
    {'accuracy/top1': 60.0, 'time': 9.0, 'data_time': 1.0, 'step': 2}]


@pytest.fixture
def resumed_work_dir(tmp_path):
    write_run(tmp_path, '20261206_100000', FIRST)
    write_run(tmp_path, '20261206_110000', RESUMED)
    return tmp_path


def test_a_resumed_run_is_one_curve(analyze_logs, resumed_work_dir, tmp_path, capsys):
    out = tmp_path / 'curves.png'
    figure = analyze_logs.main(['plot_curve', str(resumed_work_dir), '--keys', 'loss', 'lr',
                                'accuracy/top1', '--out', str(out)])
    assert out.is_file() and out.stat().st_size > 0
    assert '2 runs joined in this order: 20261206_100000, 20261206_110000' in \
        capsys.readouterr().err
    loss, lr, top1 = (axis.lines[0].get_xydata().tolist() for axis in figure.axes)
    kept = FIRST[:4] + RESUMED[:4]  # the first run's 5 and 6 replaced by the resumed run's
    assert loss == [[r['iter'], r['loss']] for r in kept]
    assert lr == [[r['iter'], r['lr']] for r in kept]
    # Validation records are drawn at the last training iteration before them.
    assert top1 == [[4, 40.0], [8, 60.0]]
    assert [axis.get_ylabel() for axis in figure.axes] == ['loss', 'lr', 'accuracy/top1']


def test_a_run_started_afresh_names_the_runs_it_leaves_out(analyze_logs, tmp_path, capsys):
    write_run(tmp_path, '20261206_100000', FIRST)
    write_run(tmp_path, '20261206_110000', RESUMED)
    afresh = [train_record(i, 1, 2.0, 0.5) for i in range(1, 4)]
    write_run(tmp_path, '20261207_203422', afresh)
    figure = analyze_logs.main(['plot_curve', str(tmp_path), '--out', str(tmp_path / 'c.png')])
    assert figure.axes[0].lines[0].get_xydata().tolist() == [[r['iter'], 2.0] for r in afresh]
    err = capsys.readouterr().err
    assert 'joined' not in err, err
    assert (f'{tmp_path}: run 20261207_203422 started afresh at iteration 1 (not a resume): '
            "the 2 runs before it are left out; give a run's folder to read it alone") in err


def test_train_time_per_epoch(analyze_logs, resumed_work_dir, capsys):
    results = analyze_logs.main(['cal_train_time', str(resumed_work_dir)])
    times = results[str(resumed_work_dir)]
    epoch1 = [0.7, 0.8, 0.9]  # iterations 2-4: each epoch's first record left out
    epoch2 = [0.26, 0.27, 0.28]  # the resumed run's 6-8; validation times are not training's
    assert times['epoch_means'] == pytest.approx({1: statistics.mean(epoch1),
                                                  2: statistics.mean(epoch2)})
    assert times['s_per_iter'] == pytest.approx(statistics.mean(epoch1 + epoch2))
    assert (times['slowest_epoch'], times['fastest_epoch']) == (1, 2)
    out = capsys.readouterr().out
    assert 'slowest epoch 1, average time is 0.8000 s/iter' in out
    assert 'fastest epoch 2, average time is 0.2700 s/iter' in out
    with_outliers = analyze_logs.main(['cal_train_time', str(resumed_work_dir),
                                       '--include-outliers'])[str(resumed_work_dir)]
    assert with_outliers['epoch_means'][1] == pytest.approx(statistics.mean([0.6] + epoch1))


def test_one_run_folder_or_file_is_read_alone(analyze_logs, resumed_work_dir, tmp_path):
    first = resumed_work_dir / '20261206_100000'
    for run in (first, first / 'vis_data' / 'scalars.json'):
        figure = analyze_logs.plot_curves([str(run)], ['loss'])
        assert figure.axes[0].lines[0].get_xydata()[:, 0].tolist() == [1, 2, 3, 4, 5, 6]


def test_an_iteration_based_run_has_no_epochs(analyze_logs, tmp_path):
    records = [{'iter': i, 'time': t, 'loss': 1.0, 'step': i} for i, t in [(1, 2.0), (2, 4.0)]]
    write_run(tmp_path, '20261206_100000', records)
    assert analyze_logs.train_time(analyze_logs.load_history(str(tmp_path))) == {
        's_per_iter': 3.0}


EXPECTED_LOG = ("expected mmengine's <work_dir>/<timestamp>/vis_data/scalars.json, one JSON "
                'record per line')


@pytest.mark.parametrize('make, argv, fragments', [
    (lambda path: path.mkdir(), ['plot_curve', '{path}'],
     ['no scalars.json found in {path}/vis_data/scalars.json', '{path}/<timestamp>/']),
    (lambda path: None, ['cal_train_time', '{path}'], ['{path}: no such file or folder']),
    (lambda path: write_run(path, '20261206_100000', FIRST),
     ['plot_curve', '{path}', '--keys', 'los'],
     ["no scalar 'los' in the log; it has accuracy/top1, data_time, loss, lr, time"]),
    (lambda path: write_run(path, '20261206_100000', [{'iter': 1, 'loss': 1.0, 'step': 1}]),
     ['cal_train_time', '{path}'], ["no training record has 'time'", 'have iter, loss, step']),
    # An empty log said so without naming it.
    (lambda path: write_run(path, '20261206_100000', []), ['cal_train_time', '{path}'],
     ["{path}: no training record has 'time'", 'the training records have none']),
    # A checkpoint or other binary file, and text that is not UTF-8, ended in a
    # UnicodeDecodeError traceback.
    (lambda path: torch.save({'state_dict': {'w': torch.ones(4)}}, path),
     ['plot_curve', '{path}'],
     ['{path}: a binary file (a checkpoint?), not a scalars log', EXPECTED_LOG]),
    (lambda path: path.write_bytes(b'{"loss": 1.0, "note": "caf\xe9"}\n'),
     ['cal_train_time', '{path}'], ['{path}: not UTF-8 text', EXPECTED_LOG]),
])
def test_errors_are_one_line(analyze_logs, tmp_path, capsys, make, argv, fragments):
    path = tmp_path / 'work'
    make(path)
    with pytest.raises(SystemExit):
        run_cli(analyze_logs.main, [arg.format(path=path) for arg in argv]
                + ['--out', str(tmp_path / 'x.png')] * (argv[0] == 'plot_curve'))
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('error: ') and 'Traceback' not in '\n'.join(err), err
    for fragment in fragments:
        assert fragment.format(path=path) in err[-1], err[-1]


def test_an_image_format_matplotlib_cannot_write_is_refused_naming_out(analyze_logs,
                                                                        resumed_work_dir,
                                                                        tmp_path, capsys):
    """matplotlib's own 'Format 'jpgx' is not supported' named neither the flag nor a format it
    writes."""
    with pytest.raises(SystemExit):
        run_cli(analyze_logs.main, ['plot_curve', str(resumed_work_dir), '--out',
                                    str(tmp_path / 'f.jpgx')])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: ValueError: --out {tmp_path / 'f.jpgx'}: matplotlib writes "
                          "no 'jpgx' files; give a name ending in one of "), err
    assert '.png' in err and not (tmp_path / 'f.jpgx').exists()


def test_the_default_image_is_named_where_it_is_written(analyze_logs, resumed_work_dir,
                                                        tmp_path, monkeypatch, capsys):
    """Without --out the documented curves.png went into the current folder with only its bare
    name printed."""
    folder = tmp_path / 'here'
    folder.mkdir()
    monkeypatch.chdir(folder)
    analyze_logs.main(['plot_curve', str(resumed_work_dir)])
    assert (folder / 'curves.png').is_file()
    assert capsys.readouterr().out.strip() == f"curves written to {folder / 'curves.png'}"


def test_a_cut_last_line_is_left_out(analyze_logs, tmp_path, capsys):
    write_run(tmp_path, '20261206_100000', FIRST[:2])
    scalars = tmp_path / '20261206_100000' / 'vis_data' / 'scalars.json'
    scalars.write_text(scalars.read_text() + '{"iter": 3, "lo')
    history = analyze_logs.load_history(str(tmp_path))
    assert [record['iter'] for _, record in history] == [1, 2]
    assert 'its last line is cut short; left out' in capsys.readouterr().err


# Added to the shrunk demo (tiny_demo.options: 8 photos, batch 2): 2 epochs, every iteration logged.
TWO_LOGGED_EPOCHS = ['default_hooks.logger.interval=1', 'train_cfg.max_epochs=2']


@pytest.mark.slow
def test_a_real_run_s_log(analyze_logs, tiny_demo, tmp_path):
    """train.py's own scalars.json: 2 epochs of 4 iterations, each logged."""
    work_dir = tmp_path / 'run'
    subprocess.run([sys.executable, str(ROOT / 'tools' / 'train.py'),
                    str(ROOT / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'),
                    '--work-dir', str(work_dir), '--cfg-options', *tiny_demo.options,
                    *TWO_LOGGED_EPOCHS],
                   cwd=ROOT, env={**os.environ, 'PYTHONPATH': str(ROOT)}, check=True,
                   capture_output=True, timeout=600)
    (scalars, ) = work_dir.glob('*/vis_data/scalars.json')
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    figure = analyze_logs.plot_curves([str(work_dir)], ['loss', 'lr'])
    loss, lr = (axis.lines[0].get_xydata().tolist() for axis in figure.axes)
    assert loss == [[r['iter'], r['loss']] for r in records] and len(loss) == 8
    assert lr == [[r['iter'], r['lr']] for r in records]
    times = analyze_logs.train_time(analyze_logs.load_history(str(work_dir)))
    assert sorted(times['epoch_means']) == [1, 2]
    assert times['s_per_iter'] == pytest.approx(statistics.mean(
        r['time'] for r in records if r['iter'] not in (1, 5)))
