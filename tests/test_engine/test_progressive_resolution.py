"""Progressive-resolution pre-training: stage switches, exact lr schedule in epochs, resume."""
import copy
import math
import os
import os.path as osp
import signal

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper
from mmengine.runner import Runner

import fastmim  # noqa: F401  registers modules, safe checkpoint I/O
from fastmim.engine.hooks.preemption_hook import TrainingPreempted
from fastmim.engine.hooks.progressive_resolution_hook import (PerUpdateParamSchedulerHook,
                                                              ProgressiveResolutionHook,
                                                              parse_stages,
                                                              stage_dataloader_config,
                                                              start_accumulation_windows)
from fastmim.registry import HOOKS

pytestmark = pytest.mark.usefixtures('one_thread')

CONFIG_DIR = osp.join(osp.dirname(__file__), '..', '..', 'configs')
NUM_SAMPLES = 10
UPDATE_BATCH = 4
MAX_EPOCHS = 3
# Epoch 0: 32 px, 2 iterations; epoch 1: 48 px, 5 iterations (the last cannot fill a window of
# 2); epoch 2: 64 px, 10 iterations (the last 2 cannot fill a window of 4). 2 updates each.
STAGES = [
    dict(epoch=0, input_size=32, batch_size=4, accumulative_counts=1),
    dict(epoch=1, input_size=48, batch_size=2, accumulative_counts=2),
    dict(epoch=2, input_size=64, batch_size=1, accumulative_counts=4),
]
UPDATES_PER_EPOCH = NUM_SAMPLES // UPDATE_BATCH


def tiny_config(tiny_pretraining, work_dir, progressive=True):
    cfg = dict(
        **tiny_pretraining(work_dir, batch_size=UPDATE_BATCH, num_samples=NUM_SAMPLES,
                           max_epochs=MAX_EPOCHS),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
                 convert_to_iter_based=True),
            dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True, begin=1, end=MAX_EPOCHS,
                 T_max=MAX_EPOCHS - 1, convert_to_iter_based=True),
        ],
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1),
            checkpoint=dict(type='CheckpointHook', interval=1),
            param_scheduler=dict(type='ParamSchedulerHook')),
        custom_hooks=[dict(type='CheckpointMetaHook')],
        randomness=dict(seed=0),
        log_level='WARNING',
    )
    if progressive:
        cfg['default_hooks']['param_scheduler'] = dict(type='PerUpdateParamSchedulerHook')
        cfg['custom_hooks'].append(dict(type='ProgressiveResolutionHook', stages=STAGES))
    return Config(cfg)


class Recorder(Hook):
    """Records what the backbone receives and the lr each optimiser step applies."""

    def __init__(self):
        self.backbone_inputs = []  # (epoch, batch, height, width) per forward
        self.updates = []  # (epoch, lr) per optimiser step
        self.start_iter = None
        self.max_iters = None  # runner.max_iters at the end, for ETA and last-iteration checks

    def before_train(self, runner):
        self.start_iter = runner.iter
        runner.model.backbone.register_forward_pre_hook(
            lambda module, args: self.backbone_inputs.append((runner.epoch, *args[0].shape[:1],
                                                              *args[0].shape[2:])))
        runner.optim_wrapper.optimizer.register_step_pre_hook(
            lambda optimizer, args, kwargs: self.updates.append(
                (runner.epoch, optimizer.param_groups[0]['lr'])))

    def after_train(self, runner):
        self.max_iters = runner.max_iters


def train(cfg):
    runner = Runner.from_cfg(cfg)
    recorder = Recorder()
    runner.register_hook(recorder)
    runner.train()
    steps = {int(state['step']) for state in runner.optim_wrapper.optimizer.state.values()}
    return recorder, steps


@pytest.fixture(scope='module')
def runs(tmp_path_factory, tiny_pretraining):
    """One progressive run, one run without stages, and a resume from the epoch-2 checkpoint."""
    root = tmp_path_factory.mktemp('progressive')
    progressive = train(tiny_config(tiny_pretraining, root / 'progressive'))
    reference = train(tiny_config(tiny_pretraining, root / 'reference', progressive=False))

    resume_cfg = tiny_config(tiny_pretraining, root / 'resumed')
    resume_cfg.resume = True
    resume_cfg.load_from = str(root / 'progressive' / 'epoch_2.pth')
    resumed = train(resume_cfg)
    return progressive, reference, resumed


