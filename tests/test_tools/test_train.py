"""tools/train.py and tools/dist_train.sh as a user runs them: subprocesses on real photos."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'
# The demo recipe shrunk to a 2-block ViT, 8 photos, batch 2: seconds per epoch on a CPU.
TINY = [
    'model.backbone.arch.embed_dim=32', 'model.backbone.arch.depth=2',
    'model.backbone.arch.num_heads=2', 'model.neck.embed_dim=32', 'model.neck.num_heads=2',
    'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False', 'train_dataloader.dataset.num_samples=8',
    'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1',
]


def run(args, env=None, script='train.py'):
    full_env = {**os.environ, 'PYTHONPATH': str(ROOT), **(env or {})}
    command = ([sys.executable, str(ROOT / 'tools' / script)] if script.endswith('.py')
               else ['bash', str(ROOT / 'tools' / script)])
    return subprocess.run(command + args, cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=600)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 1, result.stderr[-2000:]
    assert 'Traceback' not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ')
    for fragment in fragments:
        assert fragment in last, last


def test_missing_config_is_one_line(tmp_path):
    result = run([str(tmp_path / 'nope.py')])
    assert_one_line_error(result, 'config file not found', 'nope.py')


def test_unknown_model_key_is_one_line(tmp_path):
    result = run([str(DEMO), '--work-dir', str(tmp_path), '--cfg-options',
                  'model.backbone.no_such_arg=1'])
    assert_one_line_error(result, 'no_such_arg')


def test_launcher_without_environment_is_one_line(tmp_path, monkeypatch):
    for name in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(name, raising=False)
    result = run([str(DEMO), '--work-dir', str(tmp_path), '--launcher', 'pytorch'])
    assert_one_line_error(result, '--launcher pytorch', 'RANK', 'dist_train.sh')


def test_unwritable_work_dir_is_one_line_and_keeps_existing_files(tmp_path):
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    (work_dir / 'epoch_1.pth').write_bytes(b'precious')
    work_dir.chmod(0o500)
    try:
        if os.access(work_dir, os.W_OK):
            pytest.skip('running as a user that can write anywhere (root)')
        result = run([str(DEMO), '--work-dir', str(work_dir)])
        assert_one_line_error(result, 'not writable', str(work_dir))
        assert (work_dir / 'epoch_1.pth').read_bytes() == b'precious'
    finally:
        work_dir.chmod(0o700)


def test_file_as_work_dir_is_one_line_and_untouched(tmp_path):
    not_a_dir = tmp_path / 'results.txt'
    not_a_dir.write_text('keep me')
    result = run([str(DEMO), '--work-dir', str(not_a_dir)])
    assert_one_line_error(result, 'not writable', str(not_a_dir))
    assert not_a_dir.read_text() == 'keep me'


def test_two_cpu_processes_train_then_resume(tmp_path):
    work_dir = tmp_path / 'dist'
    result = run(['configs/fastmim/demo_vit_tiny_embedded.py', '2', '--work-dir', str(work_dir),
                  '--cfg-options', 'train_cfg.max_epochs=2', *TINY],
                 env={'PORT': '29611'}, script='dist_train.sh')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # 8 photos over 2 ranks x batch 2 -> 2 iterations per epoch
    checkpoint = work_dir / 'epoch_2.pth'
    assert checkpoint.exists()
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith('epoch_2.pth')
    saved = torch.load(checkpoint, weights_only=True)
    assert saved['meta']['iter'] == 4 and saved['meta']['epoch'] == 2
    assert saved['meta']['geometry']['backbone']['type'] == 'VisionTransformer'

    resumed = run(['configs/fastmim/demo_vit_tiny_embedded.py', '--work-dir', str(work_dir),
                   '--resume', '--cfg-options', 'train_cfg.max_epochs=3', *TINY])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert 'resumed epoch: 2, iter: 4' in log
    final = torch.load(work_dir / 'epoch_3.pth', weights_only=True)
    # one process now: 8 photos / batch 2 = 4 more iterations
    assert final['meta']['iter'] == 8 and final['meta']['epoch'] == 3


def test_empty_data_folder_fails_before_training_naming_it(tmp_path):
    empty = tmp_path / 'imagenet' / 'train'
    empty.mkdir(parents=True)
    result = run(['configs/fastmim/vit_b_hog_800e.py', '--work-dir', str(tmp_path / 'work'),
                  '--cfg-options', f'train_dataloader.dataset.data_root={tmp_path / "imagenet"}',
                  'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False'])
    assert_one_line_error(result, str(empty))
    assert not list((tmp_path / 'work').glob('*.pth'))


def test_killed_run_resumes_with_the_same_iteration_and_lr(tmp_path):
    killed_dir, reference_dir = tmp_path / 'killed', tmp_path / 'reference'
    args = ['configs/fastmim/demo_vit_tiny_embedded.py', '--cfg-options',
            'train_cfg.max_epochs=12', *TINY]
    command = [sys.executable, str(ROOT / 'tools' / 'train.py'), *args, '--work-dir',
               str(killed_dir)]
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, 'PYTHONPATH': str(ROOT)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (killed_dir / 'epoch_2.pth').exists() and time.time() < deadline:
            assert process.poll() is None, 'training ended before it could be killed'
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)  # possibly in the middle of saving epoch 3
    finally:
        process.wait()
    # A save cut short leaves at most a temporary file; the named checkpoint is whole.
    latest = (killed_dir / 'last_checkpoint').read_text().strip()
    saved = torch.load(latest, weights_only=True)

    resumed = run(args + ['--work-dir', str(killed_dir), '--resume'])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    epoch, iteration = saved['meta']['epoch'], saved['meta']['iter']
    assert f'resumed epoch: {epoch}, iter: {iteration}' in resumed.stdout + resumed.stderr

    reference = run(args + ['--work-dir', str(reference_dir)])
    assert reference.returncode == 0, reference.stderr[-3000:]
    final = torch.load(killed_dir / 'epoch_12.pth', weights_only=True)
    expected = torch.load(reference_dir / 'epoch_12.pth', weights_only=True)
    assert final['meta']['iter'] == expected['meta']['iter'] == 48
    lrs = [group['lr'] for group in final['optimizer']['param_groups']]
    assert lrs == [group['lr'] for group in expected['optimizer']['param_groups']]
