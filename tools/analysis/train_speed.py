"""Seconds per iteration and peak memory of a short real training run through tools/train.py.

    python tools/analysis/train_speed.py {detection,segmentation,pretrain} --out RESULT.json
        [--iters 20] [--amp] [--work-dir DIR] [--images N] [--config CONFIG]
        [--cfg-options KEY=VALUE ...]

- ``detection``: the full-size Mask R-CNN Swin-B config (1024 large-scale jitter, copy-paste,
  batch 2), on the COCO-format photo data of ``tests/test_projects/downstream_data.py``, then
  ``tools/test.py`` on its validation photo;
- ``segmentation``: the UperNet ViT-B config (512 crops, batch 2) on the ADE20K-layout photo
  data of the same module, then ``tools/test.py``;
- ``pretrain``: the FastMIM ViT-B config (batch 512, 8 workers) on a folder of ImageNet-sized
  JPEGs (the embedded photos at 500 px, linked ``--images`` times): end-to-end pre-training
  with the real loader, to compare with ``benchmark_pretrain.py``'s synthetic-input step rate.
  ``--config configs/fastmim/vit_b_hog_800e_nvjpeg.py`` trains the same recipe with the JPEGs
  decoded on the GPU (nvJPEG) instead of in the loader's workers.

The run goes through ``tools/train.py`` as a user's does; the numbers come from mmengine's log
(``vis_data/scalars.json``): the median ``time`` and ``data_time`` of the iterations after the
first ``--skip`` (warm-up, cuDNN autotuning, worker start) and the largest ``memory`` (MB,
``torch.cuda.max_memory_allocated``; absent without CUDA). Backbones start from random weights:
speed and memory do not depend on them.
"""
import argparse
import importlib.util
import json
import os
import os.path as osp
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    'detection': 'projects/detection/configs/mask_rcnn_fastmim_swin_b_fpn_3x_coco.py',
    'segmentation': 'projects/segmentation/configs/upernet_fastmim_vit_b_ade20k_512x512_160k.py',
    'pretrain': 'configs/fastmim/vit_b_hog_800e.py',
}
PRETRAIN_PHOTO_SIDE = 500  # ImageNet's training images are about 400 x 350 on average


def load_module(path, name):
    """The Python file at ``path`` (in no package) as a module named ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_downstream_data():
    """The photo datasets of the downstream tests (a module of the test suite, not a package)."""
    return load_module(ROOT / 'tests' / 'test_projects' / 'downstream_data.py',
                       'fastmim_tests_downstream_data')


def no_validation():
    return {'val_dataloader': None, 'val_cfg': None, 'val_evaluator': None}


def detection_options(data_dir, iters):
    """Train on the two training crops (one iteration of batch 2 per epoch) for ``iters``
    epochs; test on the full photo with the config's own test pipeline."""
    coco = load_downstream_data().write_coco_instances(data_dir)
    dataset, test = 'train_dataloader.dataset.dataset', 'test_dataloader.dataset'
    train = {
        'model.backbone.init_cfg': None,
        f'{dataset}.data_root': coco['data_root'], f'{dataset}.ann_file': coco['train_ann_file'],
        f'{dataset}.data_prefix.img': coco['img_prefix'],
        'train_cfg.max_epochs': iters, 'default_hooks.checkpoint.interval': iters,
        **no_validation(),
    }
    test = {
        'model.backbone.init_cfg': None,
        f'{test}.data_root': coco['data_root'], f'{test}.ann_file': coco['val_ann_file'],
        f'{test}.data_prefix.img': coco['img_prefix'],
        'test_evaluator.ann_file': coco['data_root'] + coco['val_ann_file'],
    }
    return train, test, f'epoch_{iters}.pth'


def segmentation_options(data_dir, iters):
    data_root = load_downstream_data().write_ade20k_layout(data_dir)
    train = {
        'model.backbone.init_cfg': None,
        'train_dataloader.dataset.data_root': data_root,
        'train_cfg.max_iters': iters, 'default_hooks.checkpoint.interval': iters,
        **no_validation(),
    }
    test = {'model.backbone.init_cfg': None, 'test_dataloader.dataset.data_root': data_root}
    return train, test, f'iter_{iters}.pth'


