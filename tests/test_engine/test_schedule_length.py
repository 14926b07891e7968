"""load_config names a schedule that does not span the training (fastmim/engine/schedule_length.py):
mmengine runs such a config without a word, and the result is worse for the wrong reason."""
from pathlib import Path

import pytest
from mmengine.config import Config

from fastmim.engine.schedule_length import (LENGTH_VARIABLES, WARMUP_VARIABLES,
                                             schedule_length_problems)

ROOT = Path(__file__).resolve().parents[2]
VIT_B = ROOT / 'configs' / 'fastmim' / 'vit_b_hog_800e.py'
SHIPPED = sorted(path for pattern in ('configs/**/*.py', 'projects/*/configs/**/*.py')
                 for path in ROOT.glob(pattern) if '_base_' not in path.parts)


def _schedule(warmup, end, t_max=None, **cosine):
    return [dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=warmup),
            dict(type='CosineAnnealingLR', by_epoch=True, begin=warmup, end=end,
                 T_max=end - warmup if t_max is None else t_max, **cosine)]


def test_shortening_training_on_the_command_line_names_the_unfinished_cosine(load_config_log):
    """The 800-epoch cosine of vit_b_hog_800e.py stopped at an eighth of its way for a
    100-epoch ablation run with --cfg-options train_cfg.max_epochs=100."""
    logged = load_config_log(VIT_B, {'train_cfg.max_epochs': 100})
    assert f'{VIT_B}: training stops at epoch 100 (train_cfg), before param_scheduler[1] ' \
        '(CosineAnnealingLR) ends at epoch 800' in '\n'.join(logged)
    assert not [line for line in load_config_log(VIT_B) if 'param_scheduler' in line]
    # the documented way (docs/pretrain.md) leaves the inherited variable behind: no warning
    assert not [line for line in load_config_log(VIT_B, {'train_cfg.max_epochs': 400,
                                                         'param_scheduler.1.end': 400,
                                                         'param_scheduler.1.T_max': 380})
                if 'max_epochs' in line or 'param_scheduler' in line]


def test_a_child_config_that_only_sets_the_variable_is_named(tmp_path, load_config_log):
    child = tmp_path / 'vit_b_hog_100e.py'
    child.write_text(f"_base_ = ['{VIT_B}']\nmax_epochs = 100\n")
    [warning] = [line for line in load_config_log(child) if 'max_epochs' in line]
    assert 'the variable max_epochs (100) differs from train_cfg.max_epochs (800), which is ' \
        'the one the loop runs' in warning
    child.write_text(f"_base_ = ['{VIT_B}']\nmax_epochs = 100\ntrain_cfg = dict(max_epochs=100)\n"
                     "param_scheduler = [dict(type='CosineAnnealingLR', end=100, T_max=100)]\n")
    assert not [line for line in load_config_log(child) if 'max_epochs' in line]


def test_a_warmup_set_by_its_variable_alone_is_named(tmp_path, load_config_log):
    """warmup_epochs sits beside max_epochs in every schedule file and was just as dead once
    read: warmup_epochs = 40 in a child config (or on the command line) kept the 20-epoch
    warmup without a word."""
    child = tmp_path / 'vit_b_hog_warm40.py'
    child.write_text(f"_base_ = ['{VIT_B}']\nwarmup_epochs = 40\n")
    [warning] = [line for line in load_config_log(child) if 'warmup_epochs' in line]
    assert 'the variable warmup_epochs (40) differs from the end of the warmup, ' \
        'param_scheduler[0] (LinearLR) ends at epoch 20' in warning
    logged = load_config_log(VIT_B, {'warmup_epochs': 40})
    assert [line for line in logged if 'the variable warmup_epochs (40)' in line]
    logged = load_config_log(VIT_B, {'max_epochs': 400})
    assert [line for line in logged if 'the variable max_epochs (400) differs' in line]
    # the variable and the schedule agree: nothing to say
    assert not [line for line in load_config_log(VIT_B) if 'warmup_epochs' in line]
    # the warmup set where it runs (docs/pretrain.md's way): the file's variable is left behind
    assert not [line for line in load_config_log(child, {
        'param_scheduler.0.end': 40, 'param_scheduler.1.begin': 40,
        'param_scheduler.1.T_max': 760}) if 'warmup_epochs' in line]
    # an option of the schedule that leaves the warmup as it was says nothing of it
    assert [line for line in load_config_log(child, {'param_scheduler.1.eta_min': 1e-6})
            if 'the variable warmup_epochs (40)' in line]


