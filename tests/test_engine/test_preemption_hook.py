"""PreemptionHook: the cluster's signal reaches every process of the job, the DataLoader
workers too; only the training process acts on it."""
import itertools
import multiprocessing
import os
import signal
from types import SimpleNamespace

import torch
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fastmim.engine.hooks import PreemptionHook
from fastmim.engine.hooks.preemption_hook import TrainingPreempted


class SignalledWhileLoading(Dataset):
    """Sends SIGTERM to the process loading the first sample, as SLURM's preemption (and
    ``scancel``) signals every process of the job step, DataLoader workers included."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        if index == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return torch.tensor(index)


def test_dataloader_workers_survive_the_preemption_signal():
    """torch's workers install their own SIGTERM handler: one not sent by the training process
    killed them, and the training process then stopped with 'DataLoader worker (pid N) is
    killed by signal: Terminated' instead of saving its checkpoint."""
    loader = DataLoader(SignalledWhileLoading(), batch_size=2, num_workers=1)
    runner = SimpleNamespace(train_loop=SimpleNamespace(dataloader=loader))
    hook = PreemptionHook()
    hook.before_train_epoch(runner)
    assert [batch.tolist() for batch in loader] == [[0, 1], [2, 3]]
    hook.before_train_epoch(runner)  # a second epoch wraps the worker init only once
    assert [batch.tolist() for batch in loader] == [[0, 1], [2, 3]]


def test_a_worker_still_ends_when_the_training_process_terminates_it():
    """At exit multiprocessing terminates the daemonic workers with SIGTERM, then waits for
    them: a worker that ignored every SIGTERM left the preempted process hanging there."""
    loader = DataLoader(SignalledWhileLoading(), batch_size=2, num_workers=1,
                        persistent_workers=True)
    PreemptionHook().before_train_epoch(SimpleNamespace(train_loop=SimpleNamespace(
        dataloader=loader)))
    assert len(list(loader)) == 2
    workers = [child for child in multiprocessing.active_children() if child.daemon]
    assert workers
    for worker in workers:
        worker.terminate()
        worker.join(timeout=20)
        assert worker.exitcode == 0


def test_validation_workers_survive_the_preemption_signal_too():
    """Fine-tuning's persistent validation workers (10 per GPU in the recipes) stay alive during
    training, and SLURM's signal reaches them as well."""
    train_loader = DataLoader(range(4), batch_size=2, num_workers=1)
    val_loader = DataLoader(SignalledWhileLoading(), batch_size=2, num_workers=1)
    PreemptionHook().before_train_epoch(SimpleNamespace(
        train_loop=SimpleNamespace(dataloader=train_loader),
        val_loop=SimpleNamespace(dataloader=val_loader)))
    assert [batch.tolist() for batch in val_loader] == [[0, 1], [2, 3]]


class SignalsItselfAt(BaseModel):
    """A linear model that sends SIGUSR1 to its own process at given iterations (counted from
    1), as SLURM does when it preempts the job."""

    def __init__(self, signal_iterations=()):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.signal_iterations = signal_iterations

    def forward(self, inputs, data_samples=None, mode='loss'):
        if MessageHub.get_current_instance().get_info('iter') + 1 in self.signal_iterations:
            os.kill(os.getpid(), signal.SIGUSR1)
        return dict(loss=self.linear(torch.stack(inputs)).pow(2).mean())


RUN_NUMBERS = itertools.count()


def train(work_dir, signal_iterations, resume, max_iters=6, checkpoint_interval=4):
    """One job of a requeued run: True when preempted."""
    dataset = [dict(inputs=torch.ones(4) * i) for i in range(8)]
    runner = Runner(
        model=SignalsItselfAt(signal_iterations), work_dir=str(work_dir),
        train_dataloader=dict(dataset=dataset, sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='pseudo_collate'), batch_size=1),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(checkpoint=dict(type='SafeCheckpointHook', by_epoch=False,
                                           interval=checkpoint_interval, max_keep_ckpts=1),
                           checkpoint_meta=dict(type='CheckpointMetaHook'),
                           preemption=dict(type='PreemptionHook')),
        default_scope='fastmim', resume=resume,
        experiment_name=f'preempted_{next(RUN_NUMBERS)}')  # a new message hub per run
    try:
        runner.train()
    except TrainingPreempted:
        return True
    return False


def checkpoints(work_dir):
    return sorted(name for name in os.listdir(work_dir) if name.endswith('.pth'))


def last_checkpoint(work_dir):
    return os.path.basename((work_dir / 'last_checkpoint').read_text().strip())


def test_a_preemption_checkpoint_is_deleted_once_a_newer_one_exists(tmp_path):
    """CheckpointHook's max_keep_ckpts knows only its own files: a job preempted 30 times kept
    30 extra full checkpoints."""
    assert train(tmp_path, {2}, resume=False)
    assert checkpoints(tmp_path) == ['iter_2.pth']
    assert train(tmp_path, {3}, resume=True)  # preempted again: iter_2.pth is superseded
    assert checkpoints(tmp_path) == ['iter_3.pth'] and last_checkpoint(tmp_path) == 'iter_3.pth'
    assert not train(tmp_path, (), resume=True)  # the regular iter_4 supersedes iter_3
    assert checkpoints(tmp_path) == ['iter_6.pth'] and last_checkpoint(tmp_path) == 'iter_6.pth'


def test_a_regular_checkpoint_of_the_preempted_iteration_is_kept(tmp_path):
    """Preempted at an iteration CheckpointHook saves too: the file is CheckpointHook's."""
    assert train(tmp_path, {2}, resume=False, checkpoint_interval=2)
    assert train(tmp_path, {3}, resume=True, checkpoint_interval=2)
    assert checkpoints(tmp_path) == ['iter_2.pth', 'iter_3.pth']
