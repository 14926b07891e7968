"""Evaluate a checkpoint with any config that has a test loop (classification, kNN, mmdet, mmseg).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...]
                                           [--launcher {none,pytorch,slurm,mpi}]
"""
import argparse
import os
import os.path as osp

from mmengine.config import DictAction


def parse_args(argv):
    parser = argparse.ArgumentParser(description='Evaluate a checkpoint')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where logs and results go')
    parser.add_argument('--out', help='dump the metrics to this JSON file')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='allow full unpickling of CHECKPOINT (only for files you trust)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. test_dataloader.batch_size=64')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv):
    args = parse_args(argv)
    import fastmim  # noqa: F401
    from fastmim.engine.checkpoint import trust_checkpoint
    from fastmim.engine.dataset_paths import check_dataset_paths
    from fastmim.engine.launch import (LaunchError, adapt_to_device, check_launcher_env,
                                       check_work_dir, init_cpu_distributed, load_config)
    from fastmim.engine.mmcv_ops import check_mmcv_cuda_ops

    check_launcher_env(args.launcher)
    if not osp.isfile(args.checkpoint):
        raise LaunchError(f'checkpoint not found: {args.checkpoint}')
    cfg = load_config(args.config, args.cfg_options)
    if cfg.get('test_dataloader') is None:
        raise LaunchError(f'{args.config} has no test_dataloader/test_evaluator: '
                          'nothing to evaluate')
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    cfg.resume = False
    check_mmcv_cuda_ops(cfg)
    check_dataset_paths(cfg, ['test'])
    check_work_dir(cfg.work_dir)
    if args.trust_checkpoint:
        trust_checkpoint(args.checkpoint)
    adapt_to_device(cfg)
    init_cpu_distributed(args.launcher, cfg.get('env_cfg', {}).get('dist_cfg'))

    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    metrics = runner.test()
    if args.out:
        import json
        with open(args.out, 'w') as f:
            json.dump({key: float(value) for key, value in metrics.items()}, f, indent=2)
    return metrics


if __name__ == '__main__':
    from fastmim.engine.launch import run_cli
    run_cli(main)