def test_a_schedule_that_ends_before_training_is_named_unless_it_is_a_warmup():
    cfg = Config(dict(train_cfg=dict(max_epochs=120), param_scheduler=_schedule(10, 100)))
    assert schedule_length_problems(cfg) == [
        'param_scheduler[1] (CosineAnnealingLR) ends at epoch 100, but training runs to epoch '
        '120 (train_cfg): epochs 100-120 run at the final lr of the schedule; set its end (and '
        'T_max) to the training length']
    warmup_only = Config(dict(train_cfg=dict(max_epochs=120),
                              param_scheduler=_schedule(10, 100)[:1]))
    assert schedule_length_problems(warmup_only) == []
    assert schedule_length_problems(Config(dict(train_cfg=dict(max_epochs=100),
                                                param_scheduler=_schedule(10, 100)))) == []


def test_a_cosine_whose_t_max_is_not_its_span_is_named():
    cfg = Config(dict(train_cfg=dict(max_epochs=100), param_scheduler=_schedule(10, 100, 100)))
    assert schedule_length_problems(cfg) == [
        'param_scheduler[1] (CosineAnnealingLR) has T_max=100 but spans 90 epochs (begin 10, '
        'end 100): its cosine does not end at eta_min at its end; make T_max end - begin']


def test_iteration_schedulers_are_measured_against_iteration_loops_only():
    """An epoch loop's per-iteration warmup (mmdet's LinearLR end=1000, by_epoch=False) is not
    compared with max_epochs; an iteration loop's poly schedule is compared with max_iters."""
    warmup = dict(type='LinearLR', by_epoch=False, begin=0, end=1000)
    epochs = Config(dict(train_cfg=dict(max_epochs=12), param_scheduler=[
        warmup, dict(type='MultiStepLR', by_epoch=True, begin=0, end=12, milestones=[8, 11])]))
    assert schedule_length_problems(epochs) == []
    poly = dict(type='PolyLR', by_epoch=False, begin=1500, end=160000)
    iterations = Config(dict(train_cfg=dict(type='IterBasedTrainLoop', max_iters=80000),
                             param_scheduler=[warmup, poly]))
    [problem] = schedule_length_problems(iterations)
    assert problem.startswith('training stops at iteration 80000 (train_cfg), before '
                              'param_scheduler[1] (PolyLR) ends at iteration 160000')


def test_shipped_configs_have_schedules_that_span_their_training():
    for config in SHIPPED:
        variables = LENGTH_VARIABLES + WARMUP_VARIABLES  # as if each file assigned them all
        assert schedule_length_problems(Config.fromfile(str(config)), variables) == [], config


def _stepped_lrs(schedulers, optimizer, steps):
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
    return lrs


def _demo_schedulers(warmup_steps, steps=6):
    """The demo's schedule in steps: linear warmup from 1e-3 of lr 1.0, then a cosine."""
    import torch
    from mmengine.optim.scheduler import CosineAnnealingLR, LinearLR
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.)
    return optimizer, [
        LinearLR(optimizer, start_factor=1e-3, by_epoch=False, begin=0, end=warmup_steps),
        CosineAnnealingLR(optimizer, eta_min=0., by_epoch=False, begin=warmup_steps,
                          end=steps, T_max=steps - warmup_steps)]


