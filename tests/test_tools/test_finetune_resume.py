"""Exact resume of fine-tuning: tools/train.py on the fine-tuning demo, stopped and resumed.

Fine-tuning draws more at random than pre-training: RandAugment, random resized crops and flips
per sample (in the DataLoader's workers), random erasing, mixup or cutmix and their mixing
weight per batch (in the data preprocessor), drop path per block, and it validates inside
training. The demo config (configs/finetune/demo_vit_tiny_embedded_ft.py) has the published
recipe's every random part on; shrunk to a 2-block ViT on 8 photos of 32 px in batches of 2, it
trains 3 epochs of 4 iterations and validates after each. A run preempted during a validation,
resumed, killed inside an epoch, and resumed again must end as the uninterrupted run does, bit
for bit, and log every validation with the uninterrupted run's metrics.
"""
import importlib.util
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load_test_train():
    """tests/test_tools/test_train.py's helpers, loaded from its file (the tests run with
    ``--import-mode=importlib``, which puts no test folder on ``sys.path``)."""
    spec = importlib.util.spec_from_file_location('test_train_helpers',
                                                  Path(__file__).with_name('test_train.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runs = _load_test_train()
# Its fixtures: the stop point drawn from FASTMIM_TEST_SEED, and no run left behind by a test.
stop_point = runs.stop_point
no_run_outlives_its_test = runs.no_run_outlives_its_test

# Added to the shrunk fine-tuning demo (tiny_demo.finetuning).
THREE_EPOCHS = """
train_dataloader = dict(batch_size=2, dataset=dict(num_samples=8, pipeline=train_pipeline))
val_dataloader = dict(batch_size=2, dataset=dict(num_samples=4, pipeline=test_pipeline))
max_epochs = 3
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingToMinLR', eta_min=1e-6, by_epoch=True, begin=1, end=max_epochs,
         T_max=max_epochs - 1, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
# A checkpoint every 3 iterations: inside every epoch (4 iterations each).
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(by_epoch=False, interval=3, max_keep_ckpts=1))
log_processor = dict(window_size=1)  # the raw loss of every iteration
"""
ITERATIONS = 12
# Every run on one thread: a 2-block ViT trains several times faster than on two busy cores, and
# bitwise equality needs the same number of threads in every run.
ONE_THREAD = {'OMP_NUM_THREADS': '1'}
NO_WORKERS = ['train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
              'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False']
WORKERS = ['train_dataloader.num_workers=2', 'train_dataloader.persistent_workers=True',
           'val_dataloader.num_workers=1', 'val_dataloader.persistent_workers=True']

# SIGTERM to the training process at the first batch of the validation after epoch 1, once per
# work dir (a marker file): the resumed run repeats that validation undisturbed.
SIGTERM_IN_VALIDATION = """
import os
import signal

from mmengine.runner import ValLoop

_run_iter = ValLoop.run_iter


def run_iter(self, idx, data_batch):
    marker = os.path.join(self.runner.work_dir, 'signalled')
    if self.runner.epoch == 1 and idx == 0 and not os.path.exists(marker):
        open(marker, 'w').close()
        os.kill(os.getpid(), signal.SIGTERM)
    return _run_iter(self, idx, data_batch)


ValLoop.run_iter = run_iter
"""


def signalled_in_validation(tmp_path):
    """The environment of a run signalled in the validation after epoch 1."""
    site = tmp_path / 'site'
    site.mkdir()
    (site / 'sitecustomize.py').write_text(SIGTERM_IN_VALIDATION)
    return {**ONE_THREAD, 'PYTHONPATH': f'{site}{os.pathsep}{ROOT}'}


def tiny_config(folder, tiny_demo):
    config = folder / 'tiny_ft.py'
    config.write_text(tiny_demo.finetuning + THREE_EPOCHS)
    return config


def validations(work_dir):
    """Top-1 and top-5 of every validation by epoch."""
    return runs.logged(work_dir, 'accuracy/top1', 'accuracy/top5')


def test_fine_tuning_stopped_in_a_validation_then_killed_inside_an_epoch_resumes_exactly(
        tmp_path, stop_point, tiny_demo):
    args = [str(tiny_config(tmp_path, tiny_demo)), '--cfg-options']
    reference = tmp_path / 'reference'
    result = runs.run(args + NO_WORKERS + ['--work-dir', str(reference)], env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]

    # SIGTERM in the validation after epoch 1: PreemptionHook saves iter_4.pth and exits.
    stopped = tmp_path / 'stopped'
    result = runs.run(args + WORKERS + ['--work-dir', str(stopped)],
                      env=signalled_in_validation(tmp_path))
    assert result.returncode == runs.PREEMPTED, result.stderr[-3000:]
    assert 'during the validation after iteration 4' in result.stderr

    # Resumed: that validation first, then training, killed at a random iteration, before or
    # after the validation of epoch 2 and the checkpoints of iterations 6 and 9 (inside epochs).
    process = runs.start(args + WORKERS + ['--resume'], stopped, env=ONE_THREAD)
    with stop_point(1, ITERATIONS - 4 - 1) as stop_after:
        runs.wait_for_iterations(process, stopped, stop_after)
        runs.kill_run(process)
        log = Path(f'{stopped}.log').read_text()
        assert 'the validation after iteration 4 did not finish' in log, log[-3000:]

        runs.resume(args + WORKERS, stopped, env=ONE_THREAD)
        runs.assert_same_run(stopped, reference, final=f'iter_{ITERATIONS}.pth')
        expected = validations(reference)
        assert sorted(expected) == [1, 2, 3]
        assert validations(stopped) == expected
