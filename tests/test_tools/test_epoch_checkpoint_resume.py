"""Exact resume from epoch checkpoints: with gradient accumulation, and with an unset seed.

mmengine counts accumulation windows over the whole run: with an epoch length that
``optim_wrapper.accumulative_counts`` does not divide, an epoch checkpoint falls inside a window
whose gradients no checkpoint holds, and the resumed run restarts its count there.
``ResumableEpochBasedTrainLoop`` starts a window at every epoch start (an epoch's last window is
shorter and applied at the epoch's end), so every epoch checkpoint is at a window boundary.
"""
import os
from pathlib import Path

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'
# Added to the shrunk demo's recorded run (tiny_demo.recorded_options: a 2-block ViT, batches
# of 2): 6 photos (this num_samples comes later, so it replaces its 8), 3 iterations per epoch,
# updates every 2 iterations, 3 epochs.
ACCUMULATION = [
    'train_dataloader.dataset.num_samples=6', 'log_processor.window_size=1',
    'train_cfg.max_epochs=3', 'optim_wrapper.accumulative_counts=2',
]
ITERATIONS = 9

# SIGKILL the run just before the iteration numbered (from 0) FASTMIM_TEST_KILL_AT.
KILL_AT = """
import os
import signal

from fastmim.engine.loops import ResumableEpochBasedTrainLoop

_run_iter = ResumableEpochBasedTrainLoop.run_iter


def run_iter(self, idx, data_batch):
    if self._iter == int(os.environ['FASTMIM_TEST_KILL_AT']):
        os.kill(os.getpid(), signal.SIGKILL)
    return _run_iter(self, idx, data_batch)


ResumableEpochBasedTrainLoop.run_iter = run_iter
"""


@pytest.fixture(scope='module')
def accumulating(tiny_demo):
    return [*tiny_demo.recorded_options, *ACCUMULATION]


def train(runs, work_dir, *extra, options, env=None):
    return runs.run([str(DEMO), '--work-dir', str(work_dir), *extra, '--cfg-options', *options],
                    env=env)


def train_killed_inside_epoch_2(runs, tmp_path, options):
    """The work dir of a run SIGKILLed before iteration 4 (the second of epoch 2)."""
    site = tmp_path / 'site'
    site.mkdir()
    (site / 'sitecustomize.py').write_text(KILL_AT)
    killed = tmp_path / 'killed'
    result = train(runs, killed, options=options,
                   env={'PYTHONPATH': f'{site}{os.pathsep}{ROOT}', 'FASTMIM_TEST_KILL_AT': '4'})
    assert result.returncode == -9, result.stderr[-3000:]
    return killed


def test_resume_from_an_epoch_checkpoint_inside_a_global_window_is_exact(tmp_path, runs,
                                                                          accumulating):
    """3 iterations per epoch, 2 accumulated: killed in epoch 2 and resumed from epoch_1.pth
    (iteration 3), the run logged the losses of iterations 1-4 and then others, and ended with
    other weights: iteration 3's gradient, which mmengine would have added to iteration 4's, is
    in no checkpoint, and the resumed run restarted its window count at iteration 3."""
    reference = tmp_path / 'reference'
    result = train(runs, reference, options=accumulating)
    assert result.returncode == 0, result.stderr[-3000:]

    killed = train_killed_inside_epoch_2(runs, tmp_path, accumulating)
    assert (killed / 'last_checkpoint').read_text().strip().endswith('epoch_1.pth')

    result = train(runs, killed, '--resume', options=accumulating)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert 'resumed epoch: 1, iter: 3' in log

    final = torch.load(killed / 'epoch_3.pth', weights_only=True)
    expected = torch.load(reference / 'epoch_3.pth', weights_only=True)
    assert final['meta']['iter'] == expected['meta']['iter'] == ITERATIONS
    for key in ('state_dict', 'optimizer', 'param_schedulers'):
        runs.assert_same_state(final[key], expected[key], key)
    expected_losses = runs.losses(reference)
    assert sorted(expected_losses) == list(range(1, ITERATIONS + 1))
    assert runs.losses(killed) == expected_losses
    # mmengine's warning counts windows over the whole run, which this loop does not
    assert 'Resumed iteration number is not divisible' not in log