# The downstream tasks' settings, by task: (train options, test options, checkpoint name).
DOWNSTREAM_OPTIONS = {'detection': detection_options, 'segmentation': segmentation_options}


def pretrain_options(data_dir, images):
    """One epoch over ``images`` links to the embedded photos as 500-px JPEGs. The links share
    the page cache, as a node's local copy of ImageNet mostly does; each is decoded anew."""
    from fastmim.benchmark.pipeline_speed import write_jpeg_photos
    os.makedirs(osp.join(data_dir, 'photos'))
    photos = write_jpeg_photos(osp.join(data_dir, 'photos'), PRETRAIN_PHOTO_SIDE)
    folder = osp.join(data_dir, 'train')
    os.makedirs(folder)
    for index in range(images):
        os.symlink(photos[index % len(photos)], osp.join(folder, f'{index:07d}.jpg'))
    train = {
        'train_dataloader.dataset.data_root': data_dir,
        'train_dataloader.dataset.data_prefix': 'train',
        'train_cfg.max_epochs': 1, 'default_hooks.checkpoint.interval': 1,
    }
    return train, None, None


def training_precision(cfg, amp):
    """The precision tools/train.py trains ``cfg`` in (``'float16 autocast'``, ``'bfloat16
    autocast'`` or ``'float32'``, as benchmark_pretrain.py words it): the config's optimiser
    wrapper after ``--amp`` and the machine's adaptation, as train.py applies them. The
    ``--amp`` flag alone does not say it: the pretrain recipe (GuardedAmpOptimWrapper) trains
    in fp16 without the flag."""
    import copy

    from fastmim.engine.launch import adapt_to_device
    from fastmim.engine.optim_wrappers import mixed_precision_of
    from fastmim.train_flags import set_mixed_precision
    cfg = copy.deepcopy(cfg)
    if amp:
        set_mixed_precision(cfg.optim_wrapper)
    adapt_to_device(cfg)
    optim_wrapper = cfg.get('optim_wrapper') or {}
    kind = mixed_precision_of(optim_wrapper.get('type'))
    if kind is None:
        return 'float32'
    default = 'float16' if kind == 'loss_scaling' else 'bfloat16'  # the wrappers' defaults
    return f"{optim_wrapper.get('dtype') or default} autocast"


def run_tool(script, args):
    """Run ``tools/<script>`` in the caller's folder, with the repository importable: a relative
    path in ``--cfg-options`` (``data_root=mydata``, ``load_from=rel.pth``) names the file
    beside the command, which a run in the repository would look for there. The options
    cannot be made absolute instead: not every string value is a path, and some paths are
    relative to another (``data_prefix`` to ``data_root``)."""
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
    command = [sys.executable, str(ROOT / 'tools' / script), *args]
    print('+', ' '.join(command), flush=True)
    tool = subprocess.Popen(command, env=env)
    # A SIGTERM to this process alone (a time limit's, a kill's) would end it at once and leave
    # the tool training on unseen, holding the GPU and writing its checkpoint: pass the signal
    # on and wait until the tool has stopped (tools/train.py saves and exits at its next
    # iteration).
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: tool.send_signal(signum))
    try:
        status = tool.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if status:
        # The tool has printed its own one-line error; a CalledProcessError traceback under it
        # would only repeat the command.
        raise SystemExit(f'error: tools/{script} failed with exit status {status} (its error '
                         'is above)')


def logged_iterations(work_dir):
    """mmengine's per-iteration scalars of the training run in ``work_dir``: its training
    records (a validation record has a ``time`` too, but is no iteration)."""
    from fastmim.logged_scalars import scalars_files, training_history
    return [record for _, record in training_history(scalars_files(work_dir))
            if 'iter' in record and 'time' in record]


