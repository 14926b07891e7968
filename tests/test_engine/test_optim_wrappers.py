"""Guarded optimiser wrappers: a non-finite loss never reaches the weights."""
import math

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

from fastmim.engine.hooks import CheckpointMetaHook, SafeCheckpointHook
from fastmim.engine.optim_wrappers import (AutocastOptimWrapper, GuardedOptimWrapper,
                                           NonFiniteLossError)
from fastmim.logged_scalars import read_records, scalars_files


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


def nan_loss(model):
    return model(torch.ones(2, 4)).sum() * float('nan')


@pytest.mark.parametrize('bad_loss', [nan_loss, finite_loss_with_infinite_gradient])
def test_a_diverged_run_stops_after_max_consecutive_skips(bad_loss):
    """A run whose every step gave NaN skipped every update and went on for days, saving the
    same weights; an applied update starts the count afresh."""
    model, wrapper = make(max_consecutive_skips=3)
    for _ in range(2):
        wrapper.update_params(bad_loss(model))
    wrapper.update_params(model(torch.ones(2, 4)).sum())
    assert wrapper.consecutive_skips == 0
    for _ in range(2):
        wrapper.update_params(bad_loss(model))
    before = weights(model)
    with pytest.raises(NonFiniteLossError, match=r'3 updates in a row skipped \(optim_wrapper'
                       r'.max_consecutive_skips=3\).*diverged.*--resume.*lower lr.*clip_grad'):
        wrapper.update_params(bad_loss(model))
    assert all(torch.equal(a, b) for a, b in zip(before, weights(model)))


def test_max_consecutive_skips_default_and_bad_values():
    assert make()[1].max_consecutive_skips == 100
    make(max_consecutive_skips=None)  # never stops
    for bad in (0, 2.5, True, '10'):
        with pytest.raises(ValueError, match=r'max_consecutive_skips must be a whole number'):
            make(max_consecutive_skips=bad)


class NanAtIteration(BaseModel):
    """A linear model whose loss is NaN at one iteration (counted from 1, as the logs count;
    read from the message hub, so a resumed run's iterations count on)."""

    def __init__(self, nan_iteration):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.nan_iteration = nan_iteration

    def forward(self, inputs, data_samples=None, mode='loss'):
        loss = self.linear(torch.stack(inputs)).pow(2).mean()
        iteration = MessageHub.get_current_instance().get_info('iter') + 1
        return dict(loss=loss * float('nan') if iteration == self.nan_iteration else loss)


def nan_at_iteration_2_runner(work_dir, name, max_iters=5, checkpoint=None, **kwargs):
    """A runner logging every iteration's moving average (window 10) of a loss NaN at
    iteration 2; ``checkpoint``: its checkpoint hook, if any."""
    dataset = [dict(inputs=torch.ones(4) * i) for i in range(8)]
    torch.manual_seed(0)  # the same initial weights in every run
    return Runner(
        model=NanAtIteration(nan_iteration=2), work_dir=str(work_dir),
        train_dataloader=dict(dataset=dataset, sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='pseudo_collate'), batch_size=1),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(type=GuardedOptimWrapper, optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1), checkpoint=checkpoint,
                           checkpoint_meta=dict(type=CheckpointMetaHook)),
        log_processor=dict(window_size=10), experiment_name=name, **kwargs)


def logged_rows(runner):
    (scalars, ) = scalars_files(runner.log_dir)
    return read_records(scalars)


def test_a_skipped_step_leaves_the_logged_average_and_is_counted(tmp_path):
    """mmengine's LogProcessor logs the mean of the last window_size losses: one skipped NaN
    step showed 'loss: nan' for window_size iterations, as a diverged run does."""
    runner = nan_at_iteration_2_runner(tmp_path, 'skipped_step_log')
    runner.train()
    logged = logged_rows(runner)
    assert [row['step'] for row in logged] == [1, 2, 3, 4, 5]
    assert math.isnan(logged[1]['loss'])  # the skipped iteration's own line, under the warning
    assert all(math.isfinite(row['loss']) for row in logged[2:])
    assert 'skipped_steps' not in logged[0]
    assert [row['skipped_steps'] for row in logged[1:]] == [1, 1, 1, 1]


def test_a_checkpoint_of_the_skipped_iteration_resumes_without_its_nan(tmp_path):
    """The checkpoint saved at the skipped iteration itself (a regular or a preemption one)
    held the NaN in its message hub's loss history: the resumed run logged 'loss: nan' for
    window_size iterations. Resumed, it logs what the uninterrupted run logs."""
    every_2 = dict(type=SafeCheckpointHook, interval=2, by_epoch=False)
    uninterrupted = nan_at_iteration_2_runner(tmp_path / 'uninterrupted', 'nan_uninterrupted',
                                              checkpoint=every_2)
    uninterrupted.train()
    nan_at_iteration_2_runner(tmp_path / 'first_part', 'nan_first_part', max_iters=2,
                              checkpoint=every_2).train()  # saves iter_2.pth, then stops
    resumed = nan_at_iteration_2_runner(  # a work dir of its own: its own log
        tmp_path / 'resumed', 'nan_resumed', checkpoint=every_2, resume=True,
        load_from=str(tmp_path / 'first_part' / 'iter_2.pth'))
    resumed.train()
    history = resumed.message_hub.get_scalar('train/loss').data[0]
    assert np.isfinite(history).all()
    assert history.tolist() == pytest.approx(
        uninterrupted.message_hub.get_scalar('train/loss').data[0].tolist())
    resumed_rows = logged_rows(resumed)
    assert [row['step'] for row in resumed_rows] == [3, 4, 5]
    assert [row['loss'] for row in resumed_rows] == pytest.approx(
        [row['loss'] for row in logged_rows(uninterrupted)[2:]])


