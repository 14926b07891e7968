"""``tools/dist_train.sh CONFIG 2 --fsdp`` on the CPU (gloo): FSDP trains what DDP trains.

The reference is a DDP run of the same tiny demo recipe on the same data (mmengine's DDP, the
tested path): FSDP shards the weights, gradients and optimiser state but computes the same
update, so its weights and optimiser state after each epoch equal DDP's to float rounding, and
a run resumed from its checkpoint goes on as the DDP run does. A larger weight decay than the
recipe's makes a decay left out (mmengine's FSDPStrategy builds the optimiser on 1-D shards)
visible beyond rounding. The same holds for progressive resolution (FastMIM-P: loaders rebuilt
and gradients accumulated per stage) and for a detection recipe (mmdet's Mask R-CNN).
"""
import importlib.util
import math
import signal
import subprocess
import time
import types
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from mmengine.config import Config
from PIL import Image
from torch.distributed.fsdp import FullyShardedDataParallel

from fastmim.engine.hooks import CheckpointMetaHook
from fastmim.engine.fsdp import (FlexibleRunnerKeepingPosition, check_fsdp, enable_fsdp,
                                 scale_losses_across_shards)
from fastmim.engine.launch import adapt_to_device
from fastmim.errors import LaunchError
from fastmim.logged_scalars import read_records, scalars_files

ROOT = Path(__file__).resolve().parents[2]
DEMO = 'configs/fastmim/demo_vit_tiny_embedded.py'
# Added to the shrunk demo (tiny_demo: 8 photos, batch 2 per process: 2 iterations per epoch
# on 2 processes): a checkpoint every epoch, every iteration's raw loss logged.
RECORDED = [
    'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=3',
    'default_hooks.logger.interval=1', 'log_processor.window_size=1', 'randomness.seed=0',
    'optim_wrapper.optimizer.weight_decay=0.5',
]
# Gradients are summed in another order (reduce-scatter vs all-reduce): rounding only, which
# Adam's division by sqrt(v) enlarges where a gradient is near zero (up to 7e-6 over 3 epochs
# of the Xavier-initialised model; a real difference, such as a wrong optimiser state, is
# orders of magnitude larger).
ATOL = 1e-5
PREEMPTED = 75  # PreemptionHook's exit status: SLURM requeues the job


def start(work_dir, epochs, *flags, config=DEMO, options):
    command = ['bash', str(ROOT / 'tools' / 'dist_train.sh'), config, '2', '--work-dir',
               str(work_dir), *flags, '--cfg-options', f'train_cfg.max_epochs={epochs}',
               *options]
    log = open(f'{work_dir}.log', 'w')
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)


def finish(process, work_dir):
    process.wait(timeout=300)
    log = Path(f'{work_dir}.log').read_text()
    assert process.returncode == 0, log[-4000:]
    return log


def losses(work_dir, key='loss'):
    """``{step: value}`` of a logged scalar (each iteration's loss, each validation's top-1)."""
    by_step = {}
    for scalars in scalars_files(work_dir, missing_ok=True):
        for record in read_records(scalars):
            if key in record:
                by_step[record['step']] = record[key]
    return by_step


def assert_close_state(fsdp, ddp, where):
    """Weights by key; optimiser state by parameter: FSDP's full optimiser state names each
    parameter, DDP's numbers them, both in the order of the same parameter groups. The
    largest difference of all is reported, not the first beyond rounding."""
    assert fsdp['state_dict'].keys() == ddp['state_dict'].keys()
    pairs = [(key, fsdp['state_dict'][key], value) for key, value in ddp['state_dict'].items()]
    names = [name for group in fsdp['optimizer']['param_groups'] for name in group['params']]
    ids = [index for group in ddp['optimizer']['param_groups'] for index in group['params']]
    assert len(names) == len(ids) > 0
    for name, index in zip(names, ids):
        ours, theirs = fsdp['optimizer']['state'][name], ddp['optimizer']['state'][index]
        assert ours.keys() == theirs.keys()
        pairs += [(f'{name} {key}', ours[key], theirs[key]) for key in theirs]
    for name, ours, theirs in pairs:
        assert ours.shape == theirs.shape, f'{where} {name}: {ours.shape} vs {theirs.shape}'
    difference, name = max(((ours.double() - theirs.double()).abs().max().item(), name)
                           for name, ours, theirs in pairs)
    assert difference <= ATOL, f'{where}: {name} differs by {difference:.3g}'
    for ours, theirs in zip(fsdp['optimizer']['param_groups'], ddp['optimizer']['param_groups']):
        assert {k: v for k, v in ours.items() if k != 'params'} == {
            k: v for k, v in theirs.items() if k != 'params'}


