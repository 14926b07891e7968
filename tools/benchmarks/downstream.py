"""One command from a FastMIM pre-training checkpoint to its downstream numbers.

    tools/benchmarks/downstream.sh PRETRAIN_CKPT GPUS [finetune|det|seg|all] [--work-dir DIR]
        [--backbone TYPE] [--finetune-config F] [--det-config D] [--seg-config S]
        [--cfg-options k=v ...] [--ft-options k=v ...] [--det-options k=v ...]
        [--seg-options k=v ...] [--trust-checkpoint] [--restart STAGE ...]

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
training stopped resumes from its last checkpoint; both only when the stage was begun with the
same init checkpoint (by content), config (the settings it composes to, bases included) and
options, which a stage records in ``WORK_DIR/<stage>/started_with.json`` when it starts. Else
the command stops before anything runs, naming what differs (``--restart STAGE`` starts a
stage over, moving its old files aside). Each stage's dataset paths (the splits it will
read) are checked before any stage runs, and a ``--cfg-options`` key that only another stage's
config has is named with that stage's flag: a missing COCO would otherwise stop det after the
whole fine-tuning, and such a key the fine-tuning once its Runner is built. The numbers are the
metrics mmengine's test loop returns (``tools/test.py --out``), collected in
``WORK_DIR/results.md`` and ``results.json``.
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# Configs the project ships for a backbone without a published recipe of that stage: named when
# the stage is asked for, never run by default.
UNPUBLISHED = {
    ('VisionTransformer', 'det'):
        'projects/detection/configs/mask_rcnn_fastmim_vit_b_simple_fpn_lsj_coco.py',
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


class ExtendOptions(argparse._ExtendAction):
    """Collects a stage's ``KEY=VALUE`` items as given (each stage's tools parse them), and
    refuses an item without ``KEY=`` under the flag the user typed: otherwise it would be
    refused only when the items are first parsed, by a parser of this tool's own whose error
    names an ``--options`` flag no user has given."""

    def __call__(self, parser, namespace, values, option_string=None):
        for item in values:
            key, equals, _ = item.partition('=')
            if not (key and equals):
                parser.error(f'argument {option_string}: expected KEY=VALUE, got {item!r}')
        super().__call__(parser, namespace, values, option_string)


def gpu_count(text):
    """GPUS as argparse reads it; a word names the order of the arguments, since the usual
    slip is a stage typed where the count goes (``downstream.sh CKPT det``)."""
    try:
        gpus = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'{text!r} is not a number of GPUs; the arguments are CHECKPOINT GPUS '
            f'[finetune|det|seg|all] (e.g. CKPT 8 det)') from None
    if gpus < 1:
        raise argparse.ArgumentTypeError(f'at least 1 GPU, got {gpus}')
    return gpus


def parse_args(argv):
    from fastmim.cli import add_debug_arg, add_trust_checkpoint_arg
    from fastmim.recipes import RECIPES
    parser = argparse.ArgumentParser(
        description='Fine-tune a pre-training checkpoint on ImageNet, transfer it to COCO / '
        'ADE20K and report top-1, box AP, mask AP and mIoU')
    parser.add_argument('checkpoint', help='pre-training checkpoint')
    parser.add_argument('gpus', type=gpu_count, help='GPUs (CPU processes without a GPU) per stage')
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
        parser.add_argument(flag, nargs='+', action=ExtendOptions, default=[],
                            metavar='KEY=VALUE',
                            help=f'--cfg-options for {stage} (training and testing)')
    add_trust_checkpoint_arg(parser, 'PRETRAIN_CKPT')
    parser.add_argument('--restart', nargs='+', action='extend', default=[],
                        choices=['finetune', 'det', 'seg'], metavar='STAGE',
                        help='start these stages over (finetune: also the stages that start '
                        'from its checkpoint), moving their old work dir WORK_DIR/<stage> to '
                        'WORK_DIR/<stage>.replaced-<time>; needed when a stage was begun with '
                        'another checkpoint, config or options')
    add_debug_arg(parser)
    return parser.parse_args(argv)


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
    from fastmim.recipes import RECIPES
    geometry = (weights or read_pretraining_checkpoint(path)).geometry
    if not geometry or 'type' not in geometry:
        raise LaunchError(f"{path} records no backbone (meta['geometry']): name it with "
                          f"--backbone {{{','.join(sorted(RECIPES))}}}")
    return geometry['type']


def stage_configs(args, backbone):
    """``{stage: config path}`` of the stages ``args.task`` asks for, in running order: the
    backbone's published recipe (:mod:`fastmim.recipes`), then the configs ``args`` give."""
    from fastmim.errors import LaunchError
    from fastmim.recipes import RECIPES
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
            shipped = UNPUBLISHED.get((backbone, task))
            hint = (f' (the project ships --{task}-config {shipped}, not a published FastMIM '
                    'recipe)') if shipped else ''
            raise LaunchError(f'no {TASK_NAMES[task]} config for a {backbone} backbone: give '
                              f'one with --{task}-config{hint}')
    return {stage: recipe[stage] for stage in ['finetune'] + tasks}


