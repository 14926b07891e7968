"""PreemptionHook: the cluster's signal reaches every process of the job, the DataLoader
workers too; only the training process acts on it."""
import itertools
import multiprocessing
import os
import signal
from types import SimpleNamespace

import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fastmim.engine.accumulation import start_accumulation_windows
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


def train(work_dir, signal_iterations, resume, max_iters=6, checkpoint_interval=4,
          custom_hooks=None):
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
        custom_hooks=custom_hooks, default_scope='fastmim', resume=resume,
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


@pytest.mark.parametrize('loop, sampler, problem', [
    ('EpochBasedTrainLoop', 'ResumableSampler', "mmengine's EpochBasedTrainLoop"),
    ('ResumableEpochBasedTrainLoop', 'DefaultSampler', 'train_dataloader.sampler is a '
     'DefaultSampler'),
    ('ResumableEpochBasedTrainLoop', 'ResumableSampler', None),
    ('IterBasedTrainLoop', 'InfiniteSampler', None)])
def test_a_run_that_cannot_resume_its_preemption_checkpoint_is_told_when_it_starts(
        tmp_path, loop, sampler, problem):
    """mmengine's epoch loop trained the batches before a preemption again (the linear probe:
    15 iterations instead of 12); a sampler that cannot start inside an epoch had --resume
    refuse the checkpoint the job was requeued with, and the work since the last epoch was
    lost. Both were found only after the preemption."""
    train_cfg = (dict(type=loop, max_iters=2) if loop.startswith('Iter') else
                 dict(type=loop, max_epochs=1))
    runner = Runner(
        model=SignalsItselfAt(()), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=[dict(inputs=torch.ones(4))] * 2,
                              sampler=dict(type=sampler, shuffle=False),
                              collate_fn=dict(type='pseudo_collate'), batch_size=1),
        train_cfg=train_cfg, optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(preemption=dict(type='PreemptionHook')),
        default_scope='fastmim', experiment_name=f'preempted_{next(RUN_NUMBERS)}')
    runner.train()
    logged = (tmp_path / runner.timestamp / f'{runner.timestamp}.log').read_text()
    if problem is None:
        assert 'PreemptionHook:' not in logged
    else:
        warning = next(line for line in logged.splitlines() if 'PreemptionHook:' in line)
        assert 'WARNING' in warning and problem in warning


def test_a_preemption_checkpoint_is_deleted_once_a_newer_one_exists(tmp_path):
    """CheckpointHook's max_keep_ckpts knows only its own files: a job preempted 30 times kept
    30 extra full checkpoints."""
    assert train(tmp_path, {2}, resume=False)
    assert checkpoints(tmp_path) == ['iter_2.pth']
    assert train(tmp_path, {3}, resume=True)  # preempted again: iter_2.pth is superseded
    assert checkpoints(tmp_path) == ['iter_3.pth'] and last_checkpoint(tmp_path) == 'iter_3.pth'
    assert not train(tmp_path, (), resume=True)  # the regular iter_4 supersedes iter_3
    assert checkpoints(tmp_path) == ['iter_6.pth'] and last_checkpoint(tmp_path) == 'iter_6.pth'



def test_an_iteration_based_run_s_stop_message_names_no_epoch(tmp_path):
    """An iteration-based loop stays in epoch 0: its message said 'at iteration 2 (epoch 1)'
    of a run that has no epochs."""
    assert train(tmp_path, {2}, resume=False)
    log = '\n'.join(path.read_text() for path in tmp_path.glob('*/*.log'))
    assert f'SIGUSR1: saved {tmp_path / "iter_2.pth"} at iteration 2; continue with --resume' \
        in log


def test_a_signal_in_the_run_s_last_iteration_lets_it_finish(tmp_path):
    """Training is complete after the last iteration, whose regular checkpoint CheckpointHook
    has written: a preemption checkpoint there was a second copy of it, and status 75 made a
    requeue script start the finished run again."""
    assert not train(tmp_path, {6}, resume=False)
    assert checkpoints(tmp_path) == ['iter_6.pth'] and last_checkpoint(tmp_path) == 'iter_6.pth'
    log = '\n'.join(path.read_text() for path in tmp_path.glob('*/*.log'))
    assert 'SIGUSR1 at iteration 6, the last: training is complete, nothing to save' in log


