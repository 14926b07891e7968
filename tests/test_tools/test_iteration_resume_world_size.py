"""An iteration-based run resumed with another number of processes trains the samples the
uninterrupted run would have trained next.

ResumableIterBasedTrainLoop started each rank's sampler after ``iteration x batch`` of its own
indices: a 2-process checkpoint resumed by 1 process trained again the samples of the stream
the 2 processes had trained (positions 16..31 after 4 iterations of 2 x 2 became 8..15) and
never those after them, without a word; mmengine's "Advance dataloader 4 steps to skip data"
line then read as a second skip. Here the demo config, iteration-based (ResumableInfinite-
Sampler, 32 photos, batch 2), trains 2 processes on gloo and SampleLogHook (recording_hooks.py)
writes the dataset indices each rank trained at each iteration; the resumed run's are compared
with the uninterrupted run's, not with any count of the loop.
"""
import pytest

BATCH, PHOTOS, ITERATIONS = 2, 32, 6
# Added to the shrunk demo (tiny_demo.pretraining).
ITERATION_BASED = f'''
custom_imports = dict(imports=['recording_hooks'], allow_failed_imports=False)
train_cfg = dict(_delete_=True, type='ResumableIterBasedTrainLoop', max_iters={ITERATIONS})
optim_wrapper = dict(optimizer=dict(lr=1e-4))
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=1)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(by_epoch=False, interval=2,
                                                          max_keep_ckpts=-1))
log_processor = dict(by_epoch=False)
custom_hooks = [dict(type='SampleLogHook')]
'''


@pytest.fixture(scope='module')
def config(tmp_path_factory, tiny_demo):
    path = tmp_path_factory.mktemp('config') / 'iteration_based.py'
    path.write_text(tiny_demo.pretraining(
        num_samples=PHOTOS, batch_size=BATCH,
        sampler=dict(_delete_=True, type='ResumableInfiniteSampler')) + ITERATION_BASED)
    return path


@pytest.fixture(scope='module')
def uninterrupted(train_job, config, tmp_path_factory):
    """The 2-process run, with its checkpoint after iteration 2."""
    work_dir = tmp_path_factory.mktemp('two_processes')
    train_job(config, work_dir, processes=2, port=29641)
    return work_dir


def test_two_processes_resumed_by_one_train_the_samples_that_came_next(
        train_job, trained_samples, config, uninterrupted, tmp_path):
    before = trained_samples(uninterrupted)
    assert sorted(before) == list(range(ITERATIONS))
    assert all(len(indices) == 2 * BATCH for indices in before.values())
    resumed_dir = tmp_path / 'one_process'
    log = train_job(config, resumed_dir, '--resume', str(uninterrupted / 'iter_2.pth'))
    resumed = trained_samples(resumed_dir)
    # 1 process of batch 2 goes on with iterations 2..5: the 8 samples the 2 processes trained
    # at their iterations 2 and 3 (in the first pass over the 32 photos: each index once).
    assert sorted(resumed) == [2, 3, 4, 5]
    taken = [index for iteration in sorted(resumed) for index in resumed[iteration]]
    assert sorted(taken) == sorted(before[2] + before[3])
    assert 'the sampler starts at sample 8 of the stream' in log
    assert 'Advance dataloader' not in log  # mmengine's line: a second skip, which is none
    assert ('resuming at iteration 2 after 8 samples, the last trained at 4 per iteration; '
            'this run takes 2 (train_dataloader.batch_size=2 x 1 processes)') in log
    assert ("keep the checkpoint's iteration counts, so the 4 iterations left train 8 "
            'samples instead of 16') in log


def test_a_run_resumed_twice_with_other_sizes_goes_on_after_all_it_trained(
        train_job, trained_samples, config, uninterrupted, tmp_path):
    """2 processes (iterations 0-1: samples 0..7), 1 process (iterations 2-3: samples 8..11),
    2 processes again (iterations 4-5): they start at sample 12, as the uninterrupted run's
    iteration 3, and train its iterations 3 and 4."""
    before = trained_samples(uninterrupted)
    one = tmp_path / 'one_process'
    train_job(config, one, '--resume', str(uninterrupted / 'iter_2.pth'),
              '--cfg-options', 'train_cfg.max_iters=4')
    assert sorted(trained_samples(one)[2] + trained_samples(one)[3]) == sorted(before[2])
    two = tmp_path / 'two_again'
    log = train_job(config, two, '--resume', str(one / 'iter_4.pth'), processes=2, port=29642)
    assert 'the sampler starts at sample 12 of the stream' in log
    resumed = trained_samples(two)
    assert sorted(resumed) == [4, 5]
    assert sorted(resumed[4]) == sorted(before[3])
    assert sorted(resumed[5]) == sorted(before[4])


def test_the_same_processes_resume_bit_for_bit(train_job, config, uninterrupted, tmp_path):
    """The checkpoint after iteration 2 resumed by 2 processes again: the same samples at the
    same iterations and ranks, and the uninterrupted run's weights."""
    import torch
    resumed_dir = tmp_path / 'two_processes'
    train_job(config, resumed_dir, '--resume', str(uninterrupted / 'iter_2.pth'), processes=2,
              port=29643)
    for rank in (0, 1):
        lines = (uninterrupted / f'samples.rank{rank}').read_text().splitlines()
        assert (resumed_dir / f'samples.rank{rank}').read_text().splitlines() == lines[2:]
    final, reference = (torch.load(folder / f'iter_{ITERATIONS}.pth', weights_only=False)
                        ['state_dict'] for folder in (resumed_dir, uninterrupted))
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[name], reference[name]) for name in final)
