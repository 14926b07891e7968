"""Exact resume of the Fashion-MNIST dense-task configs (fashion_mnist_upernet*.py).

The configs trained with mmengine's IterBasedTrainLoop, mmseg's InfiniteSampler and an unseeded
BaseSegDataset: a resumed run flipped other samples and dropped other activations than the
uninterrupted run (its generators had not been moved by the iterations before the checkpoint),
and had no PreemptionHook, so SIGTERM lost the work since the last checkpoint. Here the scratch
config, shrunk through --cfg-options to 4 iterations of batch 2 on 8 canvases, is stopped
(SIGKILL; SIGTERM) and resumed, and must end as the uninterrupted run does, bit for bit.
"""
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = ROOT / 'configs' / 'experiments' / 'fashion_mnist_upernet_scratch.py'
ITERATIONS = 4
PREEMPTED = 75  # tools/train.py's status after PreemptionHook saved

# Send the signal FASTMIM_TEST_SIGNALS names (``iteration:SIGNAL,...``, iterations numbered
# from 0) to this process just before that iteration, once per work dir (a marker file), so a
# resumed run that repeats the iteration runs on.
SIGNAL_AT = """
import os
import signal

from mmengine.runner import IterBasedTrainLoop

_run_iter = IterBasedTrainLoop.run_iter


def run_iter(self, data_batch):
    for entry in os.environ['FASTMIM_TEST_SIGNALS'].split(','):
        at, name = entry.split(':')
        marker = os.path.join(self.runner.work_dir, f'signalled_{at}')
        if self._iter == int(at) and not os.path.exists(marker):
            open(marker, 'w').close()
            os.kill(os.getpid(), getattr(signal, name))
    return _run_iter(self, data_batch)


IterBasedTrainLoop.run_iter = run_iter
"""


@pytest.fixture(scope='module')
def options(tmp_path_factory):
    """The scratch config shrunk: 8 canvases, batches of 2, an interval checkpoint every 2
    iterations, no validation."""
    from fastmim.datasets.fashion_mnist_canvas import write_canvas_segmentation
    root = str(tmp_path_factory.mktemp('canvases')) + '/'
    write_canvas_segmentation(root, num_train=8, num_test=2, seed=0)
    return [
        'randomness.seed=0', f'train_dataloader.dataset.data_root={root}',
        f'val_dataloader.dataset.data_root={root}', f'test_dataloader.dataset.data_root={root}',
        'train_dataloader.batch_size=2', f'train_cfg.max_iters={ITERATIONS}',
        f'train_cfg.val_begin={ITERATIONS + 1}', 'default_hooks.checkpoint.interval=2',
        'default_hooks.logger.interval=1', 'log_processor.window_size=1',
    ]


def train(runs, work_dir, options, *extra, env=None):
    return runs.run([str(SCRATCH), '--work-dir', str(work_dir), *extra,
                     '--cfg-options', *options], env=env)


@pytest.fixture(scope='module')
def reference(tmp_path_factory, runs, options):
    """The uninterrupted run."""
    work_dir = tmp_path_factory.mktemp('reference')
    result = train(runs, work_dir, options)
    assert result.returncode == 0, result.stderr[-3000:]
    return work_dir


def signalling(tmp_path, signals):
    """The environment of a run that receives ``signals`` (``iteration:SIGNAL,...``)."""
    site = tmp_path / 'site'
    site.mkdir()
    (site / 'sitecustomize.py').write_text(SIGNAL_AT)
    return {'PYTHONPATH': f'{site}{os.pathsep}{ROOT}', 'FASTMIM_TEST_SIGNALS': signals}


def assert_same_run(runs, work_dir, reference):
    final = torch.load(work_dir / f'iter_{ITERATIONS}.pth', weights_only=True)
    expected = torch.load(reference / f'iter_{ITERATIONS}.pth', weights_only=True)
    assert final['meta']['iter'] == expected['meta']['iter'] == ITERATIONS
    expected_losses = runs.losses(reference)
    assert sorted(expected_losses) == list(range(1, ITERATIONS + 1))
    assert runs.losses(work_dir) == expected_losses
    for key in ('state_dict', 'optimizer', 'param_schedulers'):
        runs.assert_same_state(final[key], expected[key], key)


def test_a_killed_dense_run_resumed_from_an_interval_checkpoint_is_exact(tmp_path, runs,
                                                                         options, reference):
    """SIGKILLed before iteration 4 (from 1), resumed from iter_2.pth: before, the losses
    differed from iteration 3 on and every weight at the end."""
    killed = tmp_path / 'killed'
    env = signalling(tmp_path, '3:SIGKILL')
    result = train(runs, killed, options, env=env)
    assert result.returncode == -9, result.stderr[-3000:]
    assert (killed / 'last_checkpoint').read_text().strip().endswith('iter_2.pth')
    result = train(runs, killed, options, '--resume', env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(runs, killed, reference)


def test_a_preempted_dense_run_saves_and_resumes_exactly(tmp_path, runs, options, reference):
    """SIGTERM before iteration 2 (from 1): PreemptionHook saves iter_2.pth and the run exits
    75; resumed, it ends as the uninterrupted run. Before, the configs had no PreemptionHook:
    SIGTERM killed the run, and the work since the last interval checkpoint was lost."""
    preempted = tmp_path / 'preempted'
    env = signalling(tmp_path, '1:SIGTERM')
    result = train(runs, preempted, options, env=env)
    assert result.returncode == PREEMPTED, result.stderr[-3000:]
    assert (preempted / 'last_checkpoint').read_text().strip().endswith('iter_2.pth')
    result = train(runs, preempted, options, '--resume', env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(runs, preempted, reference)
