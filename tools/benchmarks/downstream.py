"""One command from a FastMIM pre-training checkpoint to its downstream numbers.

    tools/benchmarks/downstream.sh PRETRAIN_CKPT GPUS [finetune|det|seg|all] [--work-dir DIR]
        [--backbone TYPE] [--finetune-config F] [--det-config D] [--seg-config S]
        [--cfg-options k=v ...] [--ft-options k=v ...] [--det-options k=v ...]
        [--seg-options k=v ...] [--trust-checkpoint]

The stages, each ``tools/train.py`` then ``tools/test.py`` (``dist_train.sh`` / ``dist_test.sh``
when GPUS > 1) in ``WORK_DIR/<stage>``:

- ``finetune``: the ImageNet fine-tuning config of the checkpoint's backbone, which is read from
  the checkpoint's ``meta['geometry']`` (written by ``CheckpointMetaHook``; reference-release
  files are recognised too), initialised from PRETRAIN_CKPT;
- ``det`` / ``seg``: the backbone's detection / segmentation config (Swin: Mask R-CNN on COCO,
  ViT: UperNet on ADE20K), its ``model.backbone.init_cfg.checkpoint`` set to the checkpoint the
  fine-tuning stage ended with, as the paper transfers the fine-tuned model.

``det`` and ``seg`` need that checkpoint, so they run ``finetune`` first; ``all`` runs it and every
downstream task the backbone has a config for (a ``--det-config`` or ``--seg-config`` adds one).
``--cfg-options`` reach every stage, ``--ft-options`` / ``--det-options`` / ``--seg-options`` one
stage, after the checkpoint this tool sets, so they can override it. A stage whose work dir holds
its final checkpoint and its metrics JSON is skipped when the command runs again; one whose
training stopped resumes from its last checkpoint. The numbers are the metrics mmengine's test
loop returns (``tools/test.py --out``), collected in ``WORK_DIR/results.md`` and
``results.json``.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# Backbone type (``geometry()['type']``) -> the published config of each stage (repository
# relative). Only ViT-B and Swin-B have downstream recipes in the paper.
RECIPES = {
    'VisionTransformer': dict(
        finetune='configs/finetune/vit_b_ft_100e.py',
        seg='projects/segmentation/configs/upernet_fastmim_vit_b_ade20k_512x512_160k.py'),
    'SwinTransformer': dict(
        finetune='configs/finetune/swin_b_ft_100e.py',
        det='projects/detection/configs/mask_rcnn_fastmim_swin_b_fpn_3x_coco.py'),
    'PyramidVisionTransformerV2': dict(finetune='configs/finetune/pvtv2_b2_ft_100e.py'),
    'CMT': dict(finetune='configs/finetune/cmt_s_ft_100e.py'),
    'EVA02': dict(finetune='configs/finetune/eva02_b_ft_100e.py'),
}
TASK_NAMES = {'det': 'detection', 'seg': 'segmentation'}
# Stage -> (result name, key in the test metrics, factor to percent). mmdet reports AP in [0, 1],
# mmpretrain-style accuracy and mmseg's mIoU are percentages already.
METRICS = {
    'finetune': [('top1', 'accuracy/top1', 1.)],
    'det': [('box_ap', 'coco/bbox_mAP', 100.), ('mask_ap', 'coco/segm_mAP', 100.)],
    'seg': [('miou', 'mIoU', 1.)],
}
COLUMNS = [('top1', 'top-1'), ('box_ap', 'box AP'), ('mask_ap', 'mask AP'), ('miou', 'mIoU')]


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description='Fine-tune a pre-training checkpoint on ImageNet, transfer it to COCO / '
        'ADE20K and report top-1, box AP, mask AP and mIoU')
    parser.add_argument('checkpoint', help='pre-training checkpoint')
    parser.add_argument('gpus', type=int, help='GPUs (CPU processes without a GPU) per stage')
    parser.add_argument('task', nargs='?', default='all',
                        choices=['finetune', 'det', 'seg', 'all'],
                        help='det and seg run finetune first; all (default): finetune and '
                        'every downstream task the backbone has a config for')
    example = 'work_dirs/vit_b/epoch_800.pth'
    parser.add_argument('--work-dir', help=f'default: work_dirs/downstream/<checkpoint folder>_'
                                           f'<checkpoint name> ({example}: '
                                           f'{default_work_dir(example)})')
    parser.add_argument('--backbone', choices=sorted(RECIPES),
                        help="backbone type, when the checkpoint records no meta['geometry']")
    parser.add_argument('--finetune-config', help='instead of the backbone\'s published one')
    parser.add_argument('--det-config', help='detection config (default: by backbone)')
    parser.add_argument('--seg-config', help='segmentation config (default: by backbone)')
    for flag, stage in (('--cfg-options', 'every stage'), ('--ft-options', 'fine-tuning'),
                        ('--det-options', 'detection'), ('--seg-options', 'segmentation')):
        parser.add_argument(flag, nargs='+', action='extend', default=[], metavar='KEY=VALUE',
                            help=f'--cfg-options for {stage} (training and testing)')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='allow full unpickling of PRETRAIN_CKPT (only for files you trust)')
    from fastmim.engine.launch import add_debug_arg
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if args.gpus < 1:
        parser.error(f'GPUS must be at least 1, got {args.gpus}')
    return args


# Weights a pre-training checkpoint never has: a classifier's head, a downstream model's heads.
TRANSFERRED_MODELS = {
    'head.': 'an ImageNet fine-tuned classifier',
    'roi_head.': 'a detection or segmentation model',
    'decode_head.': 'a detection or segmentation model',
}


def read_pretraining_checkpoint(path):
    """The checkpoint's weights in fastmim naming (any format the loaders read), refusing a
    model that was already fine-tuned: the first stage would fine-tune it again."""
    from mmengine.runner.checkpoint import _load_checkpoint

    from fastmim.errors import LaunchError
    from fastmim.models.utils.pretrained import read_checkpoint
    weights = read_checkpoint(_load_checkpoint(path, map_location='cpu'), path)
    for prefix, kind in TRANSFERRED_MODELS.items():
        if any(key.startswith(prefix) for key in weights.state):
            raise LaunchError(
                f'{path} is {kind} (it has {prefix}*), not a pre-training checkpoint: its '
                f'finetune stage would train an ImageNet classifier from it again. To start a '
                f'detection or segmentation config from it, give it to the config directly: '
                f'tools/train.py CONFIG --cfg-options model.backbone.init_cfg.checkpoint={path}')
    return weights


def backbone_type(path, weights=None):
    """The backbone type recorded in a pre-training checkpoint's ``meta['geometry']``."""
    from fastmim.errors import LaunchError
    geometry = (weights or read_pretraining_checkpoint(path)).geometry
    if not geometry or 'type' not in geometry:
        raise LaunchError(f"{path} records no backbone (meta['geometry']): name it with "
                          f"--backbone {{{','.join(sorted(RECIPES))}}}")
    return geometry['type']