def test_resume_of_a_run_without_a_fixed_seed_is_exact(tmp_path, runs, accumulating):
    """randomness.seed=None draws a seed at every start; --resume takes the checkpoint's for the
    run, but the sampler had been built with the new one, so the resumed epochs were shuffled
    and augmented otherwise than the interrupted run would have. The reference is the
    uninterrupted run with the seed the interrupted one drew (what seed=None seeds with)."""
    unset = [*accumulating, 'optim_wrapper.accumulative_counts=1', 'randomness.seed=None']
    killed = train_killed_inside_epoch_2(runs, tmp_path, unset)
    seed = torch.load(killed / 'epoch_1.pth', weights_only=True)['meta']['seed']
    result = train(runs, killed, '--resume', options=unset)
    assert result.returncode == 0, result.stderr[-3000:]
    # The environment lines name the seed this start drew: the log says which one is used.
    output = result.stdout + result.stderr
    assert f'the run goes on with the seeds of the run it resumes: {seed}, and' in output
    # mmengine's 'resumed epoch: 1' counts epochs completed; the log's own count is said.
    assert 'resumed after iteration 3: training goes on in epoch 2 from its start' in output

    reference = tmp_path / 'reference'
    result = train(runs, reference, options=[*unset[:-1], f'randomness.seed={seed}'])
    assert result.returncode == 0, result.stderr[-3000:]
    final = torch.load(killed / 'epoch_3.pth', weights_only=True)
    expected = torch.load(reference / 'epoch_3.pth', weights_only=True)
    runs.assert_same_state(final['state_dict'], expected['state_dict'], 'state_dict')
    assert runs.losses(killed) == runs.losses(reference)


# --- The windows themselves, in one process: which iterations update, and by what the loss of
# each is divided.


class Linear(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        return dict(loss=self.linear(torch.stack(inputs)).sum())


class RecordWindows:
    """Per iteration: the factor its loss is divided by, and whether it updated."""

    def __init__(self):
        self.factors, self.updates = [], []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.factors.append(round(1 / float(runner.optim_wrapper.scale_loss(torch.tensor(1.)))))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.optim_wrapper.should_update():
            self.updates.append(runner.iter + 1)


def windows(tmp_path, samples, accumulation, epochs=3):
    from mmengine.hooks import Hook

    record = RecordWindows()
    hook = type('Record', (Hook,), {'before_train_iter': record.before_train_iter,
                                    'after_train_iter': record.after_train_iter})()
    runner = Runner(
        model=Linear(), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=[dict(inputs=torch.ones(2))] * samples, batch_size=1,
                              sampler=dict(type='ResumableSampler', shuffle=False),
                              collate_fn=dict(type='pseudo_collate')),
        train_cfg=dict(type='ResumableEpochBasedTrainLoop', max_epochs=epochs),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01),
                           accumulative_counts=accumulation),
        custom_hooks=[hook], default_hooks=dict(checkpoint=None), randomness=dict(seed=0),
        default_scope='fastmim')
    runner.train()
    return record.factors, record.updates


@pytest.mark.parametrize('samples, accumulation, factors, updates', [
    # epochs of 3 iterations, 2 accumulated: the last window of each epoch is 1 iteration long
    (3, 2, [2, 2, 1] * 3, [2, 3, 5, 6, 8, 9]),
    (5, 3, [3, 3, 3, 2, 2] * 3, [3, 5, 8, 10, 13, 15]),
    # an epoch length the accumulation divides: mmengine's windows, unchanged
    (4, 2, [2] * 12, [2, 4, 6, 8, 10, 12]),
    (6, 3, [3] * 18, [3, 6, 9, 12, 15, 18]),
    # no accumulation
    (3, 1, [1] * 9, list(range(1, 10))),
])
def test_an_accumulation_window_starts_at_every_epoch(tmp_path, samples, accumulation, factors,
                                                      updates):
    assert windows(tmp_path, samples, accumulation) == (factors, updates)


# --- A checkpoint interval that saves inside windows is named when training starts: the
# gradients of such a window's first iterations are in no checkpoint, and the run resumed from
# it differed from the uninterrupted one (accumulation 2, a checkpoint every 3 iterations:
# 5.4e-3) with a warning at the resume only, too late to change anything.


