"""The command-line arguments tools/train.py and tools/test.py share (fastmim.engine.launch)."""
import argparse
import os

from mmengine.config import Config

from fastmim.engine.launch import add_launch_args, apply_launch_args, parse_launch_args


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