def stage_configs(args, backbone):
    """``{stage: config path}`` of the stages ``args.task`` asks for, in running order."""
    from fastmim.errors import LaunchError
    recipe = {stage: osp.join(ROOT, path) for stage, path in RECIPES.get(backbone, {}).items()}
    given = {'finetune': args.finetune_config, 'det': args.det_config, 'seg': args.seg_config}
    recipe.update({stage: path for stage, path in given.items() if path})
    if 'finetune' not in recipe:
        raise LaunchError(f'no fine-tuning config for a {backbone} backbone: give one with '
                          f'--finetune-config')
    if args.task == 'all':
        tasks = [task for task in TASK_NAMES if task in recipe]
    else:
        tasks = [] if args.task == 'finetune' else [args.task]
    for task in tasks:
        if task not in recipe:
            raise LaunchError(f'no {TASK_NAMES[task]} config for a {backbone} backbone: give '
                              f'one with --{task}-config')
    return {stage: recipe[stage] for stage in ['finetune'] + tasks}


def final_checkpoint(config, options, work_dir):
    """The checkpoint mmengine's CheckpointHook writes last (``save_last``) in ``work_dir``:
    ``iter_<max_iters>.pth`` for iteration-based training, else ``epoch_<max_epochs>.pth``.
    The options are parsed as tools/train.py parses them."""
    from fastmim.engine.config_loading import load_config
    from fastmim.engine.launch import CfgOptionsAction
    parser = argparse.ArgumentParser()
    parser.add_argument('--options', nargs='+', action=CfgOptionsAction)
    cfg = load_config(config, parser.parse_args(['--options', *options]).options)
    train_cfg = cfg.train_cfg
    if 'max_iters' in train_cfg:
        return osp.join(work_dir, f'iter_{train_cfg.max_iters}.pth')
    return osp.join(work_dir, f'epoch_{train_cfg.max_epochs}.pth')


def run_step(command, what):
    """Run one tool as a separate process (a fresh interpreter and device per step, as a user
    runs them), its output going straight to ours; stop the chain if it fails."""
    from fastmim.engine.hooks import PREEMPTED_EXIT_STATUS
    from fastmim.errors import LaunchError
    print(f'[downstream] {what}: {" ".join(command)}', flush=True)
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        filter(None, [ROOT, os.environ.get('PYTHONPATH')])), 'PYTHON': sys.executable}
    status = subprocess.run(command, env=env).returncode
    if status == PREEMPTED_EXIT_STATUS:
        # Run the same command again to resume: the stage continues from its last checkpoint.
        print(f'[downstream] {what} was preempted', file=sys.stderr, flush=True)
        sys.exit(status)
    if status != 0:
        raise LaunchError(f'{what} failed (exit status {status}); its output is above')