def test_a_preempted_run_puts_back_the_handlers_from_before_it_unless_the_process_exits(
        tmp_path):
    """A Python session that went on after a preempted run kept SIGTERM and SIGUSR1 ignored.
    A tool's process (run_cli), which only exits from there on, still ignores them: a late
    signal must not turn the preempted status into death by the signal."""
    from fastmim.engine import early_signals

    def own(signum, frame):
        pass

    previous = {signum: signal.signal(signum, own) for signum in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        assert train(tmp_path / 'session', {2}, resume=False)
        assert [signal.getsignal(signum) for signum in previous] == [own, own]
        with early_signals.exit_follows_the_run():
            assert train(tmp_path / 'tool', {2}, resume=False)
        assert [signal.getsignal(signum) for signum in previous] == [signal.SIG_IGN] * 2
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class SignalsWhenTrainingIsComplete(Hook):
    """Sends SIGTERM to its own process once training is complete: in ``after_train``, before
    PreemptionHook's (a ReconstructionVisualizationHook drawing), and in ``after_run``, after
    it (the shutdown that follows)."""

    def after_train(self, runner):
        os.kill(os.getpid(), signal.SIGTERM)

    def after_run(self, runner):
        os.kill(os.getpid(), signal.SIGTERM)


def test_a_signal_after_training_is_complete_is_noted_by_a_tool_s_process(tmp_path):
    """The hook put the default SIGTERM handler back when training ended, so a tool's process
    died of a signal sent while its last hooks ran or it shut down: status 143 for a run whose
    last checkpoint was saved, a job SLURM marks failed, whose ``afterok`` dependants never
    start. A tool's process notes such a signal (its end logs it); a Python session gets its
    handler from before the run back."""
    from fastmim.engine import early_signals
    called = []

    def own(signum, frame):
        called.append(signum)

    late = 'SIGTERM after training was complete: nothing to save'
    previous = signal.signal(signal.SIGTERM, own)
    try:
        assert not train(tmp_path / 'session', (), resume=False,
                         custom_hooks=[SignalsWhenTrainingIsComplete()])
        assert called == [signal.SIGTERM] and signal.getsignal(signal.SIGTERM) is own
        assert [path.read_text().count(late) for path in tmp_path.glob('session/*/*.log')] == [1]

        with early_signals.exit_follows_the_run():
            assert not train(tmp_path / 'tool', (), resume=False,
                             custom_hooks=[SignalsWhenTrainingIsComplete()])
        assert called == [signal.SIGTERM] and early_signals.ARRIVED_LATE == [signal.SIGTERM]
        assert [path.read_text().count(late) for path in tmp_path.glob('tool/*/*.log')] == [1]
    finally:
        signal.signal(signal.SIGTERM, previous)
        early_signals.ARRIVED_LATE.clear()


def test_a_run_that_crashed_without_the_tool_leaves_no_handler_behind():
    """A Runner built directly (not through tools/train.py, which puts the handlers back on
    every path) that crashes leaves the hook's handler, which only records. The next run puts
    back the handler from before the crashed one, not that one; a handler the user installed
    since is kept."""
    from fastmim.engine import early_signals

    def own(signum, frame):
        pass

    def later(signum, frame):
        pass

    def crashed_hook(signum, frame):
        pass

    def next_hook(signum, frame):
        pass

    previous = signal.signal(signal.SIGUSR1, own)
    try:
        early_signals.take_over([signal.SIGUSR1], crashed_hook)  # never put back
        early_signals.take_over([signal.SIGUSR1], next_hook)
        early_signals.put_back([signal.SIGUSR1])
        assert signal.getsignal(signal.SIGUSR1) is own
        early_signals.take_over([signal.SIGUSR1], crashed_hook)
        signal.signal(signal.SIGUSR1, later)
        early_signals.stop_recording()  # tools/train.py's end of a later run
        assert signal.getsignal(signal.SIGUSR1) is later
    finally:
        signal.signal(signal.SIGUSR1, previous)

def test_a_signal_while_the_run_is_built_stops_it_before_training_with_its_status(tmp_path):
    """The handlers came with before_train: a job preempted while it built its model and
    dataset or loaded its checkpoint (minutes on ImageNet) died of SIGTERM (status 143, not
    requeued). tools/train.py records the config's signals from the start; the run stops
    before its first iteration, writes nothing and keeps last_checkpoint."""
    from mmengine.config import Config

    from fastmim.engine.early_signals import stop_recording
    from fastmim.engine.hooks.preemption_hook import record_signals_before_training
    assert train(tmp_path, {2}, resume=False)  # iter_2.pth, named in last_checkpoint
    with_hook = Config(dict(default_hooks=dict(preemption=dict(type='PreemptionHook'))))
    record_signals_before_training(with_hook)
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # while the Runner would be built: recorded
        assert train(tmp_path, (), resume=True)  # preempted, before iteration 3
    finally:
        stop_recording()
    logs = sorted(tmp_path.glob('*/*.log'))
    assert ('SIGTERM before training started: nothing trained in this run (at iteration 2); '
            'continue with --resume') in logs[-1].read_text()
    assert checkpoints(tmp_path) == ['iter_2.pth'] and last_checkpoint(tmp_path) == 'iter_2.pth'

    def own(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, own)
    try:
        # A run that fails before training puts the handler back.
        record_signals_before_training(with_hook)
        assert signal.getsignal(signal.SIGTERM) is not own
        stop_recording()
        assert signal.getsignal(signal.SIGTERM) is own
        # Without the hook in the config nothing is recorded: the signal acts as it would.
        record_signals_before_training(Config(dict(default_hooks=dict())))
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_regular_checkpoint_of_the_preempted_iteration_is_kept(tmp_path):
    """Preempted at an iteration CheckpointHook saves too: the file is CheckpointHook's."""
    assert train(tmp_path, {2}, resume=False, checkpoint_interval=2)
    assert train(tmp_path, {3}, resume=True, checkpoint_interval=2)
    assert checkpoints(tmp_path) == ['iter_2.pth', 'iter_3.pth']


class SignalsDuringValidation(BaseMetric):
    """Records each validation's score (the mean prediction, so it depends on the weights) and
    sends SIGUSR1 to its own process while processing given ``(validation, batch)`` pairs, both
    counted from 1 in this job."""

    def __init__(self, signal_at=(), scores=None):
        super().__init__()
        self.signal_at, self.scores = signal_at, scores
        self.validations = 0

    def process(self, data_batch, data_samples):
        if not self.results:  # emptied by each evaluation
            self.validations += 1
        if (self.validations, len(self.results) + 1) in self.signal_at:
            os.kill(os.getpid(), signal.SIGUSR1)
        self.results.extend(float(sample) for sample in data_samples)

    def compute_metrics(self, results):
        self.scores.append(sum(results) / len(results))
        return dict(score=self.scores[-1])


class Predicts(SignalsItselfAt):
    def forward(self, inputs, data_samples=None, mode='loss'):
        if mode == 'predict':
            return list(self.linear(torch.stack(inputs)).flatten())
        return super().forward(inputs, data_samples, mode)


class DropsEachEpochsLastIteration(Hook):
    """Windows of 3 accumulated iterations that drop an epoch's last partial window, as
    FastMIM-P's stages do: of an epoch's 4 iterations the 4th makes no update."""

    def before_train_epoch(self, runner):
        start_accumulation_windows(runner.optim_wrapper, 3)


def train_and_validate(work_dir, loop, signal_at=(), resume=False, scores=None,
                       variant='plain', checkpoint=None):
    """A job of 2 epochs of 4 iterations (or 8 iterations validated every 4) that validates 3
    batches after iterations 4 and 8: True when preempted. ``variant``: ``'ema'`` validates
    mmengine's EMA of the weights, ``'accumulation'`` updates every 3 iterations (after
    iterations 3, 6 and 8 with the iteration loop; after 3, 4, 7 and 8 with the epoch loop,
    which starts a window at every epoch), ``'dropped'`` after 3 and 7 (epoch loop, see
    :class:`DropsEachEpochsLastIteration`). ``checkpoint``: settings of the checkpoint hook."""
    samples = [dict(inputs=torch.ones(4) * i) for i in range(4)]
    loader = dict(sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='pseudo_collate'), batch_size=1)
    train_cfg = (dict(type='ResumableEpochBasedTrainLoop', max_epochs=2) if loop == 'epoch' else
                 dict(type='ResumableIterBasedTrainLoop', max_iters=8, val_interval=4))
    torch.manual_seed(0)  # the model's initial weights
    # A run stopped inside an epoch resumes there with the ResumableSampler.
    train_sampler = dict(type='ResumableSampler' if loop == 'epoch' else 'DefaultSampler',
                         shuffle=False)
    runner = Runner(
        model=Predicts(), work_dir=str(work_dir),
        train_dataloader=dict(loader, dataset=samples, sampler=train_sampler),
        val_dataloader=dict(loader, dataset=samples[1:]),
        val_evaluator=[SignalsDuringValidation(signal_at, scores)], val_cfg=dict(),
        train_cfg=train_cfg, randomness=dict(seed=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01),
                           accumulative_counts=3 if variant == 'accumulation' else 1),
        custom_hooks={'ema': [dict(type='EMAHook', momentum=0.5)],
                      'dropped': [DropsEachEpochsLastIteration()]}.get(variant, []),
        default_hooks=dict(checkpoint=dict(dict(type='SafeCheckpointHook',
                                                by_epoch=loop == 'epoch',
                                                interval=1 if loop == 'epoch' else 4),
                                           **(checkpoint or {})),
                           checkpoint_meta=dict(type='CheckpointMetaHook'),
                           preemption=dict(type='PreemptionHook')),
        default_scope='fastmim', resume=resume,
        experiment_name=f'preempted_{next(RUN_NUMBERS)}')
    try:
        runner.train()
    except TrainingPreempted:
        return True
    finally:
        weights.append(runner.model.linear.weight.detach().clone())
    return False