RANK_SCRIPT = '''
import sys

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel

from fastmim.engine.process_group import shutdown_distributed
from fastmim.engine.optim_wrappers import GuardedOptimWrapper, NonFiniteLossError

rank, init_file, result_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
torch_dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                              world_size=2)
torch.manual_seed(0)
model = DistributedDataParallel(torch.nn.Linear(4, 1))
wrapper = GuardedOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                              max_consecutive_skips=2)
outcome = 'trained on'
for step in range(1, 5):
    loss = model(torch.ones(2, 4)).sum()
    try:
        wrapper.update_params(loss * float('nan') if rank == 1 and step > 1 else loss)
    except NonFiniteLossError:
        outcome = f'stopped at step {step}'
        break
torch_dist.all_reduce(torch.ones(1))  # a rank that went on would have left this one waiting
shutdown_distributed()
with open(f'{result_file}.{rank}', 'w') as result:
    result.write(outcome)
'''


def test_every_rank_stops_at_the_same_step(tmp_path, run_ranks):
    """Only rank 1's loss is NaN: a rank that stopped alone would leave the other one waiting
    in its next collective for ever."""
    result = str(tmp_path / 'outcome')
    run_ranks(RANK_SCRIPT, tmp_path / 'init', result)
    assert [open(f'{result}.{rank}').read() for rank in range(2)] == ['stopped at step 3'] * 2


FSDP_RANK_SCRIPT = '''
import sys

import torch
import torch.distributed as torch_dist
from mmengine.model import MMFullyShardedDataParallel
from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard

from fastmim.engine.process_group import shutdown_distributed
from fastmim.engine.optim_wrappers import GuardedOptimWrapper
from fastmim.engine.optim_wrappers.guarded import local_shard


class InfiniteGradientOnBias1(torch.nn.Linear):
    """The loss is finite, the gradient of bias[1] alone +inf (sqrt at 0), on every rank."""

    def forward(self, inputs, overflow=True):
        loss = super().forward(inputs).sum()
        return loss + (self.bias[1] - self.bias[1].detach()).sqrt() if overflow else loss


rank, init_file, result_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
torch_dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                              world_size=2)
cpu = torch.device('cpu')  # FSDP1 looks for an accelerator unless told the device
shard = dict(
    mmengine_fsdp=lambda model: MMFullyShardedDataParallel(model, device_id=cpu),
    fsdp_flat_param=lambda model: FullyShardedDataParallel(model, device_id=cpu,
                                                           use_orig_params=False),
    fully_shard=fully_shard)
rows = []
for name, wrap in shard.items():
    torch.manual_seed(0)
    model = wrap(InfiniteGradientOnBias1(4, 2))
    wrapper = GuardedOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    params = [param for group in wrapper.optimizer.param_groups for param in group['params']]
    before = [local_shard(param).detach().clone() for param in params]
    wrapper.update_params(model(torch.ones(2, 4)))
    kept = all(torch.equal(a, local_shard(param)) for a, param in zip(before, params))
    wrapper.update_params(model(torch.ones(2, 4), overflow=False))
    trained = not all(torch.equal(a, local_shard(param)) for a, param in zip(before, params))
    rows.append(f'{name}: skipped {wrapper.skipped_steps}, shard kept {kept}, then trained '
                f'{trained}')
shutdown_distributed()
with open(f'{result_file}.{rank}', 'w') as result:
    result.write('\\n'.join(rows))
'''


def test_fsdp_ranks_agree_on_skipping_a_step_whose_gradient_shard_overflowed(tmp_path,
                                                                             run_ranks):
    """FSDP reduce-scatters the gradients: bias[1]'s +inf lands in rank 1's shard alone (its
    last elements under FSDP1's flat parameter, its half of the bias under fully_shard). Rank 0
    stepped, rank 1 skipped, and the model was left half updated."""
    result = str(tmp_path / 'outcome')
    run_ranks(FSDP_RANK_SCRIPT, tmp_path / 'init', result, timeout=180)
    expected = [f'{name}: skipped 1, shard kept True, then trained True'
                for name in ('mmengine_fsdp', 'fsdp_flat_param', 'fully_shard')]
    assert [open(f'{result}.{rank}').read().split('\n') for rank in range(2)] == [expected] * 2


def test_unsharded_gradients_are_checked_without_a_collective(monkeypatch):
    """DDP's gradients are the same on every rank: an all-reduce of the verdict would only add
    a host sync to every step."""
    from fastmim.engine.optim_wrappers import guarded
    monkeypatch.setattr(guarded, 'is_distributed', lambda: True)
    collectives = []
    monkeypatch.setattr(guarded, 'all_reduce', lambda *args, **kwargs: collectives.append(args))
    for loss_of in (lambda model: model(torch.ones(2, 4)).sum(),
                    finite_loss_with_infinite_gradient):
        model, wrapper = make()
        loss_of(model).backward()
        wrapper.step()
    assert wrapper.skipped_steps == 1
    assert collectives == []


def test_a_resumed_run_goes_on_counting_skipped_steps():
    """The count lives in the message hub, which every checkpoint saves and --resume loads."""
    first_run = MessageHub.get_instance('skipped_steps_first_run')
    model, wrapper = make()
    wrapper.update_params(nan_loss(model))
    resumed = MessageHub.get_instance('skipped_steps_resumed_run')
    resumed.load_state_dict(first_run.state_dict())
    model, wrapper = make()
    wrapper.update_params(nan_loss(model))
    assert resumed.get_scalar('train/skipped_steps').current() == 2