def summarise(entries, skip, batch_size):
    timed = entries[skip:] or entries
    seconds = statistics.median(entry['time'] for entry in timed)
    memory = [entry['memory'] for entry in entries if 'memory' in entry]
    return dict(iterations=len(entries), timed=len(timed), s_per_iter=seconds,
                data_s_per_iter=statistics.median(entry['data_time'] for entry in timed),
                images_per_s=batch_size / seconds,
                peak_memory_mb=max(memory) if memory else None)


def parse_args(argv):
    from fastmim.cli import CfgOptionsAction, add_debug_arg, non_negative_int, positive_int
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('task', choices=sorted(CONFIGS))
    parser.add_argument('--out', required=True, help='results JSON file')
    parser.add_argument('--iters', type=positive_int, default=20, help='training iterations')
    parser.add_argument('--skip', type=non_negative_int, default=5,
                        help='first iterations left out of the median')
    parser.add_argument('--amp', action='store_true', help="tools/train.py's --amp")
    parser.add_argument('--work-dir', help='where data, logs and checkpoints go, a folder '
                        'without an earlier run (default: a temporary folder, removed '
                        'afterwards)')
    parser.add_argument('--config', help="train this config instead of the task's, e.g. "
                        'configs/fastmim/vit_b_hog_800e_nvjpeg.py (pretrain with the JPEGs '
                        'decoded on the GPU)')
    parser.add_argument('--images', type=positive_int,
                        help='pretrain: JPEG files (default: batch size x iterations)')
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction, default={},
                        help='more overrides for tools/train.py and tools/test.py')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if args.skip >= args.iters:  # summarise would time the warm-up iterations too
        parser.error(f'--skip {args.skip} leaves none of the --iters {args.iters} iterations to '
                     'time; give fewer or more')
    if args.work_dir:
        # Absolute, so that the commands printed ('+ ...') name the folder itself, not one
        # relative to a folder their reader cannot see.
        args.work_dir = osp.abspath(args.work_dir)
    return args


def resolve_config(name):
    """``--config`` relative to the current folder, as the user typed it, else to the
    repository (``configs/...`` from anywhere), so that a config of one's own beside the
    command is found as well as the repository's."""
    return osp.abspath(name) if osp.isfile(name) else str(ROOT / name)


RUN_FOLDERS = ('data', 'train', 'test')  # what a run writes into its work dir


def check_inputs(config, out, work_dir=None, given=None):
    """Refuse a config that is not there (named as ``given``, the ``--config`` typed, with
    the close config names), an ``--out`` that cannot be written and a ``--work-dir`` that
    holds an earlier run before the training run: the result is written only after it, so a
    folder given as ``--out`` (or a file where its folder goes; a missing folder is made)
    would lose minutes of measurement, and a second run in the same work dir would end in
    'File exists' (pretrain's photos) or in a traceback after training (two runs' logs in
    ``train/``). A ``--work-dir`` that cannot be made or written is refused as tools/train.py
    refuses its own (a file given as one ended in NotADirectoryError)."""
    from fastmim.cli import check_output_file
    from fastmim.config_file import check_config_file
    from fastmim.file_checks import check_work_dir
    check_config_file(config, given=given)  # what tools/early_checks.py checks before imports
    check_output_file(out, '--out', folders_made=True)  # the atomic write makes it
    if work_dir:
        check_work_dir(work_dir, '--work-dir')
    earlier = [name for name in RUN_FOLDERS if work_dir and osp.exists(osp.join(work_dir, name))]
    if earlier:
        raise FileExistsError(f'--work-dir {work_dir} holds an earlier run ({", ".join(earlier)}); '
                              'give a new or empty folder, or leave --work-dir out (a temporary '
                              'folder)')