def expected_backbone_inputs(epochs):
    inputs = []
    for epoch in epochs:
        stage = max((s for s in STAGES if s['epoch'] <= epoch), key=lambda s: s['epoch'])
        size = stage['input_size']
        inputs += [(epoch, stage['batch_size'], size, size)] * (NUM_SAMPLES // stage['batch_size'])
    return inputs


def test_each_epoch_sees_its_stage_size_and_batch(runs):
    (progressive, steps), _, _ = runs
    assert progressive.backbone_inputs == expected_backbone_inputs(range(MAX_EPOCHS))
    assert progressive.max_iters == len(progressive.backbone_inputs) == 2 + 5 + 10
    # Leftover iterations that cannot fill a window make no update: 2 updates every epoch.
    assert [epoch for epoch, _ in progressive.updates] == [
        epoch for epoch in range(MAX_EPOCHS) for _ in range(UPDATES_PER_EPOCH)]
    assert steps == {MAX_EPOCHS * UPDATES_PER_EPOCH}


def test_lr_of_every_update_matches_a_run_without_stages(runs):
    (progressive, _), (reference, reference_steps), _ = runs
    assert reference_steps == {MAX_EPOCHS * UPDATES_PER_EPOCH}
    assert [epoch for epoch, _ in progressive.updates] == [epoch for epoch, _ in reference.updates]
    assert [lr for _, lr in progressive.updates] == pytest.approx(
        [lr for _, lr in reference.updates], rel=1e-12)
    # The schedule really moves: warmup from 0.1 x lr, then the half cosine over the last two
    # epochs (4 updates), in closed form.
    cosine = [1e-3 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)]
    assert reference.updates[0][1] == pytest.approx(1e-4)
    assert [lr for _, lr in reference.updates[2:]] == pytest.approx(cosine, rel=1e-12)


def test_resume_continues_in_the_stage_of_its_epoch(runs):
    (progressive, _), _, (resumed, resumed_steps) = runs
    iterations_before_epoch_2 = len([x for x in progressive.backbone_inputs if x[0] < 2])
    assert resumed.start_iter == iterations_before_epoch_2 == 2 + 5
    assert resumed.backbone_inputs == expected_backbone_inputs([2])
    assert resumed.max_iters == 2 + 5 + 10
    epoch_2_updates = [update for update in progressive.updates if update[0] == 2]
    assert [epoch for epoch, _ in resumed.updates] == [epoch for epoch, _ in epoch_2_updates]
    assert [lr for _, lr in resumed.updates] == pytest.approx(
        [lr for _, lr in epoch_2_updates], rel=1e-12)
    assert resumed_steps == {MAX_EPOCHS * UPDATES_PER_EPOCH}


def test_accumulated_update_equals_one_update_of_the_whole_batch():
    """A window of 2 batches of 2 gives the gradient of the mean loss over all 4 samples, and a
    partial window left at the end of an epoch is dropped at the next epoch start."""
    torch.manual_seed(0)
    inputs, targets = torch.randn(6, 3), torch.randn(6, 1)
    model = torch.nn.Linear(3, 1)
    reference = copy.deepcopy(model)
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1.))

    start_accumulation_windows(wrapper, 2)
    for batch in range(3):  # 2 full batches make one window; the 3rd is a leftover
        rows = slice(2 * batch, 2 * batch + 2)
        wrapper.update_params(torch.nn.functional.mse_loss(model(inputs[rows]), targets[rows]))
    start_accumulation_windows(wrapper, 2)

    torch.nn.functional.mse_loss(reference(inputs[:4]), targets[:4]).backward()
    for param, reference_param in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(param, reference_param - reference_param.grad, atol=1e-6)
        assert param.grad is None or not param.grad.any()


@pytest.mark.parametrize('stages, message', [
    ([dict(epoch=1, input_size=96, batch_size=8)], r'stages\[0\] must start at epoch 0'),
    ([dict(epoch=0, input_size=96, batch_size=8), dict(epoch=0, input_size=128, batch_size=8)],
     r'stages\[1\]: epoch 0 must be greater'),
    ([dict(epoch=0, input_size=0, batch_size=8)], r'stages\[0\]: input_size must be a positive'),
    ([dict(epoch=0, input_size=96, batch_size=8),
      dict(epoch=5, input_size=128, batch_size=4, accumulative_counts=1)],
     r'stages\[1\]: batch_size x accumulative_counts = 4 x 1 = 4, but stages\[0\] has 8'),
    ([dict(epoch=0, input_size=96, batch=8)], r"stages\[0\].*unknown keys \['batch'\]"),
])
def test_bad_stages_are_named(stages, message):
    with pytest.raises(ValueError, match=message):
        parse_stages(stages)


