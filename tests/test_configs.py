"""Every config under configs/ (and projects/*/configs/) builds and trains one iteration;
evaluation-only configs (kNN, published weights) run one test pass instead.

Sizes are shrunk through the same ``merge_from_dict`` that ``--cfg-options`` uses, never by
copying configs: the model, pipeline, optimiser and schedule are the config's own, only the data
(a few embedded real photos), the batch size and the length of the run change.
"""
import importlib.util
import math
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from fastmim.datasets import find_embedded_photos
from fastmim.engine.launch import adapt_to_device
from fastmim.engine.loops import inside_epoch_resume_problem
from fastmim.engine.optim_wrappers.guarded import NonFiniteGuardMixin

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(
    path for pattern in ('configs/**/*.py', 'projects/*/configs/**/*.py')
    for path in ROOT.glob(pattern) if '_base_' not in path.parts)


def shrink_pretrain(cfg, work_dir):
    """One iteration of batch 2 on embedded real photos, through the config's own pipeline."""
    pipeline = cfg.train_dataloader.dataset.pipeline
    iteration_based = 'max_iters' in cfg.train_cfg  # mmengine's loop or fastmim's resumable one
    cfg.merge_from_dict({
        'work_dir': str(work_dir),
        'train_dataloader.batch_size': 2,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_dataloader.pin_memory': False,
        'train_dataloader.dataset': dict(type='EmbeddedPhotos', num_samples=2,
                                         pipeline=pipeline, _delete_=True),
        'train_cfg.max_iters' if iteration_based else 'train_cfg.max_epochs': 1,
        'default_hooks.checkpoint': None,
        'default_hooks.logger.interval': 1,
    })
    # Progressive-resolution stages state their own batch sizes: keep the update batch at 2.
    for hook in cfg.get('custom_hooks', []):
        for stage in hook.get('stages', []):
            stage['batch_size'] = 2 // stage.get('accumulative_counts', 1)
    return cfg


def shrink_classifier(cfg, work_dir):
    """Fine-tuning configs: one iteration of batch 2 and one validation pass on embedded real
    photos (their photo index as label), through the config's own train and test pipelines.
    The pre-trained checkpoint the config names is not there: the backbone starts untrained."""
    cfg = shrink_pretrain(cfg, work_dir)
    for split in ('val', 'test'):
        pipeline = cfg[f'{split}_dataloader'].dataset.pipeline
        cfg.merge_from_dict({
            f'{split}_dataloader.batch_size': 2,
            f'{split}_dataloader.num_workers': 0,
            f'{split}_dataloader.persistent_workers': False,
            f'{split}_dataloader.pin_memory': False,
            f'{split}_dataloader.dataset': dict(type='EmbeddedPhotos', num_samples=2,
                                                pipeline=pipeline, _delete_=True),
        })
    cfg.merge_from_dict({'train_cfg.val_interval': 1, 'model.backbone.init_cfg': None})
    # The photos stand in for the config's data: a head with fewer outputs than they have
    # classes (Fashion-MNIST's 10) gets one per photo, as DatasetClassesCheckHook requires.
    num_photos = len(find_embedded_photos())
    if cfg.model.head.num_classes < num_photos:
        cfg.model.head.num_classes = num_photos
    return cfg


def shrink_knn(cfg, work_dir):
    """kNN configs (nothing to train): a bank and a test split of two embedded real photos
    each, through the config's own pipelines."""
    loaders = {'test_dataloader': cfg.test_dataloader,
               'test_cfg.bank_dataloader': cfg.test_cfg.bank_dataloader}
    for key, loader in loaders.items():
        cfg.merge_from_dict({
            f'{key}.batch_size': 2,
            f'{key}.num_workers': 0,
            f'{key}.persistent_workers': False,
            f'{key}.pin_memory': False,
            f'{key}.dataset': dict(type='EmbeddedPhotos', num_samples=2,
                                   pipeline=loader.dataset.pipeline, _delete_=True),
        })
    # One class per photo, the classes EmbeddedPhotos names (DatasetClassesCheckHook checks);
    # k no larger than the two-image bank (a larger one is warned about).
    cfg.merge_from_dict({'work_dir': str(work_dir), 'model.k': 2,
                         'model.num_classes': len(find_embedded_photos())})
    return cfg


def shrink_evaluation(cfg, work_dir):
    """Evaluation-only classifier configs (published weights, nothing to train): one test pass
    over two embedded real photos through the config's own test pipeline. The weights are
    given on the command line (tools/test.py CONFIG CHECKPOINT): the model here is untrained."""
    loader = cfg.test_dataloader
    cfg.merge_from_dict({
        'work_dir': str(work_dir),
        'test_dataloader.batch_size': 2,
        'test_dataloader.num_workers': 0,
        'test_dataloader.persistent_workers': False,
        'test_dataloader.pin_memory': False,
        'test_dataloader.dataset': dict(type='EmbeddedPhotos', num_samples=2,
                                        pipeline=loader.dataset.pipeline, _delete_=True),
    })
    return cfg


def is_knn(cfg):
    return (cfg.get('test_cfg') or {}).get('type') == 'KNNTestLoop'


def is_evaluation_only(cfg):
    """kNN configs and configs that evaluate given weights define no training."""
    return cfg.get('train_dataloader') is None


def shrink_fastmim(cfg, work_dir):
    if is_knn(cfg):
        return shrink_knn(cfg, work_dir)
    if is_evaluation_only(cfg):
        return shrink_evaluation(cfg, work_dir)
    if cfg.model.type == 'ImageClassifier':
        return shrink_classifier(cfg, work_dir)
    return shrink_pretrain(cfg, work_dir)


