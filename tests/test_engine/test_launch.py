"""The command-line arguments tools/train.py and tools/test.py share (fastmim.engine.launch)."""
import argparse
import os

import pytest
import torch

from mmengine.config import Config

from fastmim.engine import launch
from fastmim.engine.launch import (add_launch_args, added_keys, apply_launch_args, load_config,
                                   parse_launch_args)


def parse(argv):
    return parse_launch_args(add_launch_args(argparse.ArgumentParser()), argv)


def test_local_rank_of_torch_distributed_launch_reaches_mmengine(monkeypatch):
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    parse(['x.py', '--local-rank', '3'])  # torch.distributed.launch appends it
    assert os.environ['LOCAL_RANK'] == '3'
    parse(['x.py', '--local_rank', '5'])  # a LOCAL_RANK already set (torchrun's) is kept
    assert os.environ['LOCAL_RANK'] == '3'


def test_work_dir_from_the_command_line_else_the_config_else_its_name():
    args = parse(['configs/a/b_config.py', '--cfg-options', 'x=1', '--launcher', 'pytorch'])
    assert args.cfg_options == {'x': 1}
    cfg = Config(dict())
    apply_launch_args(cfg, args)
    assert (cfg.launcher, cfg.work_dir) == ('pytorch', os.path.join('work_dirs', 'b_config'))
    cfg = Config(dict(work_dir='mine'))
    apply_launch_args(cfg, args)
    assert cfg.work_dir == 'mine'
    apply_launch_args(cfg, parse(['b_config.py', '--work-dir', 'there']))
    assert cfg.work_dir == 'there'


def test_cfg_options_keys_the_config_lacks_are_named_with_the_close_existing_ones():
    cfg = Config(dict(train_dataloader=dict(batch_size=2, num_workers=1),
                      train_pipeline=[dict(type='LoadImageRGB'), dict(type='Crop', size=8)]))
    options = {'train_dataloader.batch_sise': 4, 'train_dataloader.num_workers': 2,
               'train_pipeline.1.size': 16, 'train_pipeline.1.sise': 16,
               'model.backbone.drop_path_rate': 0.1}
    assert added_keys(cfg, options) == [('train_dataloader.batch_sise', ['batch_size']),
                                        ('train_pipeline.1.sise', ['size']),
                                        ('model', [])]


def test_load_config_warns_about_an_added_key_and_still_adds_it(tmp_path, monkeypatch):
    logged = []
    monkeypatch.setattr(launch, 'print_log', lambda message, **kwargs: logged.append(message))
    config = tmp_path / 'tiny.py'
    config.write_text('train_dataloader = dict(batch_size=2)\n')
    cfg = load_config(str(config), {'train_dataloader.batch_sise': 4})
    assert cfg.train_dataloader.batch_sise == 4  # mmengine's semantics are kept
    assert logged == [f'--cfg-options train_dataloader.batch_sise: {config} has no such key, '
                      'it is added (did you mean batch_size?)']
    load_config(str(config), {'train_dataloader.batch_size': 4})
    assert len(logged) == 1


@pytest.mark.parametrize('broken', ['top', 'base'])
def test_a_config_that_is_no_valid_python_is_named(tmp_path, broken):
    base, top = tmp_path / 'base.py', tmp_path / 'top.py'
    base.write_text('x = 1\n' if broken == 'top' else 'x = 1\ny = dict(\n')
    top.write_text("_base_ = ['./base.py']\n" + ('z = (1,\n' if broken == 'top' else 'z = 2\n'))
    expected = (rf'{top}, line 2: .*never closed: z = \(1,' if broken == 'top' else
                rf'a _base_ file of {top}, line 2: .*never closed: y = dict\(')
    with pytest.raises(launch.LaunchError, match=expected):
        load_config(str(top))


class _BrokenDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        raise ValueError(f'sample {index}: no readable image')


def test_an_error_in_a_dataloader_worker_ends_in_its_own_one_line(capsys):
    def main(argv):
        next(iter(torch.utils.data.DataLoader(_BrokenDataset(), num_workers=1)))

    with pytest.raises(SystemExit):
        launch.run_cli(main, [])
    assert capsys.readouterr().err == 'error: ValueError: sample 0: no readable image\n'