def check_pretrain_dataset(cfg, config_name):
    """Refuse a pre-training config whose training dataset is no ImageFolder: the task writes a
    folder of JPEG files and points the dataset's ``data_root`` and ``data_prefix`` at it, which
    another dataset (the demo's EmbeddedPhotos) does not take; its training run crashed inside
    mmengine."""
    from fastmim.datasets import ImageFolder
    from fastmim.registry import DATASETS, type_class
    dataset_type = cfg.train_dataloader.dataset.get('type')
    found = type_class(dataset_type, DATASETS)
    if found is not None and issubclass(found, ImageFolder):
        return
    name = getattr(dataset_type, '__name__', dataset_type)
    from fastmim.errors import LaunchError
    raise LaunchError(f'{config_name}: its train_dataloader.dataset is {name}; the pretrain '
                      'task trains on a folder of JPEG files it writes, which needs an '
                      'ImageFolder dataset (data_root, data_prefix)')


def main(argv=None):
    args = parse_args(argv)
    from fastmim.engine.config_loading import load_config

    config_name = args.config or CONFIGS[args.task]
    config = resolve_config(config_name)
    check_inputs(config, args.out, args.work_dir, given=config_name)
    as_cfg_options = load_downstream_data().as_cfg_options
    cfg = load_config(config, args.cfg_options)
    if args.task == 'pretrain':
        check_pretrain_dataset(cfg, config_name)
    batch_size = cfg.train_dataloader.batch_size
    precision = training_precision(cfg, args.amp)
    with tempfile.TemporaryDirectory() as scratch:
        work_dir = args.work_dir or scratch
        data_dir = osp.join(work_dir, 'data')
        os.makedirs(data_dir, exist_ok=True)
        if args.task == 'pretrain':
            train, test, checkpoint = pretrain_options(data_dir, args.images or
                                                       batch_size * args.iters)
        else:
            train, test, checkpoint = DOWNSTREAM_OPTIONS[args.task](data_dir, args.iters)
        train_dir = osp.join(work_dir, 'train')
        logger = {'default_hooks.logger.interval': 1}
        run_tool('train.py', [config, '--work-dir', train_dir, *(['--amp'] if args.amp else []),
                              '--cfg-options',
                              *as_cfg_options({**train, **logger, **args.cfg_options})])
        result = dict(task=args.task, config=config_name, precision=precision,
                      amp=precision != 'float32', batch_size=batch_size,
                      **summarise(logged_iterations(train_dir), args.skip, batch_size))
        if test is not None:
            metrics = osp.join(work_dir, 'test_metrics.json')
            run_tool('test.py', [config, osp.join(train_dir, checkpoint), '--work-dir',
                                 osp.join(work_dir, 'test'), '--out', metrics, '--cfg-options',
                                 *as_cfg_options({**test, **args.cfg_options})])
            with open(metrics) as f:
                result['test_metrics'] = json.load(f)
        import torch
        result['device'] = (torch.cuda.get_device_name() if torch.cuda.is_available()
                            else 'cpu')
    # Replaced atomically: a run killed while writing, or a value JSON cannot hold, leaves the
    # earlier result whole, not half a file (or none).
    from fastmim.fileio import AtomicLocalBackend
    AtomicLocalBackend().put_text(json.dumps(result, indent=2), args.out)
    memory = (f'{result["peak_memory_mb"]:.0f} MB' if result['peak_memory_mb'] is not None
              else 'n/a')
    rate = result['images_per_s']
    rate = f'{rate:.1f}' if rate >= 1 else f'{rate:.3g}'  # a CPU run makes under one image/s
    print(f'{args.task}: {result["s_per_iter"]:.3f} s/iter (data {result["data_s_per_iter"]:.3f}'
          f' s), {rate} images/s, peak memory {memory}, {result["device"]}, {precision}')
    return result


if __name__ == '__main__':
    sys.path.insert(0, str(ROOT / 'tools'))
    from early_checks import refuse_a_missing_config  # imports no fastmim
    # The config is --config's, looked up as main looks it up, reported as check_inputs raises it.
    refuse_a_missing_config(sys.argv[1:], flags=['--config'], first=False,
                            locate=resolve_config, reported_as=None)
    from fastmim.cli import run_cli
    run_cli(main)