@pytest.mark.parametrize('change, message', [
    (dict(train_dataloader=dict(batch_size=2)),
     r'train_dataloader.batch_size is 2.*must be the batch of one optimiser update.*4'),
    (dict(default_hooks=dict(param_scheduler=dict(type='ParamSchedulerHook'))),
     r"param_scheduler=dict\(type='PerUpdateParamSchedulerHook'\)"),
    # A stage size the mask blocks do not tile failed only when that stage began (epoch 400
    # of a published schedule).
    (dict(custom_hooks=[dict(type='ProgressiveResolutionHook', stages=[
        STAGES[0], {**STAGES[1], 'input_size': 40}, STAGES[2]])]),
     r'stages\[1\] \(from epoch 1\): input 40x40 is not a multiple of the mask block_size'),
])
def test_runner_settings_that_would_break_the_schedule_are_refused(tmp_path, change, message,
                                                                   tiny_pretraining):
    cfg = tiny_config(tiny_pretraining, tmp_path)
    cfg.merge_from_dict(change)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=message):
        runner.train()


def test_published_style_config_keeps_the_update_batch_and_schedule():
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'fastmim', 'vit_b_hog_800e_progressive.py'))
    base = Config.fromfile(osp.join(CONFIG_DIR, 'fastmim', 'vit_b_hog_800e.py'))
    hooks = [HOOKS.build(copy.deepcopy(hook)) for hook in cfg.custom_hooks]
    assert cfg.default_hooks.checkpoint_meta.type == 'CheckpointMetaHook'
    progressive = next(hook for hook in hooks if isinstance(hook, ProgressiveResolutionHook))
    assert {stage.update_batch for stage in progressive.stages} == {cfg.train_dataloader.batch_size}
    assert cfg.param_scheduler == base.param_scheduler and cfg.optim_wrapper.optimizer.lr == 2.4e-3
    assert isinstance(HOOKS.build(cfg.default_hooks.param_scheduler), PerUpdateParamSchedulerHook)

    last = stage_dataloader_config(cfg.train_dataloader, progressive.stages[-1])
    crops = [t for t in last['dataset']['pipeline'] if t['type'] == 'RandomResizedCrop']
    assert last['batch_size'] == 256 and [t['size'] for t in crops] == [128]


def test_a_run_resumed_inside_an_epoch_knows_its_last_iteration(tmp_path, tiny_pretraining):
    """A preemption checkpoint is written inside an epoch. The hook counted that epoch's done
    batches twice (in runner.iter and in the epoch's iterations), so runner.max_iters was too
    large until the next stage began: in the last stage ETA stayed wrong and
    CheckpointHook(by_epoch=False) never saved the last iteration."""
    cfg = tiny_config(tiny_pretraining, tmp_path / 'run')
    cfg.train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=MAX_EPOCHS)
    cfg.merge_from_dict(dict(
        train_dataloader=dict(sampler=dict(type='ResumableSampler')),
        # iteration 15: 2 + 5, then 2 windows of 4 in epoch 2 (8 of its 10 batches)
        default_hooks=dict(checkpoint=dict(by_epoch=False, interval=5))))
    cfg.param_scheduler = None  # the lr schedule is no matter here
    last_iteration = 2 + 5 + 10
    resumed_cfg = copy.deepcopy(cfg)
    train(cfg)

    resumed_cfg.merge_from_dict(dict(
        resume=True, load_from=str(tmp_path / 'run' / 'iter_15.pth'),
        work_dir=str(tmp_path / 'resumed'), experiment_name=str(tmp_path / 'resumed')))
    resumed, _ = train(resumed_cfg)
    assert resumed.start_iter == 15
    assert resumed.max_iters == last_iteration
    assert (tmp_path / 'resumed' / f'iter_{last_iteration}.pth').exists()


