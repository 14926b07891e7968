"""The regular checkpoints of a work dir: the files ``--resume`` and its hints choose among."""
from fastmim.engine.last_checkpoint import regular_checkpoints


def test_only_the_epoch_and_iteration_checkpoints_are_listed_in_name_order(tmp_path):
    """What the checkpoint and preemption hooks save (mmengine's ``filename_tmpl``); the best
    validation's weights, mmengine's note of the newest, temporary files of a write and a
    folder of that name are not checkpoints a run resumes from."""
    for name in ['iter_12.pth', 'epoch_3.pth', 'epoch_10.pth', 'best_accuracy_top1_epoch_2.pth',
                 'last_checkpoint', '.epoch_4.pth.abcd1234.tmp', 'epoch_5.pth.bak', 'epoch_x.pth']:
        (tmp_path / name).write_bytes(b'')
    (tmp_path / 'epoch_6.pth').mkdir()
    assert regular_checkpoints(tmp_path) == ['epoch_10.pth', 'epoch_3.pth', 'iter_12.pth']


def test_a_work_dir_that_does_not_exist_holds_none(tmp_path):
    assert regular_checkpoints(tmp_path / 'missing') == []
    (tmp_path / 'a_file').write_bytes(b'')
    assert regular_checkpoints(tmp_path / 'a_file') == []
