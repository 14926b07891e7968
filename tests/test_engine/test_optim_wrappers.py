"""Guarded optimiser wrappers: a non-finite loss never reaches the weights."""
import pytest
import torch
from mmengine.logging import MessageHub
from torch import nn

from fastmim.engine.optim_wrappers import (AutocastOptimWrapper, GuardedOptimWrapper,
                                           NonFiniteLossError)


def make(wrapper_cls=GuardedOptimWrapper, **kwargs):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    wrapper = wrapper_cls(optimizer=torch.optim.SGD(model.parameters(), lr=0.1), **kwargs)
    return model, wrapper


def weights(model):
    return [p.detach().clone() for p in model.parameters()]


def test_finite_loss_updates_weights():
    model, wrapper = make()
    before = weights(model)
    wrapper.update_params(model(torch.ones(2, 4)).sum())
    assert all(not torch.equal(a, b) for a, b in zip(before, weights(model)))


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_nonfinite_loss_is_skipped_and_counted(bad):
    model, wrapper = make()
    before = weights(model)
    wrapper.update_params(model(torch.ones(2, 4)).sum() * bad)
    assert all(torch.equal(a, b) for a, b in zip(before, weights(model)))
    assert wrapper.skipped_steps == 1
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_nonfinite_loss_discards_the_whole_accumulation_window():
    model, wrapper = make(accumulative_counts=2)
    before = weights(model)
    wrapper.update_params(model(torch.ones(2, 4)).sum())  # accumulated, not yet applied
    wrapper.update_params(model(torch.ones(2, 4)).sum() * float('nan'))
    assert all(torch.equal(a, b) for a, b in zip(before, weights(model)))
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_stop_policy_raises():
    model, wrapper = make(on_nonfinite='stop')
    with pytest.raises(NonFiniteLossError, match='nan'):
        wrapper.update_params(model(torch.ones(2, 4)).sum() * float('nan'))
    with pytest.raises(ValueError, match='on_nonfinite'):
        make(on_nonfinite='ignore')


def test_autocast_wrapper_runs_bf16_on_cpu():
    model, wrapper = make(AutocastOptimWrapper, dtype='bfloat16')
    with wrapper.optim_context(model):
        out = model(torch.ones(2, 4))
    assert out.dtype == torch.bfloat16
    before = weights(model)
    wrapper.update_params(out.float().sum())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, weights(model)))


def finite_loss_with_infinite_gradient(model):
    """sqrt at 0: the loss is 0, its gradient +inf (what an overflowing backward gives)."""
    out = model(torch.ones(2, 4))
    return (out - out.detach()).sqrt().sum()


@pytest.mark.parametrize('wrapper_cls', [GuardedOptimWrapper, AutocastOptimWrapper])
@pytest.mark.parametrize('clip_grad', [None, dict(max_norm=1.0)])
def test_infinite_gradients_of_a_finite_loss_never_reach_the_weights(wrapper_cls, clip_grad):
    """Without a loss scaler nothing else stops them: SGD made every weight NaN, and with
    clip_grad torch's clipping multiplied them by inf / inf = NaN."""
    model, wrapper = make(wrapper_cls, clip_grad=clip_grad)
    before = weights(model)
    wrapper.update_params(finite_loss_with_infinite_gradient(model))
    assert all(torch.equal(a, b) for a, b in zip(before, weights(model)))
    assert wrapper.skipped_steps == 1
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
    wrapper.update_params(model(torch.ones(2, 4)).sum())  # training goes on
    assert all(not torch.equal(a, b) for a, b in zip(before, weights(model)))


def test_stop_policy_names_infinite_gradients():
    model, wrapper = make(on_nonfinite='stop')
    with pytest.raises(NonFiniteLossError, match='gradients'):
        wrapper.update_params(finite_loss_with_infinite_gradient(model))


def test_stop_message_counts_iterations_and_epochs_as_the_logs_do():
    """mmengine's RuntimeInfoHook stores the 0-based runner.iter and runner.epoch in the message
    hub; its logs, checkpoints (iter_5.pth, epoch_3.pth) and resume count from 1."""
    hub = MessageHub.get_instance('test_stop_message_counts')
    hub.update_info('iter', 4)
    hub.update_info('epoch', 2)
    hub.update_info('max_epochs', 3)
    model, wrapper = make(on_nonfinite='stop')
    with pytest.raises(NonFiniteLossError, match=r'loss is nan at iteration 5 \(epoch 3\).*'
                       r'on_nonfinite'):
        wrapper.update_params(model(torch.ones(2, 4)).sum() * float('nan'))