weights = []


@pytest.mark.parametrize('variant', ['plain', 'ema', 'accumulation'])
@pytest.mark.parametrize('loop', ['epoch', 'iter'])
def test_a_signal_during_validation_stops_it_and_the_resumed_run_repeats_it(tmp_path, loop,
                                                                         variant):
    """A COCO or ImageNet validation lasts minutes, SLURM kills 30 s after its signal: waiting
    for the next training iteration ended the job by SIGKILL, not with the status a requeue
    script retries, and without that validation's result. With mmengine's EMAHook the model
    holds the averaged weights during a validation: the checkpoint held the two swapped.
    Inside an accumulation window (the iteration loop's updates after iterations 3, 6, 8) the
    accumulated gradients, which no checkpoint holds, would be lost: the run stops at the
    update. The epoch loop's windows end with the epoch, so its validation is outside one."""
    uninterrupted = []
    assert not train_and_validate(tmp_path / 'reference', loop, scores=uninterrupted,
                                  variant=variant)
    reference_weights = weights[-1]
    scores = []
    assert train_and_validate(tmp_path / 'run', loop, signal_at={(1, 2)}, scores=scores,
                              variant=variant)
    inside_window = variant == 'accumulation' and loop == 'iter'
    stopped_at = 6 if inside_window else 4
    assert len(uninterrupted) == 2
    # The validation stopped at its second batch, before its metric (or finished, inside a
    # window).
    assert scores == uninterrupted[:1 if inside_window else 0]
    assert last_checkpoint(tmp_path / 'run') == f'iter_{stopped_at}.pth'
    meta = torch.load(tmp_path / 'run' / f'iter_{stopped_at}.pth', weights_only=True)['meta']
    epoch = 1 if loop == 'epoch' else 0
    assert (meta['epoch'], meta['iter']) == (epoch, stopped_at)
    assert not train_and_validate(tmp_path / 'run', loop, resume=True, scores=scores,
                                  variant=variant)
    assert scores == uninterrupted
    torch.testing.assert_close(weights[-1], reference_weights, rtol=0, atol=0)