def downstream_data():
    """tests/test_projects/downstream_data.py: tiny real COCO / ADE20K datasets and the
    overrides that point the project configs at them (loaded by path: pytest runs with
    --import-mode=importlib)."""
    path = ROOT / 'tests' / 'test_projects' / 'downstream_data.py'
    spec = importlib.util.spec_from_file_location('fastmim_tests_downstream_data', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shrink_detection(cfg, work_dir):
    """mmdet configs: one iteration of batch 2 on two crops of a real photo in COCO format,
    256 px, a narrow backbone; the config's own pipeline (copy-paste included) and heads."""
    data = downstream_data()
    coco = data.write_coco_instances(work_dir / 'coco')
    cfg.merge_from_dict({'work_dir': str(work_dir),
                         **data.detection_overrides(coco, 2, data.tiny_detection_backbone(cfg))})
    return cfg


def shrink_segmentation(cfg, work_dir):
    """mmseg configs: one iteration of batch 2 on 256 px crops of a real photo in the ADE20K
    layout, a narrow ViT; the config's own pipeline, neck and heads."""
    data = downstream_data()
    data_root = data.write_ade20k_layout(work_dir / 'ade20k')
    cfg.merge_from_dict({'work_dir': str(work_dir),
                         **data.segmentation_overrides(data_root, 2, iterations=1)})
    return cfg


def shrink_canvas_segmentation(cfg, work_dir):
    """The Fashion-MNIST dense-task configs (configs/experiments, mmseg scope): one iteration
    of batch 2 and one validation on a few canvases written from the real Fashion-MNIST files,
    with the config's own model, pipelines and IoUMetric (the backbone starts untrained)."""
    from fastmim.datasets.fashion_mnist_canvas import write_canvas_segmentation
    root = str(work_dir / 'canvases') + '/'
    write_canvas_segmentation(root, num_train=4, num_test=2, seed=0)
    cfg.merge_from_dict({
        'work_dir': str(work_dir),
        'model.backbone.init_cfg': None,
        'train_dataloader.batch_size': 2,
        'train_dataloader.dataset.data_root': root,
        'val_dataloader.batch_size': 2,
        'val_dataloader.dataset.data_root': root,
        'train_cfg.max_iters': 1,
        'train_cfg.val_interval': 1,
        'default_hooks.checkpoint': None,
        'default_hooks.logger.interval': 1,
    })
    return cfg


SHRINKERS = {'fastmim': shrink_fastmim, 'mmdet': shrink_detection,
             'mmseg': shrink_segmentation}
# Configs under these folders shrink differently from the rest of their scope.
FOLDER_SHRINKERS = {('experiments', 'mmseg'): shrink_canvas_segmentation}


@pytest.mark.parametrize('config', CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_trains_one_iteration(config, tmp_path):
    cfg = Config.fromfile(str(config))
    scope = cfg.get('default_scope', 'fastmim')
    assert scope in SHRINKERS, f'{config}: no shrinker for default_scope {scope!r}'
    shrink = FOLDER_SHRINKERS.get((config.parent.name, scope), SHRINKERS[scope])
    cfg = shrink(cfg, tmp_path)
    adapt_to_device(cfg)

    runner = Runner.from_cfg(cfg)
    if scope == 'fastmim' and is_evaluation_only(cfg):  # one evaluation instead of training
        metrics = runner.test()
        top1 = metrics['knn/top1'] if is_knn(cfg) else metrics['accuracy/top1']
        assert 0 <= top1 <= 100
        return
    runner.train()

    assert runner.iter == 1
    # A preemption checkpoint (saved inside an epoch) resumes exactly.
    assert inside_epoch_resume_problem(runner.train_loop) is None
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert math.isfinite(loss) and loss > 0
    # Every recipe skips (or stops at) a step whose loss is NaN; mmdet's and mmseg's plain
    # OptimWrapper applied it to the weights.
    assert isinstance(runner.optim_wrapper, NonFiniteGuardMixin), type(runner.optim_wrapper)


INPUT_SIZE_ABLATIONS = sorted(
    (ROOT / 'configs' / 'fastmim' / 'ablations').glob('vit_b_hog_800e_in*.py'))


@pytest.mark.parametrize('config', INPUT_SIZE_ABLATIONS, ids=lambda p: p.name)
def test_input_size_ablation_changes_only_the_size(config):
    """vit_b_hog_800e_in<N>.py is vit_b_hog_800e.py with the crop (also in the dumped
    ``train_pipeline``) and the backbone's img_size at N px, and nothing else changed."""
    size = int(config.stem.rsplit('_in', 1)[1])
    ablation = Config.fromfile(str(config)).to_dict()
    base = Config.fromfile(str(ROOT / 'configs' / 'fastmim' / 'vit_b_hog_800e.py')).to_dict()
    assert size != base['model']['backbone']['img_size']

    crops = [ablation['train_pipeline'], ablation['train_dataloader']['dataset']['pipeline']]
    for pipeline in crops:
        assert [t['size'] for t in pipeline if t['type'] == 'RandomResizedCrop'] == [size]
    assert ablation['model']['backbone']['img_size'] == size

    crops += [base['train_pipeline'], base['train_dataloader']['dataset']['pipeline']]
    for pipeline in crops:
        next(t for t in pipeline if t['type'] == 'RandomResizedCrop')['size'] = None
    ablation['model']['backbone']['img_size'] = base['model']['backbone']['img_size'] = None
    assert ablation == base