def test_a_resume_inside_a_window_keeps_the_epoch_s_windows(tmp_path, tiny_pretraining,
                                                            capsys):
    """The hook restarted the windows at the resumed batch: resumed 3 batches into epoch 2
    (windows of 4), the remaining 7 made one update instead of the uninterrupted run's two,
    and without the warning a plain accumulating run gives."""
    cfg = tiny_config(tiny_pretraining, tmp_path / 'run')
    cfg.train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=MAX_EPOCHS)
    cfg.merge_from_dict(dict(
        train_dataloader=dict(sampler=dict(type='ResumableSampler')),
        default_hooks=dict(checkpoint=dict(by_epoch=False, interval=5))))
    resumed_cfg = copy.deepcopy(cfg)
    uninterrupted, _ = train(cfg)

    resumed_cfg.merge_from_dict(dict(
        resume=True, load_from=str(tmp_path / 'run' / 'iter_10.pth'),  # 2 + 5, then 3 of 10
        work_dir=str(tmp_path / 'resumed'), experiment_name=str(tmp_path / 'resumed')))
    resumed, steps = train(resumed_cfg)
    epoch_2_updates = [update for update in uninterrupted.updates if update[0] == 2]
    assert len(epoch_2_updates) == UPDATES_PER_EPOCH
    assert [epoch for epoch, _ in resumed.updates] == [epoch for epoch, _ in epoch_2_updates]
    assert [lr for _, lr in resumed.updates] == pytest.approx(
        [lr for _, lr in epoch_2_updates], rel=1e-12)
    assert steps == {MAX_EPOCHS * UPDATES_PER_EPOCH}
    assert 'resuming epoch 3 after 3 iterations, inside a window of 4 accumulated iterations' \
        in capsys.readouterr().out


@pytest.mark.parametrize('checkpoint, first_inside', [
    # iterations 1-2 epoch 1 (no accumulation), 3-7 epoch 2 (windows of 2), 8-17 epoch 3
    # (windows of 4): a checkpoint every 2 iterations falls 1 iteration into epoch 3
    (dict(by_epoch=False, interval=2), 8),
    (dict(by_epoch=True, interval=1), None),  # every epoch starts its windows
])
def test_a_later_stage_s_windows_are_checked_when_training_starts(
        tmp_path, tiny_pretraining, monkeypatch, checkpoint, first_inside):
    """The check of checkpoints inside accumulation windows runs once, before training, and
    read the optimiser wrapper's accumulative_counts: 1 in a progressive run (the hook sets
    each stage's when the stage starts), so checkpoints inside a later stage's windows, which
    no run resumes exactly, went unmentioned."""
    import fastmim.engine.accumulation as accumulation_module
    warned = []
    monkeypatch.setattr(accumulation_module, 'print_log',
                        lambda message, **kwargs: warned.append(message))
    warned_at_start = []

    class CountWarnings(Hook):
        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if not warned_at_start:
                warned_at_start.append(len(warned))

    cfg = tiny_config(tiny_pretraining, tmp_path)
    cfg.merge_from_dict(dict(default_hooks=dict(checkpoint=checkpoint)))
    runner = Runner.from_cfg(cfg)
    runner.register_hook(CountWarnings())
    runner.train()
    if first_inside is None:
        assert warned == []
        return
    assert warned_at_start == [1] and len(warned) == 1
    assert warned[0].startswith(
        'default_hooks.checkpoint saves every 2 iterations, inside windows of '
        'ProgressiveResolutionHook stages[2].accumulative_counts=4 accumulated iterations '
        f'(first at iteration {first_inside}): '), warned
    assert warned[0].split('; set ', 1)[1].startswith('default_hooks.checkpoint.by_epoch=True')


PROGRESSIVE_CONFIG = osp.join(CONFIG_DIR, 'fastmim', 'vit_b_hog_800e_progressive.py')


def test_changing_the_stages_variable_alone_is_named(load_config_log):
    """progressive_stages is copied into the hook when the file is read: --cfg-options
    progressive_stages.0.batch_size=4 changed nothing, and the hook's errors then quoted the
    values the user thought were replaced."""
    logged = '\n'.join(load_config_log(PROGRESSIVE_CONFIG,
                                       {'progressive_stages.0.batch_size': 4}))
    assert ('progressive_stages differs from custom_hooks[0].stages, which the hook runs '
            '(the variable was copied into it when the file was read); change '
            'custom_hooks.0.stages (e.g. --cfg-options custom_hooks.0.stages.0.batch_size=4)'
            in logged)
    assert 'progressive_stages' not in '\n'.join(load_config_log(PROGRESSIVE_CONFIG))
    assert 'progressive_stages' not in '\n'.join(load_config_log(
        PROGRESSIVE_CONFIG, {'custom_hooks.0.stages.0.batch_size': 4}))