def model_shapes():
    """The keys and shapes a single-process run saves: the model's own state dict."""
    import fastmim  # noqa: F401  registers the modules
    from mmengine.registry import DefaultScope

    from fastmim.registry import MODELS
    cfg = Config.fromfile(ROOT / DEMO)
    cfg.merge_from_dict({f'model.{part}': 32 if part.endswith('embed_dim') else 2
                         for part in ('backbone.arch.embed_dim', 'backbone.arch.depth',
                                      'backbone.arch.num_heads', 'neck.embed_dim',
                                      'neck.num_heads')})
    with DefaultScope.overwrite_default_scope('fastmim'):
        model = MODELS.build(cfg.model)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


MAX_NORM = 0.05


@pytest.fixture(scope='module')
def pretraining(tiny_demo):
    """The recorded tiny run with the demo's reconstruction pictures every epoch (under FSDP
    every rank gathers the weights, a collective, and rank 0 draws), and gradient clipping by
    the norm, which under FSDP must take the whole model's norm, not each rank's shard's."""
    return [*tiny_demo.options, *RECORDED, 'custom_hooks.0.interval=1',
            'custom_hooks.0.num_images=2', f'optim_wrapper.clip_grad.max_norm={MAX_NORM}']


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory, pretraining):
    """Work dirs of a DDP pre-training (3 epochs) and of an FSDP one (2 epochs; the test
    resumes it)."""
    tmp_path = tmp_path_factory.mktemp('pretrain')
    ddp, fsdp = tmp_path / 'ddp', tmp_path / 'fsdp'
    runs = [(start(ddp, 3, options=pretraining), ddp),
            (start(fsdp, 2, '--fsdp', options=pretraining), fsdp)]
    for process, work_dir in runs:
        finish(process, work_dir)
    return ddp, fsdp


def test_fsdp_trains_saves_and_resumes_as_ddp(pretrained, pretraining):
    ddp, fsdp = pretrained
    assert "type='FullShapeFSDPStrategy'" in (fsdp / Path(DEMO).name).read_text()

    saved = torch.load(fsdp / 'epoch_2.pth', weights_only=True)
    reference = torch.load(ddp / 'epoch_2.pth', weights_only=True)
    assert {key: tuple(value.shape) for key, value in saved['state_dict'].items()} == \
        model_shapes()
    assert saved['meta']['geometry'] == reference['meta']['geometry']
    assert (saved['meta']['epoch'], saved['meta']['iter']) == (2, 4)
    assert (fsdp / 'last_checkpoint').read_text().strip().endswith('epoch_2.pth')
    assert_close_state(saved, reference, 'epoch 2')
    fsdp_losses, ddp_losses = losses(fsdp), losses(ddp)
    grad_norms = losses(fsdp, 'grad_norm')  # the whole model's, so clipping is on at each step
    assert min(grad_norms.values()) > MAX_NORM
    assert grad_norms == pytest.approx({step: value for step, value in
                                        losses(ddp, 'grad_norm').items() if step in grad_norms},
                                       rel=1e-5)
    assert sorted(fsdp_losses) == [1, 2, 3, 4]
    assert all(math.isfinite(loss) for loss in fsdp_losses.values())
    assert fsdp_losses[4] < fsdp_losses[1]
    assert fsdp_losses == pytest.approx({step: ddp_losses[step] for step in fsdp_losses},
                                        abs=ATOL)

    resumed = finish(start(fsdp, 3, '--fsdp', '--resume', options=pretraining), fsdp)
    assert 'resumed epoch: 2, iter: 4' in resumed
    assert_close_state(torch.load(fsdp / 'epoch_3.pth', weights_only=True),
                       torch.load(ddp / 'epoch_3.pth', weights_only=True), 'resumed epoch 3')
    assert losses(fsdp) == pytest.approx(ddp_losses, abs=ATOL)
    assert_same_pictures(fsdp, ddp, epochs=[3])  # the images the run began with


