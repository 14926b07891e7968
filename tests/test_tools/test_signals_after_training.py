"""A signal that reaches tools/train.py after training is complete: the last checkpoint is
saved, so the process finishes and exits 0, saying the signal came too late to matter.

With the default SIGTERM handler back once training ended, such a signal (a cluster cancelling
the job while the last hooks ran or Python shut down) killed the process: status 143, a job
SLURM marks failed, whose ``afterok`` dependants never start.
"""
# Added to the shrunk demo on 4 photos (tiny_demo.pretraining, batch 2): one epoch of 2
# iterations.
SIGNALLED = '''
custom_imports = dict(imports=['recording_hooks'], allow_failed_imports=False)
train_cfg = dict(max_epochs=1)
custom_hooks = [dict(type='SignalsAfterTrainingHook')]
'''

LATE = 'SIGTERM after training was complete: nothing to save'


def test_sigterm_after_training_is_complete_leaves_status_0(train_job, tiny_demo, tmp_path):
    config = tmp_path / 'signalled_after_training.py'
    config.write_text(tiny_demo.pretraining(num_samples=4) + SIGNALLED)
    output = train_job(config, tmp_path / 'work')  # asserts status 0
    assert output.count(LATE) == 1, output[-3000:]
    logs = list((tmp_path / 'work').glob('*/*.log'))
    assert [log.read_text().count(LATE) for log in logs] == [1]
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()
