"""A signal that reaches tools/train.py after training is complete: the last checkpoint is
saved, so the process finishes and exits 0, saying the signal came too late to matter.

With the default SIGTERM handler back once training ended, such a signal (a cluster cancelling
the job while the last hooks ran or Python shut down) killed the process: status 143, a job
SLURM marks failed, whose ``afterok`` dependants never start.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'

# The demo recipe shrunk to a 2-block ViT, 4 photos, batch 2: one epoch of 2 iterations.
CONFIG = f'''
_base_ = [{str(DEMO)!r}]
custom_imports = dict(imports=['recording_hooks'], allow_failed_imports=False)
model = dict(backbone=dict(arch=dict(embed_dim=32, depth=2, num_heads=2)),
             neck=dict(embed_dim=32, num_heads=2))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(num_samples=4))
train_cfg = dict(max_epochs=1)
custom_hooks = [dict(type='SignalsAfterTrainingHook')]
'''

LATE = 'SIGTERM after training was complete: nothing to save'


def test_sigterm_after_training_is_complete_leaves_status_0(train_job, tmp_path):
    config = tmp_path / 'signalled_after_training.py'
    config.write_text(CONFIG)
    output = train_job(config, tmp_path / 'work')  # asserts status 0
    assert output.count(LATE) == 1, output[-3000:]
    logs = list((tmp_path / 'work').glob('*/*.log'))
    assert [log.read_text().count(LATE) for log in logs] == [1]
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()
