"""tools/test.py CHECKPOINT that is no file: the same hint as every other checkpoint loading.

A work dir given instead of a checkpoint in it (``tools/test.py CONFIG work_dirs/demo_ft``) is
a folder that is there: 'checkpoint not found' would mislead. tools/test.py names the
checkpoints in it, newest first, as tools/train.py does."""
import os
import shutil
from pathlib import Path

import pytest
import torch

from fastmim.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'configs' / 'finetune' / 'demo_vit_tiny_embedded_ft.py'


@pytest.fixture
def work_dir(tmp_path):
    """A fine-tuning work dir with two checkpoints, epoch_2.pth the newer (empty torch files:
    the hint names only files that start as checkpoints; they are never loaded)."""
    folder = tmp_path / 'demo_ft'
    folder.mkdir()
    for age, name in ((200, 'epoch_1.pth'), (100, 'epoch_2.pth')):
        torch.save({}, folder / name)
        os.utime(folder / name, (1e9 - age, 1e9 - age))
    return folder


def run_test_tool(load_script, checkpoint, tmp_path):
    load_script(ROOT / 'tools' / 'test.py').main(
        [str(CONFIG), str(checkpoint), '--work-dir', str(tmp_path / 'test_run')])


def test_a_work_dir_given_as_checkpoint_names_its_checkpoints(load_script, work_dir, tmp_path):
    with pytest.raises(CheckpointError, match=f'^{work_dir} is a folder; a checkpoint is a file. '
                                              f'Checkpoints in {work_dir}, newest first: '
                                              f'epoch_2.pth, epoch_1.pth$'):
        run_test_tool(load_script, work_dir, tmp_path)
    assert not (tmp_path / 'test_run').exists()  # refused before the runner writes anything


def test_a_missing_checkpoint_names_the_ones_beside_it(load_script, work_dir, tmp_path):
    missing = work_dir / 'epoch_3.pth'
    with pytest.raises(CheckpointError, match=f'^checkpoint not found: {missing}. Other '
                                              f'checkpoints in {work_dir}, newest first: '
                                              f'epoch_2.pth, epoch_1.pth$'):
        run_test_tool(load_script, missing, tmp_path)
    assert not (tmp_path / 'test_run').exists()


def test_the_knn_demo_names_the_command_that_writes_its_checkpoint(load_script, tmp_path,
                                                                   monkeypatch):
    """Run before `make demo`, the command in the kNN demo's config said only 'checkpoint not
    found'; the config names the command that writes the file (``checkpoints_made_by``), and
    the refusal names it, as the fine-tuning demos' does."""
    # A checkout without work_dirs/demo (this one's may hold the demo's), run from elsewhere.
    shutil.copytree(ROOT / 'configs', tmp_path / 'checkout' / 'configs')
    monkeypatch.chdir(tmp_path)
    knn_demo = tmp_path / 'checkout' / 'configs' / 'knn' / 'demo_vit_tiny_embedded_knn.py'
    with pytest.raises(CheckpointError, match=r'^checkpoint not found: '
                       r'work_dirs/demo/epoch_12\.pth; it is made by `make demo` '
                       r'\(configs/fastmim/demo_vit_tiny_embedded\.py\)$'):
        load_script(ROOT / 'tools' / 'test.py').main(
            [str(knn_demo), 'work_dirs/demo/epoch_12.pth', '--work-dir', str(tmp_path / 't')])
    assert not (tmp_path / 't').exists()


def test_a_pre_training_config_says_how_its_checkpoint_is_evaluated(load_script, work_dir,
                                                                    tmp_path):
    """A user who pre-trained tests with the same config; it has nothing to evaluate, and the
    error said only that."""
    from fastmim.errors import LaunchError
    pretrain = ROOT / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'
    with pytest.raises(LaunchError, match=r'nothing to evaluate.*configs/knn/.*linear-probe'):
        load_script(ROOT / 'tools' / 'test.py').main(
            [str(pretrain), str(work_dir / 'epoch_2.pth'), '--work-dir', str(tmp_path / 't')])


def test_a_key_the_test_dataset_refuses_is_named_with_its_place(load_script, tmp_path):
    """As in training: the error named only the class whose __init__ refused the key; a
    misspelt --cfg-options key is named as the command line's, with the close names, when the
    config loads (EmbeddedPhotos names the arguments it takes), before the work dir."""
    import torch

    from fastmim.errors import LaunchError
    checkpoint = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': {}}, checkpoint)
    with pytest.raises(LaunchError, match=r"^--cfg-options test_dataloader\.dataset\.num_sample: "
                       r".*: test_dataloader\.dataset \(EmbeddedPhotos\) takes no num_sample; "
                       r"did you mean 'num_samples'\?"):
        load_script(ROOT / 'tools' / 'test.py').main(
            [str(CONFIG), str(checkpoint), '--work-dir', str(tmp_path / 't'), '--cfg-options',
             'test_dataloader.dataset.num_sample=4'])
    assert not (tmp_path / 't').exists()