class SignalsDuring(Hook):
    """Sends SIGUSR1 to its own process during iteration ``iteration`` (counted from 1), as
    SLURM does when it preempts the job."""

    def __init__(self, iteration):
        self.iteration = iteration

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.iteration:
            os.kill(os.getpid(), signal.SIGUSR1)


def preemptible_config(tiny_pretraining, work_dir, experiment):
    """:func:`tiny_config` with the loop, sampler and hook of a run that resumes exactly from
    a preemption checkpoint; ``experiment`` names its message hub (one per runner)."""
    cfg = tiny_config(tiny_pretraining, work_dir)
    cfg.train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=MAX_EPOCHS)
    cfg.merge_from_dict(dict(
        experiment_name=f'{work_dir}_{experiment}',
        train_dataloader=dict(sampler=dict(type='ResumableSampler')),
        default_hooks=dict(preemption=dict(type='PreemptionHook'))))
    return cfg


def train_to_the_end_or_preemption(cfg, signal_iteration=None):
    """The final weights and optimiser state of a run, or None when it was preempted."""
    runner = Runner.from_cfg(cfg)
    if signal_iteration is not None:
        runner.register_hook(SignalsDuring(signal_iteration))
    try:
        runner.train()
    except TrainingPreempted:
        return None
    return runner.model.state_dict(), runner.optim_wrapper.state_dict()


@pytest.fixture(scope='module')
def uninterrupted_preemptible_run(tmp_path_factory, tiny_pretraining):
    work_dir = tmp_path_factory.mktemp('uninterrupted')
    return train_to_the_end_or_preemption(preemptible_config(tiny_pretraining, work_dir, 'run'))


# Iterations 3-7 are epoch 2 (windows of 2: iteration 7 is dropped), 8-17 epoch 3 (windows of
# 4: iterations 16 and 17 are dropped).
def test_a_signal_in_an_epoch_s_dropped_iterations_stops_on_the_epoch_checkpoint(
        tmp_path, tiny_pretraining, uninterrupted_preemptible_run):
    """The hook waits for no optimiser update in the dropped iterations: the end of the epoch
    is a window boundary, where CheckpointHook has just saved ``epoch_2.pth``. The run stops on
    that file, with no second copy of it, and resumes exactly."""
    preempted = train_to_the_end_or_preemption(
        preemptible_config(tiny_pretraining, tmp_path, 'preempted'), 7) is None
    assert preempted
    saved = tmp_path / 'epoch_2.pth'
    assert (tmp_path / 'last_checkpoint').read_text().strip() == str(saved)
    assert sorted(path.name for path in tmp_path.glob('*.pth')) == ['epoch_1.pth', 'epoch_2.pth']
    meta = torch.load(saved, weights_only=True)['meta']
    assert (meta['epoch'], meta['iter']) == (2, 7)

    resumed_cfg = preemptible_config(tiny_pretraining, tmp_path, 'resumed')
    resumed_cfg.resume = True
    resumed = train_to_the_end_or_preemption(resumed_cfg)
    torch.testing.assert_close(resumed, uninterrupted_preemptible_run, rtol=0, atol=0)


@pytest.mark.parametrize('signal_iteration', [16, 17])
def test_a_signal_in_the_last_epoch_s_dropped_iterations_lets_the_run_finish(
        tmp_path, tiny_pretraining, uninterrupted_preemptible_run, signal_iteration):
    """After the last epoch the run is complete: a signal in its dropped iterations saved a
    second copy of ``epoch_3.pth`` as ``iter_17.pth``, named it in ``last_checkpoint`` and
    stopped as preempted, so that a requeue script started the finished run again."""
    finished = train_to_the_end_or_preemption(
        preemptible_config(tiny_pretraining, tmp_path, 'signalled'), signal_iteration)
    assert finished is not None
    torch.testing.assert_close(finished, uninterrupted_preemptible_run, rtol=0, atol=0)
    assert sorted(path.name for path in tmp_path.glob('*.pth')) == [
        'epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth']
    assert (tmp_path / 'last_checkpoint').read_text().strip() == str(tmp_path / 'epoch_3.pth')