def parse_options(options):
    """``KEY=VALUE`` items as a ``{key: value}`` dict, parsed as tools/train.py parses them."""
    from fastmim.cli import CfgOptionsAction
    parser = argparse.ArgumentParser()
    parser.add_argument('--options', nargs='+', action=CfgOptionsAction, default={})
    return parser.parse_args(['--options', *options] if options else []).options


def load_stage_config(config, options):
    """A stage's config with its options applied, as its tools load it."""
    from fastmim.engine.config_loading import load_config
    return load_config(config, parse_options(options))


def last_checkpoint_of(cfg, work_dir):
    """The checkpoint mmengine's CheckpointHook writes last (``save_last``) in ``work_dir``
    for the loaded ``cfg``: ``iter_<max_iters>.pth`` for iteration-based training, else
    ``epoch_<max_epochs>.pth``."""
    train_cfg = cfg.train_cfg
    if 'max_iters' in train_cfg:
        return osp.join(work_dir, f'iter_{train_cfg.max_iters}.pth')
    return osp.join(work_dir, f'epoch_{train_cfg.max_epochs}.pth')


def final_checkpoint(config, options, work_dir):
    """:func:`last_checkpoint_of` the config with its options."""
    return last_checkpoint_of(load_stage_config(config, options), work_dir)


def refuse_options_of_another_stage(configs, args):
    """Refuse a ``--cfg-options`` key that a stage's config lacks (and its class takes as no
    argument) where another stage's config has it: meant for that stage (a COCO data root),
    it reaches every stage, and the first without it would fail when its training builds the
    Runner, after the fine-tuning when that one is det. Named with the flag of the stages
    that have it. A config that is not there is left to the stage's own check, which names it
    as every tool does."""
    from mmengine.config import Config

    from fastmim.config_file import check_config_file
    from fastmim.engine.config_keys import added_arguments
    from fastmim.engine.config_loading import follow_key, packaged_config_file
    from fastmim.errors import LaunchError
    options = parse_options(args.cfg_options)
    if not options:
        return
    try:
        files = {stage: packaged_config_file(config) for stage, config in configs.items()}
        for stage, config in configs.items():
            check_config_file(files[stage], given=config)
    except (OSError, ValueError):
        return
    trees = {stage: Config.fromfile(path, import_custom_modules=False).to_dict()
             for stage, path in files.items()}
    for key, value in options.items():
        having = [stage for stage, tree in trees.items()
                  if follow_key(tree, key)[1] == len(key.split('.'))]
        lacking = [stage for stage in trees if stage not in having
                   and not added_arguments(trees[stage], {key: value})]
        if having and lacking:
            stage = lacking[0]
            raise LaunchError(
                f'--cfg-options {key}: every stage takes --cfg-options, and the {stage} config '
                f'{configs[stage]} has no such key; the {" and ".join(having)} '
                f'config{"s have" if len(having) > 1 else " has"} it: give it with '
                f'{" / ".join(STAGE_FLAGS[name] for name in having)} {key}=...')


