"""tools/train.py --resume does not load the pre-trained weights a resumed run overwrites."""
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from fastmim.datasets import find_embedded_photos
from fastmim.train_flags import apply_resume, skip_pretrained_init_when_resuming

ROOT = Path(__file__).resolve().parents[2]
FINETUNE = ROOT / 'configs' / 'finetune' / 'demo_vit_tiny_embedded_ft.py'
DEMO = ROOT / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'


def save_run_checkpoint(path):
    """A checkpoint of a training run: the weights and the run's state that --resume continues."""
    torch.save({'meta': {'epoch': 1, 'iter': 4}, 'state_dict': {'w': torch.ones(1)},
                'optimizer': {}, 'message_hub': {}}, path)


def finetune_config(work_dir, resume):
    cfg = Config.fromfile(str(FINETUNE))
    cfg.model.backbone.init_cfg.checkpoint = str(work_dir.parent / 'moved' / 'epoch_12.pth')
    cfg.work_dir, cfg.resume, cfg.load_from = str(work_dir), resume, None
    return cfg


def test_a_resumed_fine_tuning_does_not_need_the_pre_training_file(tmp_path):
    """mmengine initialises before it resumes: a pre-training file cleaned up since the run
    started stopped the resume with 'checkpoint not found'."""
    work_dir = tmp_path / 'ft'
    work_dir.mkdir()
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_3.pth'))
    cfg = finetune_config(work_dir, resume=True)
    skip_pretrained_init_when_resuming(cfg)
    assert cfg.model.backbone.init_cfg is None


@pytest.mark.parametrize('resume, saved', [(False, True), (True, False)],
                         ids=['not resuming', 'nothing to resume yet'])
