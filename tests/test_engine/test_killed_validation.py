"""A run killed without a signal (SIGKILL: out of memory, a node failure, SLURM's KillWait
expiring) during a validation inside training: CheckpointHook had saved the checkpoint of that
position just before the validation, with nothing saying that the validation was still due, so
the resumed run trained on and that validation's metrics, and its best checkpoint, were never
computed. The kill is emulated by an exception no hook sees (``runner.train`` runs nothing
after it), raised in the middle of a validation or of a training iteration."""
import itertools
import os
import shutil
import signal

import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

from fastmim.engine.hooks.preemption_hook import TrainingPreempted

RUN_NUMBERS = itertools.count()
# The score of the validation after each iteration: the best is the second of three.
SCORES = {4: 1.0, 8: 3.0, 12: 2.0}


class Killed(BaseException):
    """Stands for SIGKILL: nothing of the run's own handling runs after it."""


class Model(BaseModel):
    def __init__(self, kill_at_iteration=None, signal_at_iteration=None):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.kill_at, self.signal_at = kill_at_iteration, signal_at_iteration
        self.runner = None

    def forward(self, inputs, data_samples=None, mode='loss'):
        if mode == 'predict':
            return list(self.linear(torch.stack(inputs)).flatten())
        iteration = self.runner.iter + 1
        if iteration == self.kill_at:
            raise Killed(f'killed in iteration {iteration}')
        if iteration == self.signal_at:
            os.kill(os.getpid(), signal.SIGUSR1)
        return dict(loss=self.linear(torch.stack(inputs)).pow(2).mean())


class Score(BaseMetric):
    """Scores each validation by the iteration it follows (:data:`SCORES`), records which
    iterations were validated, and is killed at its second batch after ``kill_after``."""

    def __init__(self, validated, kill_after=None, scores=None):
        super().__init__()
        self.validated, self.kill_after = validated, kill_after
        self.scores = scores or SCORES
        self.runner = None

    def process(self, data_batch, data_samples):
        if self.runner.iter == self.kill_after and len(self.results) == 1:
            raise Killed(f'killed in the validation after iteration {self.kill_after}')
        self.results.extend(float(sample) for sample in data_samples)

    def compute_metrics(self, results):
        self.validated.append(self.runner.iter)
        return dict(score=self.scores[self.runner.iter])


