"""PreemptionHook: the cluster's signal reaches every process of the job, the DataLoader
workers too; only the training process acts on it."""
import multiprocessing
import os
import signal
from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader, Dataset

from fastmim.engine.hooks import PreemptionHook


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