def test_a_signal_during_the_validation_after_dropped_iterations_stops_it(tmp_path):
    """The gradients of the iterations FastMIM-P drops at an epoch's end wait for no update,
    but the validation after that epoch ran on as if inside a window (a long one then met
    SIGKILL), and the run stopped only after the next epoch's first window."""
    uninterrupted, scores = [], []
    assert not train_and_validate(tmp_path / 'reference', 'epoch', scores=uninterrupted,
                                  variant='dropped')
    reference_weights = weights[-1]
    assert train_and_validate(tmp_path / 'run', 'epoch', signal_at={(1, 2)}, scores=scores,
                              variant='dropped')
    assert scores == [] and last_checkpoint(tmp_path / 'run') == 'iter_4.pth'
    assert not train_and_validate(tmp_path / 'run', 'epoch', resume=True, scores=scores,
                                  variant='dropped')
    assert scores == uninterrupted
    torch.testing.assert_close(weights[-1], reference_weights, rtol=0, atol=0)


def test_a_second_stop_while_repeating_the_validation_is_cleaned_up_too(tmp_path):
    """The repeated validation saves under the name of the checkpoint it resumed from: that
    file was then taken for a regular checkpoint and kept for good."""
    assert train_and_validate(tmp_path, 'epoch', signal_at={(1, 2)}, scores=[])
    assert train_and_validate(tmp_path, 'epoch', signal_at={(1, 2)}, resume=True, scores=[])
    assert last_checkpoint(tmp_path) == 'iter_4.pth'
    assert not train_and_validate(tmp_path, 'epoch', resume=True, scores=[])
    assert checkpoints(tmp_path) == ['epoch_1.pth', 'epoch_2.pth']