def run(work_dir, loop, validated, kill_after=None, kill_at_iteration=None,
        signal_at_iteration=None, resume=False, scores=None):
    """3 epochs of 4 iterations (``loop`` 'epoch'; 'epoch-iter': checkpoints counted in
    iterations) or 12 iterations validated every 4 ('iter'), a checkpoint and a validation of
    3 batches after every 4 iterations, the best checkpoint kept. Returns the log text;
    ``Killed`` and ``TrainingPreempted`` are caught."""
    samples = [dict(inputs=torch.ones(4) * i) for i in range(4)]
    loader = dict(sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='pseudo_collate'), batch_size=1)
    epochs = loop.startswith('epoch')
    train_cfg = (dict(type='ResumableEpochBasedTrainLoop', max_epochs=3) if epochs else
                 dict(type='ResumableIterBasedTrainLoop', max_iters=12, val_interval=4))
    torch.manual_seed(0)
    model = Model(kill_at_iteration, signal_at_iteration)
    metric = Score(validated, kill_after, scores)
    runner = Runner(
        model=model, work_dir=str(work_dir),
        train_dataloader=dict(loader, dataset=samples, sampler=dict(
            type='ResumableSampler' if epochs else 'DefaultSampler', shuffle=False)),
        val_dataloader=dict(loader, dataset=samples[1:]), val_evaluator=[metric], val_cfg=dict(),
        train_cfg=train_cfg, randomness=dict(seed=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(checkpoint=dict(type='SafeCheckpointHook', by_epoch=loop == 'epoch',
                                           interval=1 if loop == 'epoch' else 4,
                                           max_keep_ckpts=1,
                                           save_best='score', rule='greater'),
                           checkpoint_meta=dict(type='CheckpointMetaHook'),
                           preemption=dict(type='PreemptionHook')),
        default_scope='fastmim', resume=bool(resume),
        load_from=resume if isinstance(resume, str) else None,
        experiment_name=f'killed_{next(RUN_NUMBERS)}')
    model.runner = metric.runner = runner
    try:
        runner.train()
    except (Killed, TrainingPreempted):
        pass
    return (work_dir / runner.timestamp / f'{runner.timestamp}.log').read_text()


def best(work_dir):
    """The best checkpoint's name and weights."""
    name, = (name for name in os.listdir(work_dir) if name.startswith('best_'))
    return name, torch.load(work_dir / name, weights_only=True)['state_dict']


def assert_same_best(work_dir, reference):
    name, weights = best(work_dir)
    expected_name, expected = best(reference)
    assert name == expected_name
    for key in expected:
        torch.testing.assert_close(weights[key], expected[key], rtol=0, atol=0)


@pytest.mark.parametrize('loop', ['epoch', 'epoch-iter', 'iter'])
def test_a_validation_killed_midway_is_repeated_by_the_resumed_run(tmp_path, loop):
    """Killed in the second of three validations: the resumed run validated after iterations
    4 and 12 only and kept the third position's weights as the best (the uninterrupted run:
    the second's)."""
    reference = []
    run(tmp_path / 'reference', loop, reference)
    assert reference == [4, 8, 12]
    validated = []
    run(tmp_path / 'run', loop, validated, kill_after=8)
    assert validated == [4]
    log = run(tmp_path / 'run', loop, validated, resume=True)
    assert validated == reference
    # an epoch loop's checkpoint at the epoch's last iteration comes before the epoch's end,
    # which the resumed run replays, its validation included
    assert ('running that validation first' in log) == (loop != 'epoch-iter')
    assert_same_best(tmp_path / 'run', tmp_path / 'reference')


@pytest.mark.parametrize('loop', ['epoch', 'epoch-iter', 'iter'])
def test_a_last_validation_killed_midway_is_repeated_by_the_resumed_run(tmp_path, loop):
    """Killed in the last validation: --resume said it had nothing left to train and exited,
    the final weights never validated."""
    run(tmp_path / 'reference', loop, [])
    validated = []
    run(tmp_path / 'run', loop, validated, kill_after=12)
    assert validated == [4, 8]
    log = run(tmp_path / 'run', loop, validated, resume=True)
    assert validated == [4, 8, 12]
    assert 'nothing left to train' not in log
    assert_same_best(tmp_path / 'run', tmp_path / 'reference')
    # Resumed again (a requeued job that had finished): nothing is repeated, and it is said.
    log = run(tmp_path / 'run', loop, validated, resume=True)
    assert validated == [4, 8, 12]
    assert 'nothing left to train' in log


@pytest.mark.parametrize('loop', ['epoch', 'epoch-iter', 'iter'])
def test_a_finished_run_resumed_again_repeats_nothing(tmp_path, loop):
    """A requeued job that had finished. An epoch loop checkpointing by iteration wrote its
    last checkpoint at the last iteration, before the last epoch's end: it was not called
    finished, and every requeue replayed that epoch's end and validated again (an ImageNet
    validation per requeue of a fine-tuning)."""
    validated = []
    run(tmp_path / 'run', loop, validated)
    log = run(tmp_path / 'run', loop, validated, resume=True)
    assert validated == [4, 8, 12]
    assert 'nothing left to train' in log


@pytest.mark.parametrize('loop', ['epoch', 'epoch-iter', 'iter'])
def test_a_finished_validation_is_not_repeated_by_the_resumed_run(tmp_path, loop):
    """Killed in training after the validation of the last checkpoint had finished (without a
    new best score, so CheckpointHook did not save that checkpoint again after it): the
    resumed run goes on training, as the uninterrupted run did. The same checkpoint resumed
    into another work dir, which has no record of that validation, repeats it."""
    scores = {4: 3.0, 8: 1.0, 12: 2.0}
    run(tmp_path / 'reference', loop, [], scores=scores)
    validated = []
    run(tmp_path / 'run', loop, validated, kill_at_iteration=10, scores=scores)
    assert validated == [4, 8]
    checkpoint = str(tmp_path / 'copy.pth')  # the resumed run deletes its own
    shutil.copy((tmp_path / 'run' / 'last_checkpoint').read_text().strip(), checkpoint)
    log = run(tmp_path / 'run', loop, validated, resume=True, scores=scores)
    assert validated == [4, 8, 12]
    assert 'running that validation first' not in log
    # iter_8.pth of an epoch loop precedes epoch 2's end: replayed, less its validation
    assert ('validation after iteration 8 (epoch 2) finished before the run this one resumes '
            'stopped (.last_validation of the work dir): not repeated' in log) == (
                loop == 'epoch-iter')
    assert_same_best(tmp_path / 'run', tmp_path / 'reference')

    elsewhere = []
    run(tmp_path / 'elsewhere', loop, elsewhere, resume=checkpoint, scores=scores)
    assert elsewhere == [8, 12]


def test_a_preemption_at_an_iteration_the_loop_validates_after_repeats_it(tmp_path):
    """The iteration loop validates after counting the iteration whose hooks stopped it: the
    preemption checkpoint of iteration 8 resumed at iteration 9, that validation skipped."""
    run(tmp_path / 'reference', 'iter', [])
    validated = []
    run(tmp_path / 'run', 'iter', validated, signal_at_iteration=8)
    assert validated == [4]
    run(tmp_path / 'run', 'iter', validated, resume=True)
    assert validated == [4, 8, 12]
    assert_same_best(tmp_path / 'run', tmp_path / 'reference')


@pytest.mark.parametrize('loop', ['epoch', 'epoch-iter', 'iter'])
def test_a_new_best_found_after_a_resume_is_saved_in_the_regular_checkpoint(tmp_path, loop):
    """Killed in the validation after iteration 8, whose score is the best: the resumed run
    repeats it and saves best_*_8, but mmengine saves the regular checkpoint again with the
    new best only once its process has saved one, so iter_8/epoch_2.pth kept the old best.
    Killed again at iteration 10 and resumed from it, the run took the third validation's
    lower score for a new best and kept that checkpoint besides (or instead of) the best."""
    run(tmp_path / 'reference', loop, [])
    validated = []
    run(tmp_path / 'run', loop, validated, kill_after=8)
    run(tmp_path / 'run', loop, validated, resume=True, kill_at_iteration=10)
    assert validated == [4, 8]
    checkpoint = torch.load((tmp_path / 'run' / 'last_checkpoint').read_text().strip(),
                            weights_only=True)
    assert checkpoint['message_hub']['runtime_info']['best_score'] == SCORES[8]
    run(tmp_path / 'run', loop, validated, resume=True)
    assert validated == [4, 8, 12]
    assert_same_best(tmp_path / 'run', tmp_path / 'reference')