def test_a_run_that_starts_from_the_beginning_keeps_its_pre_trained_init(tmp_path, resume,
                                                                         saved):
    work_dir = tmp_path / 'ft'
    work_dir.mkdir()
    if saved:
        (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_3.pth'))
    cfg = finetune_config(work_dir, resume)
    skip_pretrained_init_when_resuming(cfg)
    assert cfg.model.backbone.init_cfg.type == 'FastMIMPretrained'


@pytest.mark.parametrize('key, other', [
    ('model.backbone.init_cfg.checkpoint', []),
    ('load_from', ['model.backbone.init_cfg=None'])])
def test_a_missing_checkpoint_to_start_from_is_named_before_the_work_dir_is_written(
        tmp_path, train, key, other):
    """mmengine reads them after it has written the work dir's log folder and config copy,
    and the pre-trained one inside init_weights: a wrong path left a work dir behind."""
    from fastmim.errors import CheckpointError
    torch.save({}, tmp_path / 'epoch_11.pth')
    work_dir = tmp_path / 'ft'
    with pytest.raises(CheckpointError, match=rf'^{key}: checkpoint not found: '
                                              rf'{tmp_path}/epoch_12.pth\. Other checkpoints'):
        train.main([str(FINETUNE), '--work-dir', str(work_dir), '--cfg-options',
                    f'{key}={tmp_path / "epoch_12.pth"}', *other])
    assert not work_dir.exists()


def test_a_missing_resume_checkpoint_is_named_as_resume(tmp_path, train):
    """It was named 'load_from', a key the user never set."""
    from fastmim.errors import CheckpointError
    with pytest.raises(CheckpointError, match=rf'^--resume: checkpoint not found: '
                                              rf'{tmp_path}/nope\.pth'):
        train.main([str(FINETUNE), '--work-dir', str(tmp_path / 'ft'), '--resume',
                    str(tmp_path / 'nope.pth'), '--cfg-options', 'model.backbone.init_cfg=None'])


@pytest.mark.parametrize('given', ['nope.pth', ''], ids=['missing', 'folder'])
def test_a_refused_resume_names_only_the_checkpoints_beside_it_that_resume(tmp_path, train,
                                                                           given):
    """A newer weights-only file beside it (what tools/convert/to_timm.py and publish.py
    write) was named first: --resume refuses it too."""
    from fastmim.errors import CheckpointError
    checkpoints = tmp_path / 'checkpoints'
    checkpoints.mkdir()
    save_run_checkpoint(checkpoints / 'epoch_1.pth')
    os.utime(checkpoints / 'epoch_1.pth', (1e9, 1e9))
    torch.save({'w': torch.ones(1)}, checkpoints / 'vit_timm.pth')
    with pytest.raises(CheckpointError, match=rf'^--resume: .*{checkpoints}, newest first: '
                                              rf'epoch_1\.pth$'):
        train.main([str(FINETUNE), '--work-dir', str(tmp_path / 'ft'), '--resume',
                    str(checkpoints / given), '--cfg-options', 'model.backbone.init_cfg=None'])


def save_with_a_storage_cut_short(path):
    """A run's checkpoint whose zip archive is whole but whose tensor record is cut short: it
    passes the launch checks and is refused only as torch reads it."""
    whole = path.with_suffix('.whole')
    torch.save({'meta': {'epoch': 1, 'iter': 4}, 'state_dict': {'w': torch.ones(1000)},
                'optimizer': {}, 'message_hub': {}}, whole)
    with zipfile.ZipFile(whole) as source, zipfile.ZipFile(path, 'w') as cut:
        for entry in source.infolist():
            data = source.read(entry)
            cut.writestr(entry, data[:100] if entry.filename.endswith('/data/0') else data)
    whole.unlink()


def test_a_resume_checkpoint_refused_as_it_is_read_names_only_those_that_resume(tmp_path,
                                                                                train, tiny_demo):
    """The launch check's hint named only the checkpoints that resume, the loader's named every
    loadable file: a newer weights-only file (tools/convert/to_timm.py's, publish.py's) first."""
    from fastmim.errors import CheckpointError
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    save_run_checkpoint(work_dir / 'epoch_1.pth')
    os.utime(work_dir / 'epoch_1.pth', (1e9, 1e9))
    torch.save({'w': torch.ones(1)}, work_dir / 'vit_timm.pth')
    save_with_a_storage_cut_short(work_dir / 'epoch_2.pth')
    with pytest.raises(CheckpointError, match=rf'epoch_2\.pth is not a readable checkpoint '
                                              rf'\(truncated or corrupt\?\): .*Other checkpoints '
                                              rf'in {work_dir}, newest first: epoch_1\.pth$'):
        train.main([str(DEMO), '--work-dir', str(work_dir), '--resume',
                    str(work_dir / 'epoch_2.pth'), '--cfg-options', *tiny_demo.recorded_options])


def test_a_last_checkpoint_naming_a_deleted_file_is_named(tmp_path, train):
    from fastmim.errors import CheckpointError
    work_dir = tmp_path / 'ft'
    work_dir.mkdir()
    save_run_checkpoint(work_dir / 'epoch_4.pth')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_5.pth'))
    with pytest.raises(CheckpointError, match=rf'^--resume: {work_dir}/last_checkpoint names '
                                              rf'{work_dir}/epoch_5\.pth: checkpoint not found: '
                                              rf'.*Other checkpoints in {work_dir}, newest first: '
                                              rf'epoch_4\.pth'):
        train.main([str(FINETUNE), '--work-dir', str(work_dir), '--resume',
                    '--cfg-options', 'model.backbone.init_cfg=None'])


def test_resume_with_nothing_to_resume_says_it_starts_from_scratch(tmp_path):
    """mmengine logged 'Did not find last_checkpoint to be resumed.' and then 'Auto resumed
    from the latest checkpoint None.'"""
    from mmengine.config import Config
    cfg = Config(dict(work_dir=str(tmp_path), load_from=None))
    logged = []
    from unittest.mock import patch

    from mmengine.logging import MMLogger
    with patch.object(MMLogger.get_current_instance(), 'log',
                      lambda level, message: logged.append(message)):
        apply_resume(cfg, 'auto')
    assert cfg.resume is False
    assert logged == [f'--resume: no checkpoint in {tmp_path} yet; starting from scratch']


def test_a_key_the_dataset_refuses_is_named_with_where_it_is_in_the_config(tmp_path, train):
    """Pointing the demo at a folder with --cfg-options keeps EmbeddedPhotos' num_samples,
    which --cfg-options cannot remove: the error named BaseDataset.__init__, neither the
    config entry nor how to drop the key."""
    photos_folder = tmp_path / 'photos'
    photos_folder.mkdir()
    for _, path in find_embedded_photos()[:4]:
        shutil.copy(path, photos_folder)
    with pytest.raises(TypeError) as raised:
        train.main([str(DEMO), '--work-dir', str(tmp_path / 'demo'), '--cfg-options',
                    'train_dataloader.dataset.type=ImageFolder',
                    f'train_dataloader.dataset.data_root={photos_folder}'])
    message = str(raised.value)
    assert message.startswith('train_dataloader.dataset (ImageFolder) sets num_samples, '
                              'which it does not take')
    assert "got an unexpected keyword argument 'num_samples'" in message
    assert '_delete_=True' in message


def test_a_misspelt_command_line_key_of_a_class_is_refused_before_the_runner(tmp_path, train):
    """A misspelt key of the backbone was refused by the class once the Runner was built (~190
    lines of start-up later), after a warning that it was added; now when the config loads."""
    from fastmim.errors import LaunchError
    with pytest.raises(LaunchError, match=r"^--cfg-options model\.backbone\.drop_path_rat: .*: "
                       r"model\.backbone \(VisionTransformer\) takes no drop_path_rat; did you "
                       r"mean 'drop_path_rate'"):
        train.main([str(DEMO), '--work-dir', str(tmp_path / 'demo'), '--cfg-options',
                    'model.backbone.drop_path_rat=0.1'])
    assert not (tmp_path / 'demo').exists()


@pytest.mark.parametrize('option, start, fix', [
    # A key one level too high: it belongs to the dataset, not the loader (which has no type).
    ('train_dataloader.num_samples=8',
     'train_dataloader (DataLoader) does not take num_samples',
     'train_dataloader.dataset takes num_samples'),
])
def test_a_misspelt_command_line_key_is_named_as_the_command_lines(tmp_path, train, option,
                                                                   start, fix):
    """The advice was to remove the key from the config, which --cfg-options cannot do, for a
    key the config does not hold; a DataLoader's refusal was not located at all."""
    with pytest.raises(TypeError) as raised:
        train.main([str(DEMO), '--work-dir', str(tmp_path / 'demo'), '--cfg-options', option])
    message = str(raised.value)
    assert message.startswith(start), message
    assert f'set by --cfg-options {option.split("=")[0]}' in message
    assert fix in message
    assert '_delete_' not in message


def save_progress(path, iteration, epoch):
    """A checkpoint as the checkpoint hook writes it, as far as resuming reads its progress."""
    torch.save({'meta': {'iter': iteration, 'epoch': epoch},
                'state_dict': {'weight': torch.zeros(2)}}, path)


def logged_while(call):
    """The messages of the current logger while ``call()`` runs."""
    from unittest.mock import patch

    from mmengine.logging import MMLogger
    logged = []
    with patch.object(MMLogger.get_current_instance(), 'log',
                      lambda level, message: logged.append(message)):
        call()
    return logged


def test_resume_without_last_checkpoint_takes_the_checkpoint_with_the_most_iterations(
        tmp_path):
    """mmengine finds checkpoints through last_checkpoint alone: with that file deleted (or not
    copied with the checkpoints), --resume said 'no checkpoint yet', started from scratch and
    overwrote them. The newest is the one that records the most iterations: not iter_9.pth
    (a larger number in its name) nor iter_2.pth (written last); a cut-off file is named and
    skipped."""
    save_progress(tmp_path / 'epoch_3.pth', iteration=12, epoch=3)
    save_progress(tmp_path / 'iter_9.pth', iteration=9, epoch=2)
    save_progress(tmp_path / 'iter_2.pth', iteration=2, epoch=0)
    save_progress(tmp_path / 'best_accuracy_epoch_4.pth', iteration=16, epoch=4)
    full = (tmp_path / 'epoch_3.pth').read_bytes()
    (tmp_path / 'epoch_4.pth').write_bytes(full[:len(full) // 2])  # a copy cut off
    cfg = Config(dict(work_dir=str(tmp_path), load_from=None))
    logged = logged_while(lambda: apply_resume(cfg, 'auto'))
    assert cfg.resume is True
    assert cfg.load_from == str(tmp_path / 'epoch_3.pth')
    assert len(logged) == 1
    assert logged[0].startswith(f'{tmp_path}/last_checkpoint is missing (deleted, or not copied '
                                f'with the checkpoints): resuming from {tmp_path}/epoch_3.pth, '
                                f'the checkpoint that records the most iterations (12); '
                                f'skipped, unreadable: epoch_4.pth (not a readable checkpoint')
    assert 'no checkpoint' not in logged[0]


def test_resume_without_last_checkpoint_and_no_readable_checkpoint_is_refused(tmp_path):
    """Starting from scratch would write over the checkpoints there."""
    from fastmim.errors import CheckpointError
    (tmp_path / 'epoch_2.pth').write_bytes(b'')
    torch.save({'state_dict': {}}, tmp_path / 'iter_8.pth')  # no progress recorded
    cfg = Config(dict(work_dir=str(tmp_path), load_from=None))
    with pytest.raises(CheckpointError, match=(
            rf'^{tmp_path}/last_checkpoint is missing and no checkpoint of {tmp_path} can be '
            rf'read: epoch_2\.pth \(not a readable checkpoint: .*\), iter_8\.pth \(records no '
            rf'iteration \(meta\.iter\).*\)\. Name a checkpoint to resume from by its path, or '
            rf'move these away to start over$')):
        apply_resume(cfg, 'auto')


def test_a_run_whose_last_checkpoint_was_deleted_resumes_from_its_checkpoints(tmp_path, runs,
                                                                                tiny_demo):
    """The audit's case end to end: epoch_2.pth and epoch_3.pth of a run of 4 epochs, without
    last_checkpoint; --resume resumed nothing and overwrote them."""
    args = [str(DEMO), '--work-dir', str(tmp_path), '--cfg-options', *tiny_demo.recorded_options]
    result = runs.run(args + ['train_cfg.max_epochs=3'])
    assert result.returncode == 0, result.stderr[-3000:]
    (tmp_path / 'last_checkpoint').unlink()
    result = runs.run(args[:3] + ['--resume'] + args[3:] + ['train_cfg.max_epochs=4'])
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert f'resuming from {tmp_path}/epoch_3.pth, the checkpoint that records the most ' \
           f'iterations (12)' in log
    assert 'resumed epoch: 3, iter: 12' in log
    assert 'no checkpoint' not in log
    assert torch.load(tmp_path / 'epoch_4.pth', weights_only=True)['meta']['iter'] == 16