def assert_same_pictures(work_dir, reference, epochs):
    for name in [f'epoch_{epoch}_{index}.png' for epoch in epochs for index in (0, 1)]:
        ours = np.asarray(Image.open(work_dir / 'vis' / name)).astype(int)
        theirs = np.asarray(Image.open(reference / 'vis' / name)).astype(int)
        # The same pictures up to rounding: a predicted value within float rounding of a
        # grey-level boundary lands on either side (a few pixels of a million, by one level).
        assert np.abs(ours - theirs).max() <= 1, name


def preempt_rank_1(process, work_dir, logged):
    """Once ``logged`` is in the run's log, SIGTERM to rank 1 alone (SLURM's signal reaching
    one process first); return the log of the run, which must exit as preempted."""
    deadline = time.time() + 300
    while logged not in Path(f'{work_dir}.log').read_text():
        assert process.poll() is None and time.time() < deadline, \
            Path(f'{work_dir}.log').read_text()[-3000:]
        time.sleep(0.005)
    rank_1 = next(child for child in psutil.Process(process.pid).children(recursive=True)
                  if child.environ().get('RANK') == '1' and 'train.py' in ' '.join(child.cmdline()))
    rank_1.send_signal(signal.SIGTERM)
    process.wait(timeout=300)
    log = Path(f'{work_dir}.log').read_text()
    assert process.returncode == PREEMPTED, log[-4000:]
    return log


def test_fsdp_run_preempted_on_one_rank_resumes_as_ddp(pretrained, pretraining, tmp_path):
    """SLURM's SIGTERM reaching rank 1 alone: under FSDP saving gathers the weights from every
    rank, so both must stop at the same iteration and save together; the resumed run ends as
    the uninterrupted DDP run."""
    ddp, _ = pretrained
    stopped = tmp_path / 'stopped'
    log = preempt_rank_1(start(stopped, 3, '--fsdp', options=pretraining), stopped,
                         'Epoch(train)')
    saved = Path((stopped / 'last_checkpoint').read_text().strip())
    assert f'a signal on another rank: saved {saved}' in log
    assert torch.load(saved, weights_only=True)['meta']['iter'] < 6

    finish(start(stopped, 3, '--fsdp', '--resume', options=pretraining), stopped)
    assert_close_state(torch.load(stopped / 'epoch_3.pth', weights_only=True),
                       torch.load(ddp / 'epoch_3.pth', weights_only=True), 'resumed epoch 3')
    assert losses(stopped) == pytest.approx(losses(ddp), abs=ATOL)
    assert_same_pictures(stopped, ddp, epochs=[3])


def test_reconstruction_pictures_under_fsdp_are_ddp_s(pretrained):
    ddp, fsdp = pretrained
    assert_same_pictures(fsdp, ddp, epochs=[1, 2])


# The fine-tuning demo at the pre-training's size: layer decay, mixup, validation each epoch.
FINETUNE = 'configs/finetune/demo_vit_tiny_embedded_ft.py'
VALIDATED = ['train_cfg.val_interval=1', *[
    f'val_dataloader.{key}' for key in ('batch_size=2', 'num_workers=0',
                                        'persistent_workers=False', 'dataset.num_samples=4')]]


