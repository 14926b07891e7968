"""mmengine's notices about the FileClient it builds and does not use: shown by no logger
(fastmim.engine.unused_file_client), while other warnings, and the notice of a FileClient that
file_client_args make, are shown.

mmengine 0.10 logs them with ``print_log(..., logger='current')``: to the MMLogger made last,
whichever that is. Each case below makes a fresh one current, as another run, a tool's own
logger or mmengine's default logger would be, and triggers mmengine's own code."""
import logging
from collections import OrderedDict
from types import SimpleNamespace

import pytest
import torch
from mmengine.fileio import FileClient
from mmengine.hooks import CheckpointHook, LoggerHook
from mmengine.logging import MMLogger, print_log
from mmengine.runner.checkpoint import save_checkpoint

import fastmim  # noqa: F401  installs what is tested

NOTICES = ('"FileClient" will be deprecated', '"HardDiskBackend" is the alias')


def checkpoint_hook_before_train(folder):
    CheckpointHook().before_train(
        SimpleNamespace(work_dir=str(folder), logger=MMLogger.get_current_instance()))


def save_a_checkpoint(folder):
    save_checkpoint({'weight': torch.zeros(1)}, str(folder / 'saved.pth'))


def logger_hook_with_out_dir(folder):
    LoggerHook(out_dir=str(folder))


UNUSED_CLIENTS = [checkpoint_hook_before_train, save_a_checkpoint, logger_hook_with_out_dir]


@pytest.fixture
def fresh_loggers(monkeypatch):
    """mmengine's table of MMLoggers, empty for the test and restored after it; the HardDisk
    backend that FileClient keeps from an earlier test forgotten, so that it is made (and
    announced) again."""
    monkeypatch.setattr(MMLogger, '_instance_dict', OrderedDict())
    monkeypatch.setattr(FileClient, '_instances', {})


def make_current(kind):
    """The logger that ``print_log(logger='current')`` reaches: mmengine's default one (no
    other made yet), or a named one made after a run's logger."""
    if kind == 'default':
        return MMLogger.get_current_instance()
    MMLogger.get_instance('the run', logger_name='run')
    return MMLogger.get_instance('made during the run', logger_name='later')


@pytest.mark.parametrize('kind', ['default', 'made after the run'])
@pytest.mark.parametrize('build', UNUSED_CLIENTS)
def test_an_unused_file_client_is_announced_on_no_logger(fresh_loggers, tmp_path, capsys, kind,
                                                         build):
    logger = make_current(kind)
    build(tmp_path)
    print_log('an unrelated warning', logger='current', level=logging.WARNING)
    shown = capsys.readouterr().out
    assert f'{logger.name} - WARNING - an unrelated warning' in shown, shown
    assert not [notice for notice in NOTICES if notice in shown], shown
    assert not logger.filters  # nothing held back after mmengine's call


def test_a_file_client_made_from_file_client_args_is_still_announced(fresh_loggers, capsys):
    """Set in a config (mmcv's LoadImageFromFile(file_client_args=...)), the client is used:
    its deprecation is something the user can act on."""
    make_current('made after the run')
    FileClient.infer_client(dict(backend='disk'))
    shown = capsys.readouterr().out
    assert all(notice in shown for notice in NOTICES), shown
