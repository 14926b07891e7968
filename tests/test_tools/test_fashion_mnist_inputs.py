"""tools/experiments/run_fashion_mnist{,_dense}.py: inputs that cannot work are refused in one
line before the study (tens of minutes of training) starts."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / 'tools' / 'experiments'


@pytest.fixture(scope='module')
def study(load_script):
    sys.path.insert(0, str(TOOLS))  # the dense runner imports the study by name, as it runs
    return load_script(TOOLS / 'run_fashion_mnist.py')


@pytest.fixture(scope='module')
def dense(study, load_script):
    return load_script(TOOLS / 'run_fashion_mnist_dense.py')


@pytest.fixture
def nothing_runs(study, monkeypatch):
    def fetch():
        raise AssertionError('the study started before its inputs were checked')
    import fastmim.datasets
    monkeypatch.setattr(fastmim.datasets, 'fetch_fashion_mnist', fetch)


def test_a_work_dir_under_a_file_is_named(tmp_path, study, dense, nothing_runs):
    """os.makedirs ended in a NotADirectoryError traceback."""
    (tmp_path / 'notes.txt').write_text('a file')
    for tool in (study, dense):
        with pytest.raises(SystemExit, match=r'--work-dir .*notes\.txt/runs is not writable: '
                           r'.*notes\.txt is a file, not a folder'):
            tool.main(['--work-dir', str(tmp_path / 'notes.txt' / 'runs'), '--jobs', '1'])


@pytest.mark.parametrize('doc, message', [
    ('missing/results.md', r'the folder of .*results\.md does not exist'),
    ('a_folder', r'a_folder is a folder; expected the markdown file'),
    ('plain.md', r'plain\.md lacks the markers <!-- fashion-mnist-results:begin -->')])
def test_a_results_doc_that_cannot_take_the_table_is_named_first(tmp_path, study, nothing_runs,
                                                                 doc, message):
    """write_doc found these only after the whole study."""
    (tmp_path / 'a_folder').mkdir()
    (tmp_path / 'plain.md').write_text('# notes without markers\n')
    with pytest.raises(SystemExit, match=message):
        study.main(['--work-dir', str(tmp_path / 'runs'), '--doc', str(tmp_path / doc),
                    '--jobs', '1'])
    assert not (tmp_path / 'runs').exists()


def test_the_dense_runner_checks_its_own_markers(tmp_path, dense, nothing_runs):
    doc = tmp_path / 'plain.md'
    doc.write_text('<!-- fashion-mnist-results:begin -->\n<!-- fashion-mnist-results:end -->\n')
    with pytest.raises(SystemExit, match=r'lacks the markers <!-- fashion-mnist-dense-results'):
        dense.main(['--work-dir', str(tmp_path / 'runs'), '--docs', str(doc), '--jobs', '1'])


HARNESS = '''
import sys
sys.path.insert(0, {tools!r})
import run_fashion_mnist as study
study.stop_commands_on_signals()
study.report_stops(lambda: study.execute([sys.executable, '-c', {child!r}], {log!r}, threads=1))
'''
CHILD = '''
import os, time
open({pid_file!r}, 'w').write(str(os.getpid()))
time.sleep(120)
'''


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize('signal_name, status', [('SIGTERM', 75), ('SIGINT', 130)])
def test_a_stopped_study_stops_its_running_commands(tmp_path, signal_name, status):
    """A SIGTERM ended the study alone; torchrun and its workers trained on as orphans. The
    study's status is PreemptionHook's for a scheduler's signal (a requeue script retries it;
    it was 1), a shell's 130 for Ctrl-C."""
    pid_file = tmp_path / 'child.pid'
    harness = HARNESS.format(tools=str(TOOLS), log=str(tmp_path / 'run.log'),
                             child=CHILD.format(pid_file=str(pid_file)))
    study = subprocess.Popen([sys.executable, '-c', harness], stderr=subprocess.PIPE, text=True)
    child = None
    try:
        deadline = time.time() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
            time.sleep(0.1)
        child = int(pid_file.read_text())
        study.send_signal(getattr(signal, signal_name))
        _, stderr = study.communicate(timeout=30)
        assert study.returncode == status
        assert f'error: stopped by {signal_name}; the running commands were stopped too' in stderr
        deadline = time.time() + 10
        while alive(child) and time.time() < deadline:
            time.sleep(0.1)
        assert not alive(child)
    finally:
        for pid in (study.pid, child):
            if pid is not None and alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_table_of_one_seed_does_not_speak_of_a_mean(study):
    """'Mean ± sample standard deviation over 1 seeds (0)' stood under a table without ±."""
    runs = [study.Run(method, 0.01, 0, '', top1=50.) for method in study.METHODS]
    table = study.results_table(runs, [0.01], [0])
    assert table.splitlines()[-1].startswith('One seed (0); ')
    assert '±' not in table
    runs += [study.Run(method, 0.01, 1, '', top1=52.) for method in study.METHODS]
    assert 'Mean ± sample standard deviation over 2 seeds (0, 1)' in study.results_table(
        runs, [0.01], [0, 1])