def test_resuming_a_stop_in_the_last_validation_does_not_say_nothing_is_left(tmp_path):
    """The checkpoint has trained every epoch, and the resumed run still repeats the last
    validation: 'has nothing left to train' was logged before it did."""
    uninterrupted, scores = [], []
    assert not train_and_validate(tmp_path / 'reference', 'epoch', scores=uninterrupted)
    assert train_and_validate(tmp_path / 'run', 'epoch', signal_at={(2, 2)}, scores=scores)
    assert not train_and_validate(tmp_path / 'run', 'epoch', resume=True, scores=scores)
    assert scores == uninterrupted
    logs = ''.join(path.read_text() for path in (tmp_path / 'run').glob('*/*.log'))
    assert 'running that validation first' in logs
    assert 'nothing left to train' not in logs


@pytest.mark.parametrize('loop', ['epoch', 'iter'])
def test_a_repeated_last_validation_is_not_repeated_by_the_next_resume(tmp_path, loop):
    """After the resumed run had repeated the last validation, last_checkpoint still named
    the preemption checkpoint, which still asked for that validation: every requeue of the
    finished job ran it again (a whole ImageNet validation), and the file was never deleted.
    The regular checkpoint of that iteration takes its place, as in the uninterrupted run
    (iteration-based: the preemption save had replaced it, under its name)."""
    assert not train_and_validate(tmp_path / 'reference', loop, scores=[])
    assert train_and_validate(tmp_path / 'run', loop, signal_at={(2, 2)}, scores=[])
    assert not train_and_validate(tmp_path / 'run', loop, resume=True, scores=[])
    assert last_checkpoint(tmp_path / 'run') == last_checkpoint(tmp_path / 'reference')
    assert checkpoints(tmp_path / 'run') == checkpoints(tmp_path / 'reference')
    scores = []
    assert not train_and_validate(tmp_path / 'run', loop, resume=True, scores=scores)
    assert scores == []


def test_a_repeated_validation_without_a_regular_checkpoint_is_not_repeated_again(tmp_path):
    """Without a regular checkpoint of that iteration (none saved: interval 3 of 2 epochs, no
    save_last), the preemption checkpoint stays; the work dir's record of the finished
    validation (.last_validation) keeps the next resume from repeating it."""
    no_regular = dict(interval=3, save_last=False)
    assert train_and_validate(tmp_path, 'epoch', signal_at={(2, 2)}, scores=[],
                              checkpoint=no_regular)
    scores = []
    assert not train_and_validate(tmp_path, 'epoch', resume=True, scores=scores,
                                  checkpoint=no_regular)
    assert len(scores) == 1  # repeated once
    assert checkpoints(tmp_path) == ['iter_8.pth'] and last_checkpoint(tmp_path) == 'iter_8.pth'
    assert not train_and_validate(tmp_path, 'epoch', resume=True, scores=scores,
                                  checkpoint=no_regular)
    assert len(scores) == 1  # not again