def test_fsdp_checkpoint_fine_tunes_under_fsdp_as_under_ddp(pretrained, tiny_demo, tmp_path):
    """The FSDP pre-training checkpoint starts a fine-tuning (its 8x8 position embedding
    resized to the 10x10 of 160 px from its geometry), which FSDP trains and validates as DDP
    does: the layer-decay constructor sees whole parameters too."""
    start_from = pretrained[1] / 'epoch_2.pth'
    options = [*tiny_demo.arch_options, *tiny_demo.loader_options, *RECORDED, *VALIDATED,
               f'model.backbone.init_cfg.checkpoint={start_from}']
    ddp, fsdp = tmp_path / 'ddp', tmp_path / 'fsdp'
    runs = [(start(ddp, 2, config=FINETUNE, options=options), ddp),
            (start(fsdp, 2, '--fsdp', config=FINETUNE, options=options), fsdp)]
    logs = [finish(process, work_dir) for process, work_dir in runs]
    assert all(f'tensors of {start_from} (fastmim format) into VisionTransformer; resized '
               f'pos_embed (1, 65, 32)->(1, 101, 32)' in log for log in logs)
    assert_close_state(torch.load(fsdp / 'epoch_2.pth', weights_only=True),
                       torch.load(ddp / 'epoch_2.pth', weights_only=True), 'fine-tuned')
    assert losses(fsdp) == pytest.approx(losses(ddp), abs=ATOL)
    top1 = losses(fsdp, 'accuracy/top1')
    assert sorted(top1) == [1, 2] and top1 == losses(ddp, 'accuracy/top1')


# FastMIM-P's two stages (configs/fastmim/vit_b_hog_800e_progressive.py: 96 px in whole
# batches, then 128 px in half batches with 2-step accumulation) on the tiny demo, the update
# batch of 512 scaled to 4 and stage 1 moved to epoch 1: 16 photos on 2 processes give 2
# iterations an epoch in stage 0, 4 (2 updates) in stage 1.
PROGRESSIVE = 'configs/fastmim/vit_b_hog_800e_progressive.py'


@pytest.fixture(scope='module')
def progressive_run(tiny_demo):
    return [*tiny_demo.options, *RECORDED, 'train_dataloader.batch_size=4',
            'train_dataloader.dataset.num_samples=16']