class Started(Exception):
    """The study got past its inputs and its --fresh (the data fetch is its first work)."""


def test_fresh_deletes_only_what_the_study_wrote(tmp_path, study, monkeypatch):
    """--fresh deleted the whole --work-dir: a user's notes and another run's checkpoint in it
    went with the study's outputs."""
    def fetch():
        raise Started
    import fastmim.datasets
    monkeypatch.setattr(fastmim.datasets, 'fetch_fashion_mnist', fetch)
    monkeypatch.setattr(study, 'stop_commands_on_signals', lambda: None)
    work_dir = tmp_path / 'x'
    (work_dir / 'other_run').mkdir(parents=True)
    (work_dir / 'other_run' / 'epoch_800.pth').write_bytes(b'weights')
    (work_dir / 'notes.txt').write_text('notes')
    ours = ['pretrain/epoch_3.pth', 'pretrain/last_checkpoint', 'initial_weights.pth',
            'results.json', 'fashion_mnist_knn_random/labels0.01_seed0/metrics.json',
            'fashion_mnist_finetune_scratch_config/labels0.1_seed2/run.log']
    for name in ours:
        (work_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (work_dir / name).write_text('the study wrote this')
    (tmp_path / 'elsewhere').mkdir()  # a linked pre-training: the link goes, not its files
    (tmp_path / 'elsewhere' / 'epoch_3.pth').write_bytes(b'kept')
    (work_dir / 'initial_weights.pth').unlink()
    (work_dir / 'initial_weights.pth').symlink_to(tmp_path / 'elsewhere' / 'epoch_3.pth')
    with pytest.raises(Started):
        study.main(['--work-dir', str(work_dir), '--fresh', '--jobs', '1',
                    '--doc', str(tmp_path / 'doc.md')])
    assert (work_dir / 'notes.txt').read_text() == 'notes'
    assert (work_dir / 'other_run' / 'epoch_800.pth').read_bytes() == b'weights'
    assert (tmp_path / 'elsewhere' / 'epoch_3.pth').read_bytes() == b'kept'
    assert sorted(path.name for path in work_dir.iterdir()) == ['notes.txt', 'other_run']


@pytest.mark.parametrize('argv, message', [
    (['--fractions', '1.5'], r'--fractions: .*in \(0, 1\], got 1\.5'),
    (['--fractions', '0.1', '0'], r'--fractions: .*in \(0, 1\], got 0'),
    (['--fractions', '1e-6'], r'--fractions: 1e-6 keeps no image of a class'),
    (['--fractions', 'half'], r"--fractions: 'half' is not a number"),
    (['--fractions', '0.1', '0.10'], r'--fractions names 0\.1 twice'),
    (['--seeds', '-1'], r'--seeds: .*got -1'),
    (['--seeds', '0', '0'], r'--seeds names 0 twice'),
    (['--jobs', '0'], r'--jobs: .*at least 1, got 0')])
def test_the_study_refuses_impossible_counts_while_parsing(study, capsys, argv, message):
    """--fractions 1.5 ran the pre-training (minutes), then failed its six runs one by one."""
    with pytest.raises(SystemExit):
        study.parse_args(argv)
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(message, error), error


@pytest.mark.parametrize('argv, message', [
    (['--train-canvases', '0'], r'--train-canvases: .*at least 1, got 0'),
    (['--test-canvases', '-5'], r'--test-canvases: .*at least 1, got -5'),
    (['--test-canvases', '2.5'], r"--test-canvases: '2\.5' is not a whole number"),
    (['--seeds', '1', '1'], r'--seeds names 1 twice'),
    (['--jobs', '-2'], r'--jobs: .*at least 1, got -2')])
def test_the_dense_runner_refuses_impossible_counts_first(tmp_path, dense, nothing_runs, capsys,
                                                         argv, message):
    """--train-canvases 0 failed in a numpy traceback after the canvases on disk had been
    deleted and 4,000 new ones written."""
    with pytest.raises(SystemExit):
        dense.main(['--work-dir', str(tmp_path / 'runs'), '--docs', *argv])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(message, error), error
    assert not (tmp_path / 'runs').exists()


PUBLISHED = '# results\n<!-- fashion-mnist-results:begin -->\nthe published table\n' \
            '<!-- fashion-mnist-results:end -->\nprose that quotes it\n'


@pytest.fixture
def study_without_training(tmp_path, study, monkeypatch):
    """The study in a repository of its own (``ROOT``, whose docs/experiments.md holds a
    published table) with its expensive parts replaced: the data, the initial weights (a file
    of bytes) and the runs (a result file each, their command in run.log). The pre-training
    has finished (its checkpoint is reused)."""
    import torch

    import fastmim.datasets
    repo = tmp_path / 'repo'
    (repo / 'docs').mkdir(parents=True)
    (repo / 'docs' / 'experiments.md').write_text(PUBLISHED)
    (repo / 'README.md').write_text(PUBLISHED)  # the table is published in both
    monkeypatch.setattr(study, 'ROOT', str(repo))
    monkeypatch.setattr(fastmim.datasets, 'fetch_fashion_mnist', lambda: str(tmp_path))
    monkeypatch.setattr(study, 'stop_commands_on_signals', lambda: None)
    commands = []

    def save_initial_weights(path, seed=0):
        if not Path(path).exists():
            Path(path).write_bytes(b'the weights pre-training starts from')
        return path

    def execute(command, log_path, threads):
        commands.append(command)
        Path(log_path).write_text(' '.join(command) + '\n\n')  # as study.execute does
        folder = Path(log_path).parent
        (folder / 'metrics.json').write_text('{"knn/top1": 50.0}')
        (folder / '20260101_000000' / 'vis_data').mkdir(parents=True)
        (folder / '20260101_000000' / 'vis_data' / 'scalars.json').write_text(
            '{"accuracy/top1": 60.0}\n')
        return 1.0

    monkeypatch.setattr(study, 'save_initial_weights', save_initial_weights)
    monkeypatch.setattr(study, 'execute', execute)
    work_dir = tmp_path / 'runs'
    (work_dir / 'pretrain').mkdir(parents=True)
    torch.save(dict(meta=dict(epoch=3, iter=468), state_dict={}),
               work_dir / 'pretrain' / 'epoch_3.pth')
    (work_dir / 'pretrain' / 'last_checkpoint').write_text(
        str(work_dir / 'pretrain' / 'epoch_3.pth'))
    return study, repo / 'docs' / 'experiments.md', work_dir, commands


def test_a_study_off_the_published_grid_leaves_the_published_table_alone(
        tmp_path, study_without_training, capsys):
    """Any run, however small, replaced the published 3-seed table of docs/experiments.md
    (`--seeds 0 --fractions 0.01`: a one-column table under prose quoting the old numbers)."""
    study, doc, work_dir, commands = study_without_training
    study.main(['--work-dir', str(work_dir), '--seeds', '0', '--fractions', '0.01',
                '--jobs', '1'])
    assert len(commands) == 6
    readme = doc.parents[1] / 'README.md'
    assert doc.read_text() == readme.read_text() == PUBLISHED
    out = capsys.readouterr().out
    note = (f'the table was not written into {doc}, {readme}: --seeds 0 --fractions 0.01 is '
            f'not the published study; --doc {doc} {readme} writes it there')
    assert out.startswith(note) and out.rstrip().endswith(
        f'; {note}, details in {work_dir}/results.json')

    mine = tmp_path / 'mine.md'  # --doc names where it goes (and --docs, the dense spelling)
    study.main(['--work-dir', str(work_dir), '--seeds', '0', '--fractions', '0.01',
                '--jobs', '1', '--doc', str(mine)])
    assert '| FastMIM pre-trained, fine-tuned | 60.0 |' in mine.read_text()
    study.main(['--work-dir', str(work_dir), '--seeds', '0', '--fractions', '0.01',
                '--jobs', '1', '--docs', str(doc)])
    assert '| FastMIM pre-trained, fine-tuned | 60.0 |' in doc.read_text()

    doc.write_text(PUBLISHED)
    capsys.readouterr()
    study.main(['--work-dir', str(work_dir), '--jobs', '1', '--no-doc'])  # the published grid
    assert len(commands) == 36 and doc.read_text() == PUBLISHED
    assert 'the table was written into no document (--no-doc), details in' in (
        capsys.readouterr().out)
    study.main(['--work-dir', str(work_dir), '--jobs', '1'])
    written = doc.read_text()
    assert written.startswith('# results\n') and written.endswith('prose that quotes it\n')
    assert '| FastMIM pre-trained, fine-tuned | 60.0 ± 0.0 | 60.0 ± 0.0 |' in written
    assert 'over 3 seeds (0, 1, 2)' in written and len(commands) == 36
    assert readme.read_text() == written  # the README's copy of the table follows


def test_finished_runs_of_other_settings_are_refused_before_the_pretraining(
        tmp_path, study_without_training):
    """The runs kept no record of their settings: after the pre-training was replaced by hand,
    the rerun reported the old runs' results as those of the new checkpoint (and resumed its
    stopped runs from the old one)."""
    import torch
    study, doc, work_dir, commands = study_without_training
    argv = ['--work-dir', str(work_dir), '--seeds', '0', '--fractions', '0.01', '--jobs', '1',
            '--no-doc']
    study.main(argv)
    records = sorted(work_dir.glob(f'*/labels0.01_seed0/{study.SETTINGS_FILE}'))
    assert len(commands) == 6 and len(records) == 6
    # runs of the runner before the records: their run.log's command and weights older than
    # their results stand for the record
    for record in records:
        record.unlink()
    study.main(argv)
    assert len(commands) == 6 and all(record.exists() for record in records)

    checkpoint = work_dir / 'pretrain' / 'epoch_3.pth'
    kept = checkpoint.read_bytes()
    torch.save(dict(meta=dict(epoch=3, iter=468), state_dict=dict(w=torch.ones(1))), checkpoint)
    fresh = r'; --fresh starts the study over$'
    with pytest.raises(SystemExit, match=r'error: .*/fashion_mnist_finetune_pretrained/labels0\.01'
                       r'_seed0 finished with other settings than this command \(another '
                       r'pre-training checkpoint\) \(and 2 more runs\)' + fresh):
        study.main(argv)
    (work_dir / 'pretrain').rename(tmp_path / 'pretrain')  # refused before a new one runs
    with pytest.raises(SystemExit, match=r'labels0\.01_seed0 finished with other settings than '
                       r'this command \(its pre-training checkpoint is gone\) \(and 2 more '
                       r'runs\)' + fresh):
        study.main(argv)
    (tmp_path / 'pretrain').rename(work_dir / 'pretrain')
    checkpoint.write_bytes(kept)
    initial = work_dir / 'initial_weights.pth'
    initial.write_bytes(b'other weights')
    with pytest.raises(SystemExit, match=r'fashion_mnist_linear_probe_random/labels0\.01_seed0 '
                       r'finished with other settings than this command \(other initial weights '
                       r'\(initial_weights\.pth\)\) \(and 1 more runs\)' + fresh):
        study.main(argv)
    initial.write_bytes(b'the weights pre-training starts from')
    study.main(argv)
    assert len(commands) == 6


def test_no_doc_and_doc_exclude_each_other(study, capsys):
    with pytest.raises(SystemExit):
        study.parse_args(['--no-doc', '--doc', 'x.md'])
    assert 'not allowed with argument' in capsys.readouterr().err
    assert study.parse_args(['--doc']).docs == []  # a bare --doc (--docs) writes none


def test_a_rerun_keeps_what_the_invocation_that_trained_recorded(study_without_training):
    """A rerun of a finished study, which trains nothing, replaced results.json's facts (wall
    time, load) with its own and the runs' durations with nulls: the cost the docs quote was
    gone."""
    import json
    study, _, work_dir, commands = study_without_training
    grid = ['--work-dir', str(work_dir), '--seeds', '0', '--fractions', '0.01', '--jobs', '1',
            '--no-doc']
    study.main(grid)
    study.main(grid)
    assert len(commands) == 6  # the second invocation trained nothing
    results = json.loads((work_dir / 'results.json').read_text())
    trained, rerun = results['invocations']
    assert (trained['runs_trained'], rerun['runs_trained']) == (6, 0)
    assert [run['seconds'] for run in results['runs']] == [1.0] * 6


def test_the_published_tables_are_one_in_the_readme_and_the_docs(study):
    """The runner writes its table between the same markers of both files (the README's copy
    had none, so a rerun left it stale); the repository's two copies agree."""
    def section(path):
        text = Path(path).read_text()
        return text[text.index(study.RESULTS_BEGIN):text.index(study.RESULTS_END)]

    docs = study.default_docs()
    assert [Path(path).relative_to(study.ROOT).as_posix() for path in docs] == [
        'docs/experiments.md', 'README.md']
    assert section(docs[0]) == section(docs[1])
