"""What --resume would continue, as the Ctrl-C line of tools/train.py names it: read from the
work dir's last_checkpoint at the interrupt, not promised in advance."""
import pytest
from mmengine.config import Config

from fastmim import resume_target
from fastmim.resume_target import interrupted_hint, note_the_start


@pytest.fixture(autouse=True)
def no_run_started(monkeypatch):
    monkeypatch.setattr(resume_target, '_start', {})


def save(work_dir, name):
    """What a run's save leaves: the checkpoint, and last_checkpoint rewritten to name it."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / name).write_bytes(b'PK\x05\x06' + bytes(18))
    (work_dir / 'last_checkpoint').write_text(str(work_dir / name))
    return str(work_dir / name)


def start(work_dir, resume_from=None):
    note_the_start(Config(dict(work_dir=str(work_dir), resume=bool(resume_from),
                               load_from=resume_from)))


def test_a_fresh_run_interrupted_before_its_first_save_names_the_earlier_run_s_checkpoint(
        tmp_path):
    """The hint said --resume would continue 'the last checkpoint it saved (from the start when
    it saved none yet)'; --resume took the finished earlier run's epoch_12.pth instead."""
    earlier = save(tmp_path, 'epoch_12.pth')
    start(tmp_path)
    assert interrupted_hint() == (
        f"this run saved no checkpoint yet: --resume would continue the earlier run's "
        f'{earlier} instead (run without it to start afresh, or give another --work-dir)')
    saved = save(tmp_path, 'epoch_1.pth')
    assert interrupted_hint() == (f'--resume continues from {saved}, the last checkpoint this '
                                  'run saved')


def test_a_resumed_run_interrupted_before_a_save_resumes_where_it_started(tmp_path):
    resumed = save(tmp_path, 'epoch_3.pth')
    start(tmp_path, resume_from=resumed)
    assert interrupted_hint() == (f'--resume continues from {resumed} again, where this run '
                                  'started (it saved none since)')


def test_a_run_in_an_empty_work_dir_interrupted_before_a_save_would_start_over(tmp_path):
    start(tmp_path / 'new')
    assert interrupted_hint() == '--resume starts from the start: this run saved no checkpoint yet'


def test_before_the_run_starts_the_hint_names_the_work_dir_s_last_checkpoint():
    assert interrupted_hint('`make it --resume`') == (
        '`make it --resume` continues from the last checkpoint of the work dir (from the start '
        'when it holds none)')


def test_without_last_checkpoint_the_newest_written_regular_checkpoint_is_picked(tmp_path):
    """``--resume`` itself orders them by the iteration each records (loading them); the pick
    from the names alone takes the newest written, and leaves out what it never resumes."""
    import os

    from fastmim.resume_target import resume_pick
    for age, name in enumerate(['best_accuracy_top1_epoch_9.pth', 'iter_20.pth', 'epoch_3.pth',
                                'epoch_2.pth']):
        (tmp_path / name).write_bytes(b'')
        os.utime(tmp_path / name, (10_000 - age, 10_000 - age))  # the first listed is newest
    (tmp_path / 'epoch_7.pth').mkdir()
    assert resume_pick(tmp_path) == str(tmp_path / 'iter_20.pth')
    assert resume_pick(tmp_path / 'missing') is None