def progressive_config(tmp_path):
    """The demo with the recipe's stages, hooks and accumulation, as a config inheriting the
    demo (the hook's list of stage dicts is beyond --cfg-options)."""
    recipe = Config.fromfile(ROOT / PROGRESSIVE)
    update_batch = recipe.train_dataloader.batch_size
    stages = [dict(stage, epoch=index, batch_size=stage['batch_size'] * 4 // update_batch)
              for index, stage in enumerate(recipe.progressive_stages)]
    hooks = [dict(hook, stages=stages) for hook in recipe.custom_hooks]
    path = tmp_path / 'progressive_demo.py'
    path.write_text(
        f'_base_ = [{str(ROOT / DEMO)!r}]\n'
        f'custom_hooks = {hooks!r}\n'
        f'default_hooks = dict(param_scheduler={recipe.default_hooks.param_scheduler!r})\n'
        f'optim_wrapper = dict(accumulative_counts={recipe.optim_wrapper.accumulative_counts})\n')
    return str(path)


@pytest.fixture(scope='module')
def progressive_ddp(tmp_path_factory, progressive_run):
    """``(config, work dir)`` of the uninterrupted 3-epoch FastMIM-P run under DDP that both
    progressive FSDP tests compare with: one two-process run for both."""
    folder = tmp_path_factory.mktemp('progressive')
    config, ddp = progressive_config(folder), folder / 'ddp'
    finish(start(ddp, 3, config=config, options=progressive_run), ddp)
    return config, ddp


def test_progressive_resolution_under_fsdp_trains_and_resumes_as_ddp(tmp_path, progressive_ddp,
                                                                     progressive_run):
    """FastMIM-P under FSDP: the hook rebuilds the loader at the stage change and accumulates
    gradients (FSDP's ``no_sync``) as under DDP; an FSDP run stopped at the end of stage 0
    and resumed goes through the stage change as the DDP run does."""
    config, ddp = progressive_ddp
    fsdp = tmp_path / 'fsdp'
    finish(start(fsdp, 1, '--fsdp', config=config, options=progressive_run), fsdp)
    assert_close_state(torch.load(fsdp / 'epoch_1.pth', weights_only=True),
                       torch.load(ddp / 'epoch_1.pth', weights_only=True), 'stage 0')

    resumed = finish(start(fsdp, 3, '--fsdp', '--resume', config=config,
                           options=progressive_run), fsdp)
    assert 'resumed epoch: 1, iter: 2' in resumed
    assert ('epoch 1 starts stage 1: input 128 px, batch 2 x 2 accumulation = 4 per update, '
            '4 iterations = 2 updates per epoch') in resumed
    for epoch in (2, 3):
        assert_close_state(torch.load(fsdp / f'epoch_{epoch}.pth', weights_only=True),
                           torch.load(ddp / f'epoch_{epoch}.pth', weights_only=True),
                           f'stage 1, epoch {epoch}')
    ddp_losses = losses(ddp)
    assert sorted(ddp_losses) == list(range(1, 11))  # 2 + 4 + 4 iterations
    assert losses(fsdp) == pytest.approx(ddp_losses, abs=ATOL)


def test_progressive_fsdp_run_preempted_inside_an_accumulation_window_resumes_as_ddp(
        tmp_path, progressive_ddp, progressive_run):
    """SIGTERM on rank 1 during the first iteration of stage 1 (2 accumulated per update):
    the signal is taken at the window's update, both ranks save together, and the resumed
    run ends as the uninterrupted DDP run."""
    config, ddp = progressive_ddp
    stopped = tmp_path / 'stopped'
    preempt_rank_1(start(stopped, 3, '--fsdp', config=config, options=progressive_run), stopped,
                   'Epoch(train) [2][1/4]')
    saved = torch.load(Path((stopped / 'last_checkpoint').read_text().strip()),
                       weights_only=True)
    assert saved['meta']['iter'] % 2 == 0  # at an update: 2 stage-0 iterations, then pairs

    finish(start(stopped, 3, '--fsdp', '--resume', config=config, options=progressive_run),
           stopped)
    assert_close_state(torch.load(stopped / 'epoch_3.pth', weights_only=True),
                       torch.load(ddp / 'epoch_3.pth', weights_only=True), 'resumed epoch 3')
    assert losses(stopped) == pytest.approx(losses(ddp), abs=ATOL)


# The Swin Mask R-CNN recipe (mmdet's two-stage detector, activation checkpointing with_cp,
# SyncBN, BN on the CPU) on the downstream tests' two crops of a real photo in
# COCO format, at 256 px, one image per process: one iteration.
DETECTION = 'projects/detection/configs/mask_rcnn_fastmim_swin_b_fpn_3x_coco.py'


def downstream_data():
    """tests/test_projects/downstream_data.py, loaded by path as tests/test_configs.py does
    (pytest runs with --import-mode=importlib)."""
    path = ROOT / 'tests' / 'test_projects' / 'downstream_data.py'
    spec = importlib.util.spec_from_file_location('fastmim_tests_downstream_data', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_detection_under_fsdp_trains_as_under_ddp(tmp_path):
    """A detection recipe's step under FSDP is DDP's: the RPN and RoI heads, the checkpointed
    Swin blocks and the BN layers' running statistics (rank 0's in both) included."""
    data = downstream_data()
    coco = data.write_coco_instances(tmp_path / 'coco')
    overrides = data.detection_overrides(coco, 1, data.TINY_SWIN)
    # No warmup and a larger step and decay than the recipe's: a weight decay given to a norm
    # (or left out of a weight) by another parameter grouping shows beyond rounding.
    options = [*data.as_cfg_options(overrides), 'randomness.seed=0',
               'param_scheduler.0.start_factor=1.0', 'optim_wrapper.optimizer.lr=1e-3',
               'optim_wrapper.optimizer.weight_decay=0.5']
    ddp, fsdp = tmp_path / 'ddp', tmp_path / 'fsdp'
    runs = [(start(ddp, 1, config=DETECTION, options=options), ddp),
            (start(fsdp, 1, '--fsdp', config=DETECTION, options=options), fsdp)]
    logs = [finish(process, work_dir) for process, work_dir in runs]
    assert all('with_cp=True' in log and "type='SyncBN'" not in log for log in logs)
    assert_close_state(torch.load(fsdp / 'epoch_1.pth', weights_only=True),
                       torch.load(ddp / 'epoch_1.pth', weights_only=True), 'detection')
    for key in ('loss_rpn_cls', 'loss_cls', 'loss_mask'):
        assert list(losses(ddp, key)) == [1]
        assert losses(fsdp, key) == pytest.approx(losses(ddp, key), abs=ATOL)


# --- The switch and the set-ups that are refused --------------------------------------------

def fsdp_config(**entries):
    cfg = Config({'launcher': 'pytorch', 'custom_hooks': [], **entries})
    enable_fsdp(cfg)
    return cfg


def test_switch_names_flexible_runner_and_full_state_dicts_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = fsdp_config(strategy=dict(model_wrapper=dict(use_orig_params=True)))
    check_fsdp(cfg)
    adapt_to_device(cfg)
    assert cfg.runner_type == 'fastmim.FlexibleRunnerKeepingPosition'
    strategy = cfg.strategy.to_dict()
    assert strategy['type'] == 'FullShapeFSDPStrategy'
    # FSDP1 refuses the CPU unless told; torch's CPU offload of gathered state copies nothing.
    assert strategy['model_wrapper'] == dict(use_orig_params=True, device_id='cpu')
    assert strategy['state_dict_cfg']['state_dict_type'] == 'FULL_STATE_DICT'
    assert strategy['state_dict_cfg']['optim_state_dict_config']['offload_to_cpu'] is False


@pytest.mark.parametrize('wrapper, sharded', [
    ('GuardedAmpOptimWrapper', True), ('fastmim.GuardedAmpOptimWrapper', True),
    ('AmpOptimWrapper', True), ('GuardedOptimWrapper', False),
])
def test_fp16_under_fsdp_scales_the_loss_by_all_shards(monkeypatch, wrapper, sharded):
    """On CUDA the recipes' fp16 wrapper gets mmengine's ShardedGradScaler (use_fsdp)."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = fsdp_config(optim_wrapper=dict(type=wrapper, optimizer=dict(type='AdamW')))
    adapt_to_device(cfg)
    scale_losses_across_shards(cfg)
    assert cfg.optim_wrapper.get('use_fsdp', False) is sharded


def _step_with_one_overflowing_shard(rank, init_file, optimizer_cfg, result_file):
    """One loss-scaled AdamW step over this rank's shard of a weight, the gradient of rank 0's
    shard infinite (an fp16 overflow that only its shard holds)."""
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
    torch.distributed.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                                         world_size=2)
    try:
        shard = torch.nn.Parameter(torch.ones(4))
        shard.grad = torch.full((4, ), math.inf if rank == 0 else 1.)
        optimizer_cfg = dict(optimizer_cfg)
        optimizer = getattr(torch.optim, optimizer_cfg.pop('type'))([shard], **optimizer_cfg)
        scaler = ShardedGradScaler(device='cpu', init_scale=1., growth_interval=1)
        scaler.scale(shard.sum())  # the loss a backward pass would have scaled
        scaler.step(optimizer)
        scaler.update()
        torch.save(dict(weight=shard.detach(), scale=scaler.get_scale()), f'{result_file}.{rank}')
    finally:
        torch.distributed.destroy_process_group()


def test_fp16_under_fsdp_skips_an_overflowed_step_on_every_rank(tmp_path):
    """The recipes' optimiser as --fsdp with fp16 on CUDA leaves it: when one rank's gradient
    shard overflows, every rank skips the update and lowers its scale alike (with the recipes'
    fused AdamW, the other ranks stepped and raised theirs)."""
    recipe = Config.fromfile(ROOT / 'configs/_base_/schedules/fastmim_adamw.py').optim_wrapper
    assert recipe.optimizer.fused  # the recipes' default: the case to cover
    cfg = fsdp_config(optim_wrapper=dict(type='GuardedAmpOptimWrapper',
                                         optimizer=recipe.optimizer.to_dict()))
    scale_losses_across_shards(cfg)  # as on CUDA, where adapt_to_device leaves fp16 as it is
    result = str(tmp_path / 'step')
    # fork: pytest's importlib mode leaves this module unimportable by name in a spawned child.
    torch.multiprocessing.start_processes(
        _step_with_one_overflowing_shard,
        args=(str(tmp_path / 'init'), cfg.optim_wrapper.optimizer.to_dict(), result), nprocs=2,
        start_method='fork')
    for rank in range(2):
        outcome = torch.load(f'{result}.{rank}')
        torch.testing.assert_close(outcome['weight'], torch.ones(4), msg=f'rank {rank} stepped')
        assert outcome['scale'] == 0.5, f'rank {rank}'


@pytest.mark.parametrize('entries, fragment', [
    (dict(strategy=dict(state_dict_cfg='local')), "state_dict_cfg='local'"),
    (dict(strategy=dict(model_wrapper=dict(use_orig_params=False))), 'use_orig_params'),
    (dict(launcher='none'), 'tools/dist_train.sh CONFIG N --fsdp'),
])
def test_fsdp_setups_that_save_or_run_the_wrong_thing_are_refused(entries, fragment):
    cfg = fsdp_config(**{key: value for key, value in entries.items() if key != 'strategy'})
    cfg.strategy.update(entries.get('strategy', {}))
    with pytest.raises(LaunchError, match=fragment.replace('(', r'\(').replace(')', r'\)')):
        check_fsdp(cfg)


@pytest.mark.parametrize('entries, fragment', [
    (dict(model_wrapper_cfg=dict(type='MMFullyShardedDataParallel')), "rank 0's shards"),
    (dict(runner_type='fastmim.FlexibleRunnerKeepingPosition',
          strategy=dict(type='FSDPStrategy', state_dict_cfg='full')),
     'no weight gets weight decay'),
    (dict(runner_type='FlexibleRunner',
          strategy=dict(type='FullShapeFSDPStrategy', state_dict_cfg='full')),
     'as the end of the epoch'),
    # Named in its scope, the strategy was not recognised as FSDP and nothing was checked.
    (dict(runner_type='mmengine.FlexibleRunner',
          strategy=dict(type='fastmim.FullShapeFSDPStrategy', state_dict_cfg='full')),
     'as the end of the epoch'),
])
def test_mmengine_fsdp_without_the_switch_is_refused(entries, fragment):
    with pytest.raises(LaunchError, match=fragment):
        check_fsdp(Config(dict(launcher='pytorch', **entries)))


@pytest.mark.parametrize('given, by_epoch, expected', [
    (dict(epoch=5, iter=11), True, dict(epoch=5, iter=11)),  # PreemptionHook's, mid-epoch
    (None, True, dict(epoch=6, iter=10)),  # mmengine's own count: the epoch ends
    (None, False, dict(epoch=5, iter=11)),
])
def test_a_checkpoint_inside_an_epoch_keeps_its_position(given, by_epoch, expected):
    """mmengine's Runner keeps the epoch and iteration given in ``meta`` (``setdefault``);
    FlexibleRunner overwrote them, so FSDP's preemption checkpoints ended their epoch."""
    saved = {}
    runner = types.SimpleNamespace(
        epoch=5, iter=10, cfg=Config(), experiment_name='run', call_hook=None,
        train_dataloader=types.SimpleNamespace(dataset=None),
        message_hub=types.SimpleNamespace(state_dict=dict),
        strategy=types.SimpleNamespace(save_checkpoint=lambda **kwargs: saved.update(kwargs)))
    FlexibleRunnerKeepingPosition.save_checkpoint(runner, 'out', 'iter_11.pth', meta=given,
                                                  by_epoch=by_epoch)
    meta = saved['extra_ckpt']['meta']
    assert (meta['epoch'], meta['iter']) == (expected['epoch'], expected['iter'])


def test_a_rank0_save_of_an_fsdp_model_by_mmengines_runner_is_refused():
    """mmengine's Runner has no strategy; its save would hold rank 0's shards."""
    runner = types.SimpleNamespace(model=FullyShardedDataParallel.__new__(
        FullyShardedDataParallel))
    with pytest.raises(RuntimeError, match="rank 0's shards"):
        CheckpointMetaHook().before_save_checkpoint(runner, {'message_hub': {}})