def check_stage_data(stage, config, init_checkpoint, args, work_dir):
    """Refuse the missing dataset paths of the splits a stage will read (none when it has
    finished, the test split when only its testing is left), under the stage's options flag:
    its tools check them only when they build the Runner, which for det and seg comes after
    the whole fine-tuning."""
    from fastmim.engine.dataset_paths import check_dataset_paths
    from fastmim.errors import LaunchError
    stage_dir = osp.join(work_dir, stage)
    cfg = load_stage_config(config, stage_options(stage, init_checkpoint, args))
    if osp.isfile(last_checkpoint_of(cfg, stage_dir)):
        splits = [] if osp.isfile(osp.join(stage_dir, 'metrics.json')) else ['test']
    else:
        splits = ['train', 'val', 'test'] if cfg.get('val_cfg') else ['train', 'test']
    try:
        check_dataset_paths(cfg, splits)
    except LaunchError as error:
        # The check advises tools/train.py's --cfg-options; this tool's flag of the stage
        # reaches them.
        message = str(error).replace('--cfg-options ', f'{STAGE_FLAGS[stage]} ')
        raise LaunchError(f'{stage} stage ({config}): {message}') from None


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


# What a stage was begun with, in its work dir: a finished or interrupted stage is kept only when
# the command asks for the same again.
STARTED_WITH = 'started_with.json'
INIT_KEY = 'model.backbone.init_cfg.checkpoint'
STAGE_FLAGS = {'finetune': '--ft-options', 'det': '--det-options', 'seg': '--seg-options'}


def stage_options(stage, init_checkpoint, args):
    """The --cfg-options of a stage's training and testing: the checkpoint this tool starts it
    from, then the user's (which may override it)."""
    per_stage = {'finetune': args.ft_options, 'det': args.det_options, 'seg': args.seg_options}
    return [f'{INIT_KEY}={init_checkpoint}', *args.cfg_options, *per_stage[stage]]


def file_identity(path, known=None):
    """Resolved path, size, mtime and SHA-256 of a file (``sha256`` None for one that is not
    there, e.g. a URL or a checkpoint still to be trained). The SHA-256 is taken from
    ``known`` (an earlier identity) when path, size and mtime are unchanged: a rerun does not
    read a checkpoint of a GB again."""
    if '://' in path:
        return dict(path=path, sha256=None)
    path = osp.realpath(path)
    if not osp.isfile(path):
        return dict(path=path, sha256=None)
    stat = os.stat(path)
    if known and known.get('sha256') and (known.get('path'), known.get('size'),
                                           known.get('mtime_ns')) == (
                                               path, stat.st_size, stat.st_mtime_ns):
        sha256 = known['sha256']
    else:
        from fastmim.fileio import file_sha256
        sha256 = file_sha256(path)
    return dict(path=path, size=stat.st_size, mtime_ns=stat.st_mtime_ns, sha256=sha256)


def init_checkpoint_of(options):
    """The checkpoint a stage's backbone starts from: the last ``model.backbone.init_cfg.
    checkpoint`` option (PRETRAIN_CKPT for finetune, the fine-tuned checkpoint det / seg chain
    from, unless a user option overrides it)."""
    return [option.split('=', 1)[1] for option in options if option.startswith(INIT_KEY + '=')][-1]