RANK_SCRIPT = '''
import os
import signal
import sys

import torch
import torch.distributed as torch_dist
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.runner import Runner

from fastmim.engine.hooks.preemption_hook import TrainingPreempted
from fastmim.engine.process_group import shutdown_distributed


class Linear(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        outputs = self.linear(torch.stack(inputs))
        return list(outputs.flatten()) if mode == 'predict' else dict(loss=outputs.mean())


class SignalsRankZeroAtItsLastBatch(BaseMetric):
    def process(self, data_batch, data_samples):
        self.results.extend(float(sample) for sample in data_samples)
        if torch_dist.get_rank() == 0 and len(self.results) == 2:
            os.kill(os.getpid(), signal.SIGUSR1)

    def compute_metrics(self, results):
        return dict(score=sum(results))


rank, init_file, work_dir, result_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
torch_dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                              world_size=2)
samples = [dict(inputs=torch.ones(4) * i) for i in range(4)]
loader = dict(sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
              collate_fn=dict(type='pseudo_collate'), batch_size=1)
runner = Runner(
    model=Linear(), work_dir=work_dir, train_dataloader=dict(loader, dataset=samples),
    val_dataloader=dict(loader, dataset=samples[1:]), val_cfg=dict(),
    val_evaluator=[SignalsRankZeroAtItsLastBatch()],
    train_cfg=dict(type='ResumableEpochBasedTrainLoop', max_epochs=2),
    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)), randomness=dict(seed=0),
    default_hooks=dict(checkpoint=None, preemption=dict(type='PreemptionHook')),
    default_scope='fastmim')
try:
    runner.train()
    outcome = 'trained to the end'
except TrainingPreempted as stop:
    outcome = str(stop).split('saved ')[1].split(';')[0]
shutdown_distributed()
with open(f'{result_file}.{rank}', 'w') as result:
    result.write(outcome)
'''


def test_ranks_with_fewer_validation_batches_are_not_left_waiting(tmp_path, run_ranks):
    """The signal check is a collective: with ``round_up=False`` rank 0 validates 2 of the 3
    samples, rank 1 one; checking at rank 0's second batch would pair its all-reduce with rank 1's
    gathering of the results. Rank 0's signal there is acted on at the next training iteration,
    the first of epoch 2 (2 iterations per epoch per rank)."""
    result = str(tmp_path / 'outcome')
    run_ranks(RANK_SCRIPT, tmp_path / 'init', tmp_path / 'work', result,
              env=dict(os.environ, OMP_NUM_THREADS='1'))
    saved = f"{tmp_path / 'work' / 'iter_3.pth'} at iteration 3 (epoch 2)"
    assert [open(f'{result}.{rank}').read() for rank in range(2)] == [saved] * 2


def _full_disk_for(names, monkeypatch):
    """Runner.save_checkpoint fails with ENOSPC for the file names in ``names``."""
    import errno
    save = Runner.save_checkpoint

    def save_or_fail(runner, out_dir, filename, *args, **kwargs):
        if filename in names:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(runner, out_dir, filename, *args, **kwargs)

    monkeypatch.setattr(Runner, 'save_checkpoint', save_or_fail)


@pytest.mark.parametrize('signal_at, last_good', [
    (5, 'the last good checkpoint is {work_dir}/iter_4.pth (--resume continues from it)'),
    (3, 'no checkpoint was saved before (--resume starts from the beginning)')])
def test_a_failed_preemption_save_names_why_and_the_last_good_checkpoint(
        tmp_path, monkeypatch, signal_at, last_good):
    """A full disk (or an unwritable work dir) during the save after SIGTERM ended with the
    writer's error alone, or under torchrun with status 143 and another rank's line; nothing
    said that the run was not saved nor where --resume goes on from. It is not
    TrainingPreempted, whose status 75 tells a requeue script that the run was saved."""
    from fastmim.engine.hooks.preemption_hook import PreemptionSaveFailed
    _full_disk_for({f'iter_{signal_at}.pth'}, monkeypatch)
    with pytest.raises(PreemptionSaveFailed) as failed:
        train(tmp_path, {signal_at}, resume=False)
    assert str(failed.value) == (
        f'SIGUSR1: could not save {tmp_path}/iter_{signal_at}.pth at iteration {signal_at} '
        f'(OSError: [Errno 28] No space left on device); '
        + last_good.format(work_dir=tmp_path))
    assert failed.value.own
    assert checkpoints(tmp_path) == (['iter_4.pth'] if signal_at > 4 else [])