def saved_and_warned(tmp_path, monkeypatch, samples, accumulation, loop, checkpoint):
    """Train the linear model: the iterations whose checkpoints fell inside a window (saved
    after an iteration that did not update), and the warnings of the accumulation module."""
    from mmengine.hooks import Hook

    import fastmim.engine.accumulation as accumulation_module
    warned = []
    monkeypatch.setattr(accumulation_module, 'print_log',
                        lambda message, **kwargs: warned.append(message))
    updates, saved = [], []

    class Record(Hook):
        priority = 'HIGHEST'  # before the checkpoint hook of the same iteration saves

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if runner.optim_wrapper.should_update():
                updates.append(runner.iter + 1)

        def before_save_checkpoint(self, runner, checkpoint):
            saved.append(checkpoint['meta']['iter'])

    iterations = dict(max_iters=9) if 'Iter' in loop else dict(max_epochs=3)
    runner = Runner(
        model=Linear(), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=[dict(inputs=torch.ones(2))] * samples, batch_size=1,
                              sampler=dict(type='ResumableInfiniteSampler' if 'Iter' in loop
                                           else 'ResumableSampler', shuffle=False),
                              collate_fn=dict(type='pseudo_collate')),
        train_cfg=dict(type=loop, **iterations),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01),
                           accumulative_counts=accumulation),
        custom_hooks=[Record(), dict(type='CheckpointMetaHook')],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', **checkpoint)),
        randomness=dict(seed=0), default_scope='fastmim')
    runner.train()
    return [at for at in saved if at not in updates], warned


@pytest.mark.parametrize('samples, loop, checkpoint, advice', [
    # windows per epoch, epochs of 4 iterations: every 2 iterations is fine, every 3 is not
    (4, 'ResumableEpochBasedTrainLoop', dict(by_epoch=False, interval=2), None),
    (4, 'ResumableEpochBasedTrainLoop', dict(by_epoch=False, interval=3),
     'default_hooks.checkpoint.interval to a multiple of 2'),
    # epochs of 3 iterations: a checkpoint every 2 falls in epoch 2's first window (iteration 4)
    (3, 'ResumableEpochBasedTrainLoop', dict(by_epoch=False, interval=2),
     'default_hooks.checkpoint.interval to a multiple of the epoch length (3 iterations'),
    (3, 'ResumableEpochBasedTrainLoop', dict(by_epoch=False, interval=3), None),
    (3, 'ResumableEpochBasedTrainLoop', dict(by_epoch=True, interval=1), None),
    # mmengine's epoch loop: windows over the whole run, the epoch end of iteration 3 inside one
    (3, 'EpochBasedTrainLoop', dict(by_epoch=True, interval=1),
     "train_cfg.type='fastmim.ResumableEpochBasedTrainLoop'"),
    (4, 'EpochBasedTrainLoop', dict(by_epoch=True, interval=1), None),
    # the iteration loop: windows over the whole run
    (5, 'ResumableIterBasedTrainLoop', dict(by_epoch=False, interval=4), None),
    (5, 'ResumableIterBasedTrainLoop', dict(by_epoch=False, interval=3),
     'default_hooks.checkpoint.interval to a multiple of 2'),
])
def test_a_checkpoint_interval_inside_accumulation_windows_is_named_when_training_starts(
        tmp_path, monkeypatch, samples, loop, checkpoint, advice):
    inside, warned = saved_and_warned(tmp_path, monkeypatch, samples, 2, loop, checkpoint)
    if advice is None:
        assert inside == [] and warned == []
        return
    assert inside  # the run saved inside a window, as the warning says
    unit = 'epochs' if checkpoint['by_epoch'] else 'iterations'
    assert warned == [
        f'default_hooks.checkpoint saves every {checkpoint["interval"]} {unit}, inside windows '
        f'of optim_wrapper.accumulative_counts=2 accumulated iterations (first at iteration '
        f'{inside[0]}): the gradients of a window\'s first iterations are in no checkpoint, so '
        f'a run resumed from such a checkpoint differs from the uninterrupted one; set '
        + warned[0].split('; set ', 1)[1]]
    assert warned[0].split('; set ', 1)[1].startswith(advice)
