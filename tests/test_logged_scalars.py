"""fastmim.logged_scalars: mmengine's vis_data/scalars.json read back as mmengine wrote it,
cut short, corrupt, and over the runs of a resumed work dir."""
import pytest
from mmengine.visualization import LocalVisBackend

from fastmim.errors import LaunchError
from fastmim.logged_scalars import join_runs, read_records, scalars_files, training_history


def log_run(work_dir, timestamp, records):
    """Write ``records`` (each with its ``step``) as mmengine's LocalVisBackend does during a
    run started at ``timestamp``; return the file."""
    backend = LocalVisBackend(str(work_dir / timestamp / 'vis_data'))
    for record in records:
        scalars = {key: value for key, value in record.items() if key != 'step'}
        backend.add_scalars(scalars, step=record['step'])
    return work_dir / timestamp / 'vis_data' / 'scalars.json'


def train(iteration, loss):
    return dict(loss=loss, time=0.5, iter=iteration, step=iteration)


def test_records_read_back_as_written(tmp_path):
    records = [train(1, 2.0), train(2, 1.5), {'accuracy/top1': 40.0, 'step': 1}]
    assert read_records(log_run(tmp_path, '20261206_100000', records)) == records


def test_files_of_a_file_a_run_folder_and_a_work_dir_oldest_first(tmp_path):
    # Written newest first: the order comes from the names (start times), not the writing.
    newer = log_run(tmp_path, '20261206_110000', [train(1, 1.0)])
    older = log_run(tmp_path, '20261206_100000', [train(1, 1.0)])
    assert scalars_files(newer) == [newer]
    assert scalars_files(tmp_path / '20261206_110000') == [newer]
    assert scalars_files(tmp_path) == [older, newer]


@pytest.mark.parametrize('make, said', [
    (lambda path: path.mkdir(), 'no scalars.json found in {path}/vis_data/scalars.json nor in '
     '{path}/<timestamp>/vis_data/scalars.json'),
    (lambda path: None, '{path}: no such file or folder'),
])
def test_no_files_is_an_error_unless_missing_ok(tmp_path, make, said):
    path = tmp_path / 'work'
    make(path)
    with pytest.raises(LaunchError, match=said.format(path=path).replace('.', r'\.')):
        scalars_files(path)
    assert scalars_files(path, missing_ok=True) == []


def test_a_last_line_cut_short_is_left_out_with_a_note(tmp_path, capsys):
    scalars = log_run(tmp_path, '20261206_100000', [train(1, 2.0), train(2, 1.5)])
    scalars.write_text(scalars.read_text() + '{"loss": 1.2, "ti\n\n')
    assert read_records(scalars) == [train(1, 2.0), train(2, 1.5)]
    assert f'{scalars}: its last line is cut short; left out' in capsys.readouterr().err


def test_a_corrupt_line_before_the_last_is_an_error_naming_file_and_line(tmp_path):
    scalars = tmp_path / 'scalars.json'
    scalars.write_text('{"iter": 1, "loss": 2.0}\n\n{"iter": 2, "lo\n{"iter": 3, "loss": 1.0}\n')
    with pytest.raises(LaunchError, match=rf'{scalars}, line 3: not a JSON record'):
        read_records(scalars)


def test_a_resumed_run_replaces_what_it_logged_again(tmp_path):
    """Killed at iteration 6 after the epoch-1 checkpoint (iteration 4), resumed from it: the
    resumed run's 5 and 6 stand; the first run's validation after iteration 4 stays."""
    first = [train(i, 1.0 / i) for i in range(1, 5)] + [{'accuracy/top1': 40.0, 'step': 1}] + [
        train(i, 9.0) for i in (5, 6)]
    resumed = [train(i, 0.1 / i) for i in range(5, 9)] + [{'accuracy/top1': 60.0, 'step': 2}]
    log_run(tmp_path, '20261206_100000', first)
    log_run(tmp_path, '20261206_110000', resumed)
    history = training_history(scalars_files(tmp_path))
    assert history == [(record.get('iter', 4), record) for record in first[:5]] + [
        (record.get('iter', 8), record) for record in resumed]


def test_a_run_started_afresh_replaces_all_before_it(tmp_path):
    log_run(tmp_path, '20261206_100000', [train(i, 1.0) for i in range(1, 4)])
    log_run(tmp_path, '20261206_110000', [train(i, 2.0) for i in range(1, 3)])
    assert training_history(scalars_files(tmp_path)) == [(i, train(i, 2.0)) for i in (1, 2)]


def test_the_runs_a_run_started_afresh_leaves_out_are_named(tmp_path):
    """Two runs resumed one from the other, then a third started afresh at its first logged
    iteration (4, with a log interval of 4): the third alone is kept, and it says so."""
    first = log_run(tmp_path, '20261206_100000', [train(i, 1.0) for i in (4, 8)])
    resumed = log_run(tmp_path, '20261206_110000', [train(i, 1.5) for i in (12, 16)])
    afresh = log_run(tmp_path, '20261207_203422', [train(i, 2.0) for i in (4, 8)])
    joined = join_runs(scalars_files(tmp_path))
    assert joined.history == [(i, train(i, 2.0)) for i in (4, 8)]
    assert joined.kept == [afresh]
    (replacement, ) = joined.replacements
    assert (replacement.run, replacement.iteration, replacement.replaced) == (
        afresh, 4, [first, resumed])
    assert replacement.message() == (
        'run 20261207_203422 started afresh at iteration 4 (not a resume): the 2 runs before '
        'it are left out')


def test_a_run_resumed_from_an_older_checkpoint_names_the_run_it_leaves_out(tmp_path):
    """A resume from the first run's checkpoint at iteration 6 leaves out a second run that
    started after it, and keeps the first run's iterations before 6."""
    first = log_run(tmp_path, '20261206_100000', [train(i, 1.0) for i in range(1, 9)])
    second = log_run(tmp_path, '20261206_110000', [train(i, 1.5) for i in (9, 10)])
    third = log_run(tmp_path, '20261206_120000', [train(i, 2.0) for i in (6, 7)])
    joined = join_runs(scalars_files(tmp_path))
    assert joined.kept == [first, third]
    (replacement, ) = joined.replacements
    assert replacement.replaced == [second]
    assert replacement.message() == (
        'run 20261206_120000 resumed at iteration 6, before run 20261206_110000 started: '
        'that run is left out')
