"""CosineAnnealingToMinLR ends where MAE's schedule ends, whatever lr the recipe sets."""
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import OptimWrapper
from mmengine.runner import Runner

import fastmim.engine  # noqa: F401  (registers the scheduler)
from fastmim.registry import PARAM_SCHEDULERS

LR_SCALES = (1.0, 0.7, 0.7**5)  # the head and two layer-decayed groups


def mae_cosine_lr(step, lr, min_lr, steps):
    """MAE's ``adjust_learning_rate`` after warm-up (util/lr_sched.py), written out."""
    return min_lr + (lr - min_lr) * 0.5 * (1. + math.cos(math.pi * step / steps))


def layer_decayed_optimizer(lr):
    """AdamW with one group per lr scale, each at ``lr x scale``, as the layer-decay
    constructor builds it (the configured ``lr`` is the optimiser's default)."""
    groups = [dict(params=[torch.nn.Parameter(torch.zeros(1))], lr=lr * scale)
              for scale in LR_SCALES]
    return OptimWrapper(torch.optim.AdamW(groups, lr=lr))


@pytest.mark.parametrize('lr', [2.4e-3, 4e-3, 1e-4])
def test_every_group_follows_maes_cosine_to_min_lr_times_its_scale(lr):
    min_lr, steps = 1e-6, 12
    wrapper = layer_decayed_optimizer(lr)
    scheduler = PARAM_SCHEDULERS.build(
        dict(type='CosineAnnealingToMinLR', eta_min=min_lr, by_epoch=True, begin=0, end=4,
             T_max=4, convert_to_iter_based=True),
        default_args=dict(optimizer=wrapper, epoch_length=3))
    # mmengine applies a scheduler for steps begin .. end - 1, the iterations that train, as
    # MAE computes the lr of iterations 0 .. steps - 1.
    assert_follows_mae_cosine(wrapper, scheduler, steps, lr, min_lr)


def assert_follows_mae_cosine(wrapper, scheduler, steps, lr, min_lr):
    """Every group's lr at each of ``steps`` is MAE's cosine from ``lr`` to ``min_lr``, times
    the group's layer-decay scale."""
    for step in range(steps):
        if step:
            wrapper.step()
            scheduler.step()
        for group, scale in zip(wrapper.param_groups, LR_SCALES):
            assert group['lr'] == pytest.approx(
                mae_cosine_lr(step, lr, min_lr, steps) * scale, rel=1e-9, abs=1e-15)


def test_a_stale_ratio_is_refused():
    with pytest.raises(ValueError, match='drop eta_min_ratio'):
        PARAM_SCHEDULERS.build(dict(type='CosineAnnealingToMinLR', eta_min_ratio=1e-3, T_max=4),
                               default_args=dict(optimizer=layer_decayed_optimizer(1e-3)))


def test_min_lr_stays_absolute_after_auto_scale_lr():
    """``--auto-scale-lr`` goes through mmengine's ``Runner.scale_lr``, which multiplies every
    group's lr after the optimiser is built and before the schedulers are; as in MAE, where
    ``lr = blr x batch / 256`` and ``min_lr`` is absolute, the schedule starts at the scaled lr
    and still ends at ``min_lr x scale``. The ratio was taken from the optimiser's unscaled
    default lr, so min_lr was scaled too (by 1/8 here)."""
    lr, min_lr, steps, ratio = 2.4e-3, 1e-6, 12, 128 / 1024
    wrapper = layer_decayed_optimizer(lr)
    runner = SimpleNamespace(_train_dataloader=dict(batch_size=128), world_size=1,
                             logger=MMLogger.get_instance('test_auto_scale_lr'),
                             param_schedulers=None)
    Runner.scale_lr(runner, wrapper, dict(base_batch_size=1024, enable=True))
    scheduler = PARAM_SCHEDULERS.build(
        dict(type='CosineAnnealingToMinLR', eta_min=min_lr, by_epoch=False, begin=0, end=steps,
             T_max=steps), default_args=dict(optimizer=wrapper))
    assert_follows_mae_cosine(wrapper, scheduler, steps, lr * ratio, min_lr)


# Schedules whose floor is a fraction of their peak: the demo and the Fashion-MNIST study pick
# a small non-zero end point for their short runs, which should keep its place relative to the
# peak when --auto-scale-lr changes the lr (an absolute eta_min sat at half the fraction at
# twice the batch). The published recipes end at 0 and fine-tuning at MAE's absolute min_lr.
RELATIVE_FLOOR_CONFIGS = ('configs/fastmim/demo_vit_tiny_embedded.py',
                          'configs/experiments/fashion_mnist_pretrain.py')


def lr_at_every_iteration(cfg, lr, epoch_length=4):
    """The lr of each iteration of ``cfg``'s schedule, built as the Runner builds it, for an
    optimiser whose lr is ``lr`` (what ``Runner.scale_lr`` leaves after auto scaling)."""
    wrapper = OptimWrapper(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr))
    schedulers = [PARAM_SCHEDULERS.build(dict(scheduler),
                                         default_args=dict(optimizer=wrapper,
                                                           epoch_length=epoch_length))
                  for scheduler in cfg.param_scheduler]
    lrs = []
    for _ in range(cfg.train_cfg.max_epochs * epoch_length):
        lrs.append(wrapper.param_groups[0]['lr'])
        wrapper.step()
        for scheduler in schedulers:
            scheduler.step()
    return lrs


@pytest.mark.parametrize('path', RELATIVE_FLOOR_CONFIGS)
def test_short_schedules_keep_their_shape_after_auto_scale_lr(path):
    cfg = Config.fromfile(str(Path(__file__).resolve().parents[2] / path))
    lr = cfg.optim_wrapper.optimizer.lr
    configured, doubled = (lr_at_every_iteration(cfg, lr * scale) for scale in (1, 2))
    assert 0 < configured[-1] < max(configured)  # a floor above 0 that the cosine approaches
    assert doubled == pytest.approx([2 * value for value in configured], rel=1e-9)