FAILED_SAVE_RANK_SCRIPT = '''
import errno
import os
import signal
import sys

import torch
import torch.distributed as torch_dist
from mmengine.model import BaseModel
from mmengine.runner import Runner

from fastmim.engine.hooks.preemption_hook import PreemptionSaveFailed
from fastmim.engine.process_group import shutdown_distributed


class SignalsRankOne(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        if torch_dist.get_rank() == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return dict(loss=self.linear(torch.stack(inputs)).mean())


def full_disk(*args, **kwargs):  # mmengine's save runs on rank 0 alone (master_only)
    if torch_dist.get_rank() == 0:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


rank, init_file, work_dir, result_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
torch_dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                              world_size=2)
Runner.save_checkpoint = full_disk
runner = Runner(
    model=SignalsRankOne(), work_dir=work_dir,
    train_dataloader=dict(dataset=[dict(inputs=torch.ones(4))] * 4,
                          sampler=dict(type='DefaultSampler', shuffle=False),
                          collate_fn=dict(type='pseudo_collate'), batch_size=1),
    train_cfg=dict(by_epoch=False, max_iters=2),
    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
    default_hooks=dict(checkpoint=None, preemption=dict(type='PreemptionHook')),
    default_scope='fastmim')
try:
    runner.train()
    outcome = 'trained to the end'
except PreemptionSaveFailed as failure:
    outcome = f'own={failure.own}: {failure}'
shutdown_distributed()
with open(f'{result_file}.{rank}', 'w') as result:
    result.write(outcome)
'''


def test_a_preemption_save_that_fails_on_one_rank_stops_every_rank_with_it(tmp_path, run_ranks):
    """Rank 0 failed to write and exited; rank 1 waited for it in the barrier after the save
    until the launcher killed it, and its line ('another process of the job ended during a
    collective operation') was the last the user saw. Now every rank learns of the failure;
    the rank it happened on reports it, the others only log it."""
    result = str(tmp_path / 'outcome')
    run_ranks(FAILED_SAVE_RANK_SCRIPT, tmp_path / 'init', tmp_path / 'work', result,
              env=dict(os.environ, OMP_NUM_THREADS='1'))
    path = tmp_path / 'work' / 'iter_1.pth'
    assert [open(f'{result}.{rank}').read() for rank in range(2)] == [
        f'own=True: a signal on another rank: could not save {path} at iteration 1 '
        f'(OSError: [Errno 28] No space left on device); no checkpoint was saved before '
        f'(--resume starts from the beginning)',
        f'own=False: SIGTERM: could not save {path} at iteration 1 (it failed on '
        f'another rank, whose line says why); no checkpoint was saved before (--resume starts '
        f'from the beginning)']


def test_signals_recorded_while_the_tool_imported_are_taken_over_or_sent_again():
    """tools/train.py records SIGTERM and SIGUSR1 from its first line (a job preempted while
    torch imported died with status 143, which is not requeued). A signal the config's hook
    handles is handed to it; one it does not gets its handler back and is sent again, acting
    as it would have."""
    from mmengine.config import Config

    from fastmim.engine import early_signals
    from fastmim.engine.hooks.preemption_hook import record_signals_before_training
    received = []

    def original(signum, frame):
        received.append(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, original)
                for signum in (signal.SIGTERM, signal.SIGUSR1)}
    only_sigterm = Config(dict(default_hooks=dict(preemption=dict(
        type='PreemptionHook', signals=['SIGTERM']))))
    try:
        early_signals.record([signal.SIGTERM, signal.SIGUSR1])  # the tool's first line
        os.kill(os.getpid(), signal.SIGTERM)  # while the modules import: recorded
        os.kill(os.getpid(), signal.SIGUSR1)
        assert early_signals.RECORDED == [signal.SIGTERM, signal.SIGUSR1] and received == []
        record_signals_before_training(only_sigterm)
        assert early_signals.RECORDED == [signal.SIGTERM] and received == ['SIGUSR1']
        assert signal.getsignal(signal.SIGUSR1) is original  # not the hook's: as before
        assert early_signals.REPLACED == {signal.SIGTERM: original}
        early_signals.stop_recording()
        assert signal.getsignal(signal.SIGTERM) is original and received == ['SIGUSR1']
    finally:
        early_signals.stop_recording()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