def composed_config_sha256(config):
    """SHA-256 of the settings ``config`` composes to, its ``_base_`` files included (an edit of
    a base config changes a stage's numbers as much as one of the file itself). Taken from the
    settings, not the text, so that a comment or a reformatting does not count as a change."""
    from mmengine.config import Config
    settings = Config.fromfile(config, import_custom_modules=False).to_dict()
    text = json.dumps(settings, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def started_with(config, options, known=None):
    """What a stage is begun with: its config file and the settings it composes to, its init
    checkpoint and the user's options (``known``: the record of an earlier start, whose hashes
    serve for unchanged files)."""
    known = known or {}
    config_identity = file_identity(config, known.get('config'))
    if config_identity['sha256'] is not None:
        config_identity['composed_sha256'] = composed_config_sha256(config)
    return dict(config=config_identity,
                init_checkpoint=file_identity(init_checkpoint_of(options),
                                              known.get('init_checkpoint')),
                options=list(options[1:]))


def describe_file(identity):
    if identity.get('sha256') is None:
        return f'{identity["path"]} (no such file now)'
    return f'{identity["path"]} (sha256 {identity["sha256"][:12]}, {identity["size"]} bytes)'


def differences(old, new):
    """What ``new`` (a :func:`started_with`) changes of ``old``, one phrase each."""
    found = []
    old_config, new_config = old.get('config', {}), new['config']
    if (old_config.get('path'), old_config.get('sha256')) != (new_config['path'],
                                                              new_config['sha256']):
        found.append(f'config: begun with {describe_file(old_config)}, now '
                     f'{describe_file(new_config)}')
    elif 'composed_sha256' in old_config and (old_config['composed_sha256'] !=
                                              new_config.get('composed_sha256')):
        # (A record without composed_sha256 compares the file only.)
        found.append(f'config: {new_config["path"]} is unchanged but composes to other '
                     f'settings than when the stage began (a _base_ file it inherits changed)')
    old_init, new_init = old.get('init_checkpoint', {}), new['init_checkpoint']
    # The checkpoint's content, not its name, gives the numbers: a copied or moved file is the
    # same one (the table shows the name this command gives).
    same = (old_init.get('sha256') == new_init['sha256'] if new_init['sha256'] else
            (old_init.get('sha256'), old_init.get('path')) == (None, new_init['path']))
    if not same:
        found.append(f'init checkpoint: begun with {describe_file(old_init)}, now '
                     f'{describe_file(new_init)}')
    if old.get('options') != new['options']:
        found.append(f'options: begun with {old.get("options")}, now {new["options"]}')
    return found


def check_stage(stage, config, init_checkpoint, args, work_dir):
    """Whether the stage's work dir holds a run (final checkpoint, metrics or an interrupted
    training) of this command; stop when it holds one begun with another init checkpoint,
    config or options, or one that recorded nothing."""
    from fastmim.errors import LaunchError
    stage_dir = osp.join(work_dir, stage)
    options = stage_options(stage, init_checkpoint, args)
    files = [final_checkpoint(config, options, stage_dir), osp.join(stage_dir, 'metrics.json'),
             osp.join(stage_dir, 'last_checkpoint')]
    if not any(osp.exists(path) for path in files):
        return False
    way_out = (f'use another --work-dir, or --restart {stage} to start the stage over (its '
               f'files move to {stage_dir}.replaced-<time>)')
    record_file = osp.join(stage_dir, STARTED_WITH)
    try:
        with open(record_file) as f:
            old = json.load(f)
    except (OSError, ValueError) as error:
        why = 'none' if isinstance(error, FileNotFoundError) else f'unreadable: {error}'
        raise LaunchError(f'{stage} stage: {stage_dir} holds a run but no record of what it was '
                          f'begun with ({record_file}: {why}), so its numbers may not be this '
                          f'checkpoint\'s: {way_out}') from None
    found = differences(old, started_with(config, options, known=old))
    if found:
        raise LaunchError(f'{stage} stage: {stage_dir} holds a run begun with something else ('
                          f'{"; ".join(found)}); keeping it would report its numbers under '
                          f'this command: {way_out}')
    return True


def restart_stages(plan, args, work_dir):
    """Move the work dir of each ``--restart`` stage aside; restarting finetune restarts the
    stages whose init checkpoint is its final checkpoint."""
    from fastmim.errors import LaunchError
    stages = {stage for stage, _, _ in plan}
    unknown = sorted(set(args.restart) - stages)
    if unknown:
        raise LaunchError(f'--restart {" ".join(unknown)}: not a stage of this command '
                          f'(its stages: {", ".join(stage for stage, _, _ in plan)})')
    restart = set(args.restart)
    if 'finetune' in restart:
        finetune_config, finetune_init = plan[0][1], plan[0][2]
        finetuned = osp.realpath(final_checkpoint(
            finetune_config, stage_options('finetune', finetune_init, args),
            osp.join(work_dir, 'finetune')))
        for stage, _, init_checkpoint in plan[1:]:
            init = init_checkpoint_of(stage_options(stage, init_checkpoint, args))
            if osp.realpath(init) == finetuned:
                restart.add(stage)
    stamp = time.strftime('%Y%m%d_%H%M%S')
    for stage, _, _ in plan:
        stage_dir = osp.join(work_dir, stage)
        if stage in restart and osp.exists(stage_dir):
            aside, n = f'{stage_dir}.replaced-{stamp}', 1
            while osp.exists(aside):
                aside, n = f'{stage_dir}.replaced-{stamp}-{n}', n + 1
            os.rename(stage_dir, aside)
            print(f'[downstream] {stage}: starting over, its old files moved to {aside}',
                  flush=True)


def run_stage(stage, config, init_checkpoint, args, work_dir):
    """Train and test one stage unless its work dir shows it finished; return its checkpoint
    and the test metrics. A stage begun before must have been begun with the same init
    checkpoint, config and options (:func:`check_stage`); one that starts records them."""
    from fastmim.errors import LaunchError
    stage_dir = osp.join(work_dir, stage)
    options = stage_options(stage, init_checkpoint, args)
    checkpoint = final_checkpoint(config, options, stage_dir)
    metrics_file = osp.join(stage_dir, 'metrics.json')
    record_file = osp.join(stage_dir, STARTED_WITH)
    if not check_stage(stage, config, init_checkpoint, args, work_dir):
        write_json(started_with(config, options), record_file)

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

    try:
        with open(metrics_file) as f:
            metrics = json.load(f)
    except ValueError as error:  # not tools/test.py's (atomic) writing: by hand, or older
        raise LaunchError(f'{metrics_file} does not parse ({error}): remove it to test the '
                          f'{stage} stage again') from None
    results = {}
    for name, key, factor in METRICS[stage]:
        if key not in metrics:
            raise LaunchError(f'{metrics_file} has no {key!r} (it has {sorted(metrics)}): is '
                              f'{config} a {stage} config?')
        results[name] = metrics[key] * factor
    with open(record_file) as f:
        record = json.load(f)
    return dict(config=config, checkpoint=checkpoint, metrics=metrics,
                started_with=record), results


def write_text(text, path):
    """Replace ``path`` atomically (a temporary file in its folder, made if missing, then
    ``os.replace``): a run killed or failing while writing leaves the earlier file whole, never
    a half one that the next run reads (``started_with.json``) or a user trusts (results)."""
    from fastmim.fileio import AtomicLocalBackend
    AtomicLocalBackend().put_text(text, path)


def write_json(obj, path):
    write_text(json.dumps(obj, indent=2), path)


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
    from fastmim.engine.checkpoint import check_checkpoint_file, trust_checkpoint
    from fastmim.file_checks import check_work_dir

    # The loader's words: a folder is named with the checkpoints in it (a work dir given as
    # CHECKPOINT), a missing file with the newest beside it.
    check_checkpoint_file(args.checkpoint)
    pretrain = osp.abspath(args.checkpoint)
    if args.trust_checkpoint:
        trust_checkpoint(pretrain)
    weights = read_pretraining_checkpoint(pretrain)
    backbone = args.backbone or backbone_type(pretrain, weights)
    configs = stage_configs(args, backbone)
    refuse_options_of_another_stage(configs, args)
    work_dir = osp.abspath(args.work_dir or default_work_dir(pretrain))
    check_work_dir(work_dir)

    # Each stage with the checkpoint it starts from: det and seg the one finetune ends with.
    plan, init_checkpoint = [], pretrain
    for stage, config in configs.items():
        plan.append((stage, config, init_checkpoint))
        if stage == 'finetune':
            init_checkpoint = final_checkpoint(
                config, stage_options(stage, pretrain, args), osp.join(work_dir, stage))
    restart_stages(plan, args, work_dir)
    # Every stage is checked before any runs: det / seg begun from another fine-tuned
    # checkpoint, or without their data, stop the command now, not after finetune has trained.
    # Every config is read (and named when it is not there) before any data is looked for.
    for stage, config, init in plan:
        check_stage(stage, config, init, args, work_dir)
    for stage, config, init in plan:
        check_stage_data(stage, config, init, args, work_dir)

    stages, results = {}, {}
    for stage, config, init in plan:
        stages[stage], stage_results = run_stage(stage, config, init, args, work_dir)
        results.update(stage_results)

    table = markdown_table(args.checkpoint, backbone, results)
    write_text(table, osp.join(work_dir, 'results.md'))
    write_json(dict(pretrain_checkpoint=pretrain, backbone=backbone,
                    results={name: results.get(name) for name, _ in COLUMNS},
                    stages=stages), osp.join(work_dir, 'results.json'))
    print(f'\n{table}\n[downstream] {osp.join(work_dir, "results.md")}, results.json',
          flush=True)
    return results


if __name__ == '__main__':
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    from early_checks import refuse_a_missing_config  # imports no fastmim
    # Every config typed is checked, also one of a stage this task does not run: a mistake.
    refuse_a_missing_config(sys.argv[1:], flags=['--finetune-config', '--det-config',
                                                 '--seg-config'], first=False)
    sys.path.insert(0, ROOT)
    from fastmim.cli import run_cli
    run_cli(main)
