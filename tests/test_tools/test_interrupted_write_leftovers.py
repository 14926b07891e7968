"""A checkpoint write cut off by SIGKILL leaves its hidden temporary file behind: the next run
in that work dir removes it, and nothing else."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'
# The demo recipe shrunk to a 2-block ViT, 4 photos, batch 2, one epoch: seconds on a CPU.
TINY = [
    'model.backbone.arch.embed_dim=32', 'model.backbone.arch.depth=2',
    'model.backbone.arch.num_heads=2', 'model.neck.embed_dim=32', 'model.neck.num_heads=2',
    'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False', 'train_dataloader.dataset.num_samples=4',
    'default_hooks.logger.interval=1', 'train_cfg.max_epochs=1',
]


def test_a_run_removes_the_temporary_files_of_writes_killed_before(tmp_path):
    """The atomic writer removes its temporary file on an exception, which SIGKILL never
    raises: ``.epoch_2.pth.<random>.tmp`` (1 GB for ViT-B with AdamW's state) stayed in the
    work dir for good, hidden from ``ls`` and from ``max_keep_ckpts``."""
    from fastmim.engine.checkpoint import AtomicLocalBackend  # noqa: F401 (the writer's names)
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    # What tempfile.mkstemp(prefix='.epoch_2.pth.', suffix='.tmp') names, cut off mid-write.
    stale = [work_dir / '.epoch_2.pth.k3x_9qab.tmp', work_dir / '.last_checkpoint.a1b2c3d4.tmp']
    stale[0].write_bytes(b'\0' * 12345)
    stale[1].write_bytes(b'')
    # Not the writer's: a user's hidden file, another tool's temporary files, a real checkpoint.
    kept = [work_dir / '.notes.tmp', work_dir / 'epoch_1.pth.abcdefgh.tmp',
            work_dir / '.epoch_1.pth.toolong123.tmp', work_dir / '.hidden',
            work_dir / 'mine.tmp']
    for path in kept:
        path.write_text('keep me')
    sub = work_dir / 'sub'
    sub.mkdir()
    nested = sub / '.epoch_1.pth.abcdefgh.tmp'  # only the work dir itself is cleaned
    nested.write_text('keep me')

    result = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'train.py'), str(DEMO), '--work-dir',
         str(work_dir), '--cfg-options', *TINY], cwd=ROOT,
        env={**os.environ, 'PYTHONPATH': str(ROOT)}, capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    assert not any(path.exists() for path in stale)
    assert all(path.read_text() == 'keep me' for path in [*kept, nested])
    assert (work_dir / 'epoch_1.pth').exists()
    log = ''.join(path.read_text() for path in work_dir.glob('*/*.log'))
    assert f'removed {stale[0]} (12.1 KiB)' in log, log[-3000:]
    assert f'removed {stale[1]} (0 B)' in log
    assert log.count('removed ') == 2