def test_a_warmup_of_one_step_is_named_and_one_of_two_steps_is_not():
    """mmengine's LinearLR reaches end_factor only over 2+ steps: over one it applies its
    start_factor, and the cosine after it scales that lr, for the whole run. A demo shrunk
    to one batch per epoch (its 1-epoch warmup converted to 1 iteration) trained at lr x 1e-3
    without a word."""
    from fastmim.engine.schedule_length import one_step_warmups
    optimizer, schedulers = _demo_schedulers(warmup_steps=1)
    assert max(_stepped_lrs(schedulers, optimizer, 6)) < 1.1e-3  # the premise, in mmengine
    problems = one_step_warmups(schedulers)
    assert len(problems) == 1
    assert problems[0].startswith('param_scheduler[0] (LinearLR) spans one iteration '
                                  '(iterations 0 to 1)')
    assert 'lr x 0.001 for the whole run' in problems[0]

    optimizer, schedulers = _demo_schedulers(warmup_steps=2)
    assert max(_stepped_lrs(schedulers, optimizer, 6)) == pytest.approx(1.)  # reached
    assert one_step_warmups(schedulers) == []
    assert one_step_warmups({'generator': schedulers}) == []
    assert one_step_warmups(None) == []


DEMO = ROOT / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'


def test_a_scheduler_shortened_to_no_epoch_is_refused_at_load_in_epochs():
    """``--cfg-options train_cfg.max_epochs=1 param_scheduler.1.end=1`` on the demo leaves its
    cosine (begun after the 1-epoch warmup) no epoch: mmengine would refuse it once the Runner
    is built, as 'begin=4, end=4' in iterations, naming no entry."""
    from fastmim.engine.config_loading import load_config
    from fastmim.errors import LaunchError
    with pytest.raises(LaunchError) as refused:
        load_config(str(DEMO), {'train_cfg.max_epochs': 1, 'param_scheduler.1.end': 1})
    message = str(refused.value)
    assert message.startswith(f'{DEMO}: param_scheduler[1] (CosineAnnealingLR) begins at '
                              'epoch 1 and ends at epoch 1: a scheduler must end after it '
                              'begins')
    assert 'param_scheduler[0] (LinearLR) runs to epoch 1' in message
    assert ('e.g. param_scheduler.0.end=0.5 param_scheduler.1.begin=0.5 '
            'param_scheduler.1.T_max=0.5') in message
    assert 'train_cfg.max_epochs=1' in message


@pytest.mark.parametrize('options', [
    {'train_cfg.max_epochs': 2, 'param_scheduler.1.end': 2, 'param_scheduler.1.T_max': 1},
    {'train_cfg.max_epochs': 1},  # the cosine outlasts training: warned, not refused
    # what the refusal above suggests
    {'train_cfg.max_epochs': 1, 'param_scheduler.1.end': 1, 'param_scheduler.0.end': 0.5,
     'param_scheduler.1.begin': 0.5, 'param_scheduler.1.T_max': 0.5},
])
def test_a_shortened_schedule_that_spans_its_epochs_still_loads(options):
    from fastmim.engine.config_loading import load_config
    cfg = load_config(str(DEMO), options)
    assert cfg.train_cfg.max_epochs == options['train_cfg.max_epochs']


def test_an_empty_iteration_scheduler_is_named_in_iterations():
    from fastmim.engine.schedule_length import empty_scheduler_spans
    cfg = Config(dict(train_cfg=dict(max_iters=100), param_scheduler=[
        dict(type='LinearLR', by_epoch=False, begin=0, end=50),
        dict(type='PolyLR', by_epoch=False, begin=60, end=40),
        dict(type='ConstantLR', by_epoch=False, begin=40)]))  # no end: runs to the end
    assert empty_scheduler_spans(cfg) == [
        'param_scheduler[1] (PolyLR) begins at iteration 60 and ends at iteration 40: a '
        'scheduler must end after it begins (mmengine refuses it when training starts); set '
        'param_scheduler.1.end after 60']