def tool_command(tool, gpus, positional):
    if gpus == 1:
        return [sys.executable, osp.join(ROOT, 'tools', f'{tool}.py'), *positional]
    return ['bash', osp.join(ROOT, 'tools', f'dist_{tool}.sh'), *positional, str(gpus)]


def run_stage(stage, config, init_checkpoint, args, work_dir):
    """Train and test one stage unless its work dir shows it finished; return its checkpoint
    and the test metrics."""
    from fastmim.errors import LaunchError
    stage_dir = osp.join(work_dir, stage)
    per_stage = {'finetune': args.ft_options, 'det': args.det_options, 'seg': args.seg_options}
    options = [f'model.backbone.init_cfg.checkpoint={init_checkpoint}', *args.cfg_options,
               *per_stage[stage]]
    checkpoint = final_checkpoint(config, options, stage_dir)
    metrics_file = osp.join(stage_dir, 'metrics.json')

    if osp.isfile(checkpoint) and osp.isfile(metrics_file):
        print(f'[downstream] {stage}: finished before ({checkpoint}, {metrics_file})', flush=True)
    else:
        if not osp.isfile(checkpoint):
            train = ['--work-dir', stage_dir]
            if osp.isfile(osp.join(stage_dir, 'last_checkpoint')):
                train.append('--resume')
            if stage == 'finetune' and args.trust_checkpoint:
                train += ['--trust-checkpoint', init_checkpoint]
            run_step(tool_command('train', args.gpus, [config]) + train +
                     ['--cfg-options', *options], f'{stage} training')
            if not osp.isfile(checkpoint):
                raise LaunchError(f'{stage} training ended without its final checkpoint '
                                  f'{checkpoint}')
        run_step(tool_command('test', args.gpus, [config, checkpoint]) +
                 ['--work-dir', osp.join(stage_dir, 'test'), '--out', metrics_file,
                  '--cfg-options', *options], f'{stage} testing')

    with open(metrics_file) as f:
        metrics = json.load(f)
    results = {}
    for name, key, factor in METRICS[stage]:
        if key not in metrics:
            raise LaunchError(f'{metrics_file} has no {key!r} (it has {sorted(metrics)}): is '
                              f'{config} a {stage} config?')
        results[name] = metrics[key] * factor
    return dict(config=config, checkpoint=checkpoint, metrics=metrics), results


def markdown_table(pretrain, backbone, results):
    def cell(name):
        return f'{results[name]:.2f}' if name in results else '-'
    header = ['pre-training checkpoint', 'backbone'] + [title for _, title in COLUMNS]
    row = [pretrain, backbone] + [cell(name) for name, _ in COLUMNS]
    return '\n'.join(['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header),
                      '| ' + ' | '.join(row) + ' |']) + '\n'


def default_work_dir(pretrain: str) -> str:
    """``work_dirs/downstream/<checkpoint folder>_<checkpoint name>``: the folder names the
    run, since every run's checkpoints are called ``epoch_N.pth``."""
    name = '_'.join([osp.basename(osp.dirname(osp.abspath(pretrain))),
                     osp.splitext(osp.basename(pretrain))[0]])
    return osp.join('work_dirs', 'downstream', name)


def main(argv):
    args = parse_args(argv)
    import fastmim  # noqa: F401  weights-only checkpoint loading
    from fastmim.engine.checkpoint import trust_checkpoint
    from fastmim.engine.launch import check_work_dir
    from fastmim.errors import LaunchError

    if not osp.isfile(args.checkpoint):
        raise LaunchError(f'pre-training checkpoint not found: {args.checkpoint}')
    pretrain = osp.abspath(args.checkpoint)
    if args.trust_checkpoint:
        trust_checkpoint(pretrain)
    weights = read_pretraining_checkpoint(pretrain)
    backbone = args.backbone or backbone_type(pretrain, weights)
    configs = stage_configs(args, backbone)
    work_dir = osp.abspath(args.work_dir or default_work_dir(pretrain))
    check_work_dir(work_dir)

    stages, results = {}, {}
    init_checkpoint = pretrain
    for stage, config in configs.items():
        stages[stage], stage_results = run_stage(stage, config, init_checkpoint, args, work_dir)
        results.update(stage_results)
        if stage == 'finetune':
            init_checkpoint = stages[stage]['checkpoint']

    table = markdown_table(args.checkpoint, backbone, results)
    with open(osp.join(work_dir, 'results.md'), 'w') as f:
        f.write(table)
    with open(osp.join(work_dir, 'results.json'), 'w') as f:
        json.dump(dict(pretrain_checkpoint=pretrain, backbone=backbone,
                       results={name: results.get(name) for name, _ in COLUMNS},
                       stages=stages), f, indent=2)
    print(f'\n{table}\n[downstream] {osp.join(work_dir, "results.md")}, results.json',
          flush=True)
    return results


if __name__ == '__main__':
    sys.path.insert(0, ROOT)
    from fastmim.engine.launch import run_cli
    run_cli(main)
