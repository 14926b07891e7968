"""tools/train.py and tools/dist_train.sh as a user runs them: subprocesses on real photos."""
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import torch

from fastmim.logged_scalars import read_records, scalars_files

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'


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


def test_mistyped_recipe_names_the_close_ones(tmp_path):
    """'vit_b_hog_80e.py' was only 'not found', while a misspelt --cfg-options key got its
    close names."""
    result = run(['configs/fastmim/vit_b_hog_80e.py', '--work-dir', str(tmp_path)])
    assert_one_line_error(result)
    assert result.stderr.strip().splitlines()[-1] == (
        'error: LaunchError: config file not found: configs/fastmim/vit_b_hog_80e.py (did you mean '
        'configs/fastmim/vit_b_hog_800e.py or configs/fastmim/pvtv2_b2_hog_800e.py?)')


def test_unknown_model_key_is_one_line(tmp_path):
    result = run([str(DEMO), '--work-dir', str(tmp_path), '--cfg-options',
                  'model.backbone.no_such_arg=1'])
    assert_one_line_error(result, 'no_such_arg')


def test_a_mask_ratio_that_leaves_no_block_visible_is_one_line_before_the_work_dir(tmp_path):
    """It was refused at the first training iteration, after the Runner was built and the work
    dir written."""
    work_dir = tmp_path / 'work'
    result = run([str(DEMO), '--work-dir', str(work_dir), '--cfg-options',
                  'model.mask_ratio=0.99'])
    assert_one_line_error(result, 'error: LaunchError: model.mask_ratio=0.99 (from ',
                          'leaves none of the 64 blocks (8x8 of 16 px) of a 128x128 input',
                          'largest mask_ratio that leaves one block visible is 0.984375')
    assert not work_dir.exists()


def test_launcher_without_environment_is_one_line(tmp_path, monkeypatch):
    for name in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(name, raising=False)
    result = run([str(DEMO), '--work-dir', str(tmp_path), '--launcher', 'pytorch'])
    assert_one_line_error(result, '--launcher pytorch', 'RANK', 'dist_train.sh')


def accepts_files(folder):
    """Whether a file can be created in ``folder``: what the tool checks before it trains."""
    try:
        tempfile.NamedTemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def made_immutable(folder):
    """Whether ``chattr +i`` made ``folder`` immutable: False where chattr is missing, or the
    file system or the user may not set the attribute."""
    try:
        return subprocess.run(['chattr', '+i', str(folder)], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def unwritable(folder):
    """``folder`` refuses new files inside the block. Mode bits do not stop root, which CI runs
    the tests as; the immutable attribute does. Undone after, so that pytest can remove it."""
    folder.chmod(0o500)
    immutable = accepts_files(folder) and made_immutable(folder)
    try:
        if accepts_files(folder):
            pytest.skip(f'neither chmod 0o500 nor chattr +i makes {folder} unwritable for '
                        f'this user')
        yield
    finally:
        if immutable:
            subprocess.run(['chattr', '-i', str(folder)], check=True)
        folder.chmod(0o700)


def test_unwritable_work_dir_is_one_line_and_keeps_existing_files(tmp_path):
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    (work_dir / 'epoch_1.pth').write_bytes(b'precious')
    with unwritable(work_dir):
        result = run([str(DEMO), '--work-dir', str(work_dir)])
    assert_one_line_error(result, 'not writable', str(work_dir))
    assert (work_dir / 'epoch_1.pth').read_bytes() == b'precious'


def test_file_as_work_dir_is_one_line_and_untouched(tmp_path):
    not_a_dir = tmp_path / 'results.txt'
    not_a_dir.write_text('keep me')
    result = run([str(DEMO), '--work-dir', str(not_a_dir)])
    assert_one_line_error(result, 'not writable', str(not_a_dir))
    assert not_a_dir.read_text() == 'keep me'


def test_two_cpu_processes_train_then_resume(tmp_path, tiny_demo):
    work_dir = tmp_path / 'dist'
    result = run(['configs/fastmim/demo_vit_tiny_embedded.py', '2', '--work-dir', str(work_dir),
                  '--cfg-options', 'train_cfg.max_epochs=2', *tiny_demo.recorded_options],
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
                   '--resume', '--cfg-options', 'train_cfg.max_epochs=3',
                   *tiny_demo.recorded_options])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert 'resumed epoch: 2, iter: 4' in log
    final = torch.load(work_dir / 'epoch_3.pth', weights_only=True)
    # one process now: 8 photos / batch 2 = 4 more iterations
    assert final['meta']['iter'] == 8 and final['meta']['epoch'] == 3


def test_a_data_root_given_the_embedded_demo_is_refused_before_the_work_dir(tmp_path):
    """It was added with a warning and the demo trained on the embedded photos."""
    photos = tmp_path / 'photos'
    photos.mkdir()
    result = run(['configs/fastmim/demo_vit_tiny_embedded.py', '--work-dir',
                  str(tmp_path / 'work'), '--cfg-options',
                  f'train_dataloader.dataset.data_root={photos}'])
    assert_one_line_error(result, 'train_dataloader.dataset.data_root',
                          'train_dataloader.dataset (EmbeddedPhotos) takes no data_root',
                          "type='ImageFolder'", 'docs/data.md')
    assert not (tmp_path / 'work').exists()


def test_empty_data_folder_fails_before_training_naming_it(tmp_path):
    empty = tmp_path / 'imagenet' / 'train'
    empty.mkdir(parents=True)
    result = run(['configs/fastmim/vit_b_hog_800e.py', '--work-dir', str(tmp_path / 'work'),
                  '--cfg-options', f'train_dataloader.dataset.data_root={tmp_path / "imagenet"}',
                  'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False'])
    assert_one_line_error(result, 'train_dataloader.dataset.data_prefix', str(empty),
                          'holds no files')
    # refused by the launch check, before the Runner built the model and logged its hooks
    assert 'after_run:' not in result.stdout + result.stderr
    assert not list((tmp_path / 'work').glob('*.pth'))



def test_a_data_folder_without_images_fails_before_training_naming_it(tmp_path):
    """It failed after the Runner's start-up (ImageFolder: no images with extensions ...),
    naming no config key, and left a log folder and a config copy in the work dir."""
    notes = tmp_path / 'notes'
    (notes / 'sub').mkdir(parents=True)
    for name in ('a.txt', 'b.csv', 'sub/c.txt'):
        (notes / name).write_text('x')
    result = run(['configs/fastmim/vit_b_hog_800e.py', '--work-dir', str(tmp_path / 'work'),
                  '--cfg-options', f'train_dataloader.dataset.data_root={notes}',
                  'train_dataloader.dataset.data_prefix=', 'train_dataloader.num_workers=0',
                  'train_dataloader.persistent_workers=False'])
    assert_one_line_error(result, 'train_dataloader.dataset.data_root', str(notes),
                          'holds no image files', "'.jpg', '.jpeg', '.png'")
    assert 'after_run:' not in result.stdout + result.stderr
    assert not (tmp_path / 'work').exists()

# --- Long runs: a run killed or preempted at a random iteration and resumed with --resume ends
# with exactly the weights, optimiser state, learning rates and per-iteration losses of the same
# run left alone (bitwise on the CPU). The reference is one uninterrupted run without DataLoader
# workers; runs with 2 persistent workers are compared with it too, since a sample's
# augmentation depends on (seed, epoch, index) only.

# The run the resumed ones must match (``exact``, below): 8 photos, batch 2: 4 iterations per
# epoch, 12 in all; raw (unsmoothed) loss logged each one.
ITERATIONS = 12
WORKERS = ['train_dataloader.num_workers=2', 'train_dataloader.persistent_workers=True']
EVERY_3_ITERATIONS = ['default_hooks.checkpoint.by_epoch=False',
                      'default_hooks.checkpoint.interval=3']
LOGGED_ITERATION = re.compile(r'Epoch\(train\)\s*\[\d+\]\[\s*\d+/\d+\]')
PREEMPTED = 75


# The runs start() started in the running test: killed at its end, so that a test failing
# before it stops its run (a timeout while waiting for iterations) leaves no training behind.
STARTED = []


@pytest.fixture(autouse=True)
def no_run_outlives_its_test():
    yield
    while STARTED:
        kill_leftovers(STARTED.pop())


def start(args, work_dir, script='train.py', env=None):
    """Start a run in its own process group; its output goes to ``work_dir``.log."""
    command = ([sys.executable, str(ROOT / 'tools' / script)] if script.endswith('.py')
               else ['bash', str(ROOT / 'tools' / script)])
    full_env = {**os.environ, 'PYTHONPATH': str(ROOT), 'PYTHONUNBUFFERED': '1', **(env or {})}
    with open(f'{work_dir}.log', 'w') as log:
        process = subprocess.Popen(command + args + ['--work-dir', str(work_dir)], cwd=ROOT,
                                   env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    STARTED.append(process)
    return process


def wait_for_iterations(process, work_dir, count, timeout=300):
    """Wait until the run has logged ``count`` iterations."""
    deadline = time.time() + timeout
    while True:
        log = Path(f'{work_dir}.log').read_text()
        if len(LOGGED_ITERATION.findall(log)) >= count:
            return
        assert process.poll() is None and time.time() < deadline, log[-3000:]
        time.sleep(0.01)


def kill_run(process):
    """SIGKILL the run and its workers or ranks, perhaps in the middle of a save."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def kill_leftovers(process):
    """SIGKILL what is left of a run's process group: nothing, when it ended as it should."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def logged(work_dir, *keys):
    """``{step: values of keys}`` of every logged record holding ``keys[0]``, the later run's
    where a resumed run repeated a step (a run killed after it, resumed from before it)."""
    by_step = {}
    for scalars in scalars_files(work_dir, missing_ok=True):
        for record in read_records(scalars):
            if keys[0] in record:
                by_step[record['step']] = tuple(record[key] for key in keys)
    return by_step


def losses(work_dir):
    """Loss and lr of every iteration."""
    return logged(work_dir, 'loss', 'lr')


def assert_same_state(value, expected, where):
    if isinstance(expected, torch.Tensor):
        assert torch.equal(value, expected), (
            f'{where} differs by up to {(value.double() - expected.double()).abs().max():.3g}')
    elif isinstance(expected, dict):
        assert value.keys() == expected.keys(), where
        for key in expected:
            assert_same_state(value[key], expected[key], f'{where}[{key!r}]')
    elif isinstance(expected, (list, tuple)):
        assert len(value) == len(expected), where
        for i, (item, expected_item) in enumerate(zip(value, expected)):
            assert_same_state(item, expected_item, f'{where}[{i}]')
    else:
        assert value == expected, f'{where}: {value!r} != {expected!r}'


def assert_same_run(work_dir, reference_dir, iterations=ITERATIONS, final='epoch_3.pth',
                    reference_final=None):
    final_state = torch.load(Path(work_dir) / final, weights_only=True)
    expected = torch.load(Path(reference_dir) / (reference_final or final), weights_only=True)
    assert final_state['meta']['iter'] == expected['meta']['iter'] == iterations
    for key in ('state_dict', 'optimizer', 'param_schedulers'):
        assert_same_state(final_state[key], expected[key], key)
    expected_losses = losses(reference_dir)
    assert sorted(expected_losses) == list(range(1, iterations + 1))
    assert losses(work_dir) == expected_losses


def resume(args, work_dir, script='train.py', env=None):
    result = run(args + ['--work-dir', str(work_dir), '--resume'], env=env, script=script)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.fixture(scope='session')
def exact(tiny_demo):
    """The recorded tiny run (``tiny_demo.recorded_options``) for 3 epochs, logging the raw
    loss of every iteration: the run the resumed ones must match bit for bit."""
    return [*tiny_demo.recorded_options, 'train_cfg.max_epochs=3', 'log_processor.window_size=1']


@pytest.fixture(scope='module')
def reference_dir(tmp_path_factory, exact):
    work_dir = tmp_path_factory.mktemp('reference')
    result = run([str(DEMO), '--work-dir', str(work_dir), '--cfg-options', *exact])
    assert result.returncode == 0, result.stderr[-3000:]
    return work_dir


# Where a run is stopped is drawn at random, from a generator seeded with FASTMIM_TEST_SEED (a
# fresh seed each session when it is unset) and the test's name: a failure names its stop point
# and the seed, and FASTMIM_TEST_SEED=<seed> stops the test there again, run alone or not.
SEED = int(os.environ.get('FASTMIM_TEST_SEED') or random.SystemRandom().randrange(10**6))


@pytest.fixture
def stop_point(request):
    """``with stop_point(low, high) as count:`` a number of iterations, from ``low`` to
    ``high``, to stop a run after; a failure inside the block names it and the seed."""
    generator = random.Random(f'{SEED} {request.node.name}')

    @contextlib.contextmanager
    def draw(low, high):
        count = generator.randint(low, high)
        try:
            yield count
        except Exception as error:
            error.add_note(f'stopped after {count} iterations (drawn from {low}-{high}); '
                           f'FASTMIM_TEST_SEED={SEED} stops it there again')
            raise
    return draw


def test_sigterm_saves_a_checkpoint_and_the_resumed_run_is_exact(tmp_path, reference_dir,
                                                                 stop_point, exact):
    args = [str(DEMO), '--cfg-options', *exact]
    work_dir = tmp_path / 'work'
    process = start(args, work_dir)
    with stop_point(1, ITERATIONS - 2) as stop_after:
        wait_for_iterations(process, work_dir, stop_after)
        # SLURM's SIGTERM, then more of them while the checkpoint is written: they are ignored.
        while process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            time.sleep(0.005)
        log = Path(f'{work_dir}.log').read_text()
        assert process.returncode == PREEMPTED, log[-3000:]
        assert 'Traceback' not in log
        saved = Path((work_dir / 'last_checkpoint').read_text().strip())
        stopped_at = int(re.fullmatch(r'iter_(\d+)\.pth', saved.name).group(1))
        assert stop_after <= stopped_at < ITERATIONS
        assert f'saved {saved} at iteration {stopped_at}' in log.strip().splitlines()[-1]
        assert not list(work_dir.glob('.*.tmp'))

        log = resume(args, work_dir)
        assert f'iter: {stopped_at}' in log
        assert_same_run(work_dir, reference_dir)


def test_killed_with_persistent_workers_resumes_inside_an_epoch_exactly(tmp_path, reference_dir,
                                                                       stop_point, exact):
    args = [str(DEMO), '--cfg-options', *exact, *WORKERS, *EVERY_3_ITERATIONS]
    work_dir = tmp_path / 'work'
    process = start(args, work_dir)
    with stop_point(4, ITERATIONS - 2) as stop_after:  # iter_3 saved by then
        wait_for_iterations(process, work_dir, stop_after)
        kill_run(process)
        saved = Path((work_dir / 'last_checkpoint').read_text().strip())
        assert saved.name in ('iter_3.pth', 'iter_6.pth', 'iter_9.pth')  # 3 and 9 inside epochs

        resume(args, work_dir)
        assert_same_run(work_dir, reference_dir, final='iter_12.pth', reference_final='epoch_3.pth')


def test_two_processes_stopped_by_sigterm_and_resumed_match_the_uninterrupted_run(
        tmp_path, stop_point, tiny_demo):
    # 8 photos over 2 ranks x batch 2: 2 iterations per epoch, 8 in 4 epochs.
    args = [str(DEMO), '2', '--cfg-options', *tiny_demo.recorded_options,
            'train_cfg.max_epochs=4', 'log_processor.window_size=1']
    reference = run(args + ['--work-dir', str(tmp_path / 'reference')], script='dist_train.sh',
                    env={'PORT': '29621'})
    assert reference.returncode == 0, reference.stderr[-3000:]

    stopped = tmp_path / 'stopped'
    process = start(args, stopped, script='dist_train.sh', env={'PORT': '29622'})
    with stop_point(1, 6) as stop_after:
        wait_for_iterations(process, stopped, stop_after)
        # Only rank 1 gets the signal: both ranks must agree to stop at the same iteration, and
        # rank 0, which writes the checkpoint, must finish before either exits.
        rank_1 = next(child for child in psutil.Process(process.pid).children(recursive=True)
                      if child.environ().get('RANK') == '1'
                      and 'train.py' in ' '.join(child.cmdline()))
        rank_1.send_signal(signal.SIGTERM)
        process.wait(timeout=300)
        saved = Path((stopped / 'last_checkpoint').read_text().strip())
        assert re.fullmatch(r'iter_\d\.pth', saved.name), saved
        assert f'a signal on another rank: saved {saved}' in Path(f'{stopped}.log').read_text()
        assert torch.load(saved, weights_only=True)['meta']['iter'] < 8

        resume(args, stopped, script='dist_train.sh', env={'PORT': '29623'})
        assert_same_run(stopped, tmp_path / 'reference', iterations=8, final='epoch_4.pth')


@pytest.mark.parametrize('signal_name', ['SIGTERM', 'SIGUSR1'])
def test_a_job_signalled_whole_exits_with_the_preempted_status_through_torchrun(
        tmp_path, signal_name, tiny_demo):
    """SLURM signals every process of a preempted job: the launch script, torchrun and the
    ranks. The ranks saved and exited with 75, but torchrun reports any failed process as 1,
    so a requeue script (`[ $? -eq 75 ] && scontrol requeue`) never requeued a torchrun job;
    SIGUSR1 (`--signal=USR1@120`) killed torchrun at once."""
    args = [str(DEMO), '2', '--cfg-options', *tiny_demo.recorded_options,
            'train_cfg.max_epochs=100']
    work_dir = tmp_path / 'work'
    process = start(args, work_dir, script='dist_train.sh', env={'PORT': '29624'})
    wait_for_iterations(process, work_dir, 1)
    os.killpg(process.pid, getattr(signal, signal_name))
    process.wait(timeout=300)
    log = Path(f'{work_dir}.log').read_text()
    assert process.returncode == PREEMPTED, log[-3000:]
    saved = Path((work_dir / 'last_checkpoint').read_text().strip())
    assert f'{signal_name}: saved {saved}' in log


PROGRESSIVE = """
_base_ = ['{demo}']
# FastMIM-P in miniature: 32 px in batches of 2, then 64 px in batches of 1 with 2 accumulated
custom_hooks = [dict(type='ProgressiveResolutionHook', stages=[
    dict(epoch=0, input_size=32, batch_size=2),
    dict(epoch=2, input_size=64, batch_size=1, accumulative_counts=2)])]
default_hooks = dict(param_scheduler=dict(type='PerUpdateParamSchedulerHook'))
"""


def test_resume_across_a_progressive_resolution_stage_change_is_exact(tmp_path, stop_point,
                                                                      tiny_demo):
    config = tmp_path / 'progressive.py'
    config.write_text(textwrap.dedent(PROGRESSIVE.format(demo=DEMO)))
    # epochs 1-2: 4 iterations of 2 crops; epochs 3-4: 8 iterations of 1 crop
    args = [str(config), '--cfg-options', *tiny_demo.recorded_options,
            'train_cfg.max_epochs=4', 'log_processor.window_size=1']
    reference = run(args + ['--work-dir', str(tmp_path / 'reference')])
    assert reference.returncode == 0, reference.stderr[-3000:]

    killed = tmp_path / 'killed'
    process = start(args, killed)
    with stop_point(5, 22) as stop_after:  # before or after the change
        wait_for_iterations(process, killed, stop_after)
        kill_run(process)

        resume(args, killed)
        assert_same_run(tmp_path / 'killed', tmp_path / 'reference', iterations=24,
                        final='epoch_4.pth')


FULL_DISK = """
import errno, os
_fsync = os.fsync


def fsync(fd):
    # The disk fills up while the checkpoint of epoch 2 is written (to its temporary file).
    if '.epoch_2.pth.' in os.readlink(f'/proc/self/fd/{fd}'):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _fsync(fd)


os.fsync = fsync
"""


def run_with_sitecustomize(tmp_path, code, args, script='train.py'):
    """``run(args, script=script)`` in interpreters that first execute ``code`` (a
    ``sitecustomize`` module on their PYTHONPATH): a fault put into the tool's processes from
    outside."""
    site = tmp_path / 'site'
    site.mkdir()
    (site / 'sitecustomize.py').write_text(code)
    return run(args, env={'PYTHONPATH': f'{site}{os.pathsep}{ROOT}'}, script=script)


def test_full_disk_while_saving_is_one_line_and_keeps_the_last_checkpoint(tmp_path, exact):
    work_dir = tmp_path / 'work'
    result = run_with_sitecustomize(
        tmp_path, FULL_DISK, [str(DEMO), '--work-dir', str(work_dir), '--cfg-options', *exact])
    assert_one_line_error(result, 'CheckpointError', f'could not write {work_dir}/epoch_2.pth',
                          'No space left on device', 'MiB free on')
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith('epoch_1.pth')
    assert torch.load(work_dir / 'epoch_1.pth', weights_only=True)['meta']['iter'] == 4
    assert not list(work_dir.glob('.*.tmp'))


RANK_1_FAILS = """
import os
if os.environ.get('RANK') == '1':
    import torch
    _backward = torch.Tensor.backward
    calls = []

    def backward(self, *args, **kwargs):
        # A bug that rank 1 alone hits, in its second training iteration.
        calls.append(None)
        if len(calls) == 2:
            raise RuntimeError('rank 1 alone fails here')
        return _backward(self, *args, **kwargs)


    torch.Tensor.backward = backward
"""


def test_the_error_that_ends_rank_1_is_in_its_log_which_rank_0_s_log_names(tmp_path, tiny_demo):
    """A rank > 0's traceback was on its console only (a node's, after a multi-node job), and
    rank 0's log ended with 'another process of the job ended' without saying where to look."""
    work_dir = tmp_path / 'work'
    result = run_with_sitecustomize(
        tmp_path, RANK_1_FAILS, [str(DEMO), '2', '--work-dir', str(work_dir), '--cfg-options',
                                 *tiny_demo.recorded_options, 'train_cfg.max_epochs=100'],
        script='dist_train.sh')
    assert result.returncode == 1, result.stderr[-3000:]
    run_log, = (path for path in work_dir.glob('*/*.log') if '_rank' not in path.name)
    rank_log = run_log.with_name(f'{run_log.stem}_rank1.log').read_text()
    assert 'Traceback (most recent call last):' in rank_log, rank_log
    assert rank_log.rstrip().endswith('RuntimeError: rank 1 alone fails here'), rank_log
    assert 'rank 1 alone fails here' not in run_log.read_text()
    assert run_log.read_text().rstrip().endswith(
        "error: rank 0: another process of the job ended during a collective operation (its "
        "own message and the launcher's line say why; a process of rank R > 0 writes its own "
        f"to {run_log.with_name(f'{run_log.stem}_rank<R>.log')})"), run_log.read_text()[-3000:]


def test_ctrl_c_of_a_two_process_job_is_one_line_and_status_130(tmp_path, tiny_demo):
    """Through torchrun a Ctrl-C ended with status 1, the line once per process and
    torchrun's SignalException traceback."""
    args = [str(DEMO), '2', '--cfg-options', *tiny_demo.recorded_options,
            'train_cfg.max_epochs=100']
    work_dir = tmp_path / 'work'
    process = start(args, work_dir, script='dist_train.sh')
    wait_for_iterations(process, work_dir, 1)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    process.wait(timeout=300)
    output = Path(f'{work_dir}.log').read_text()
    assert process.returncode == 130, output[-3000:]
    assert output.count('interrupted (Ctrl-C)') == 1 and 'Traceback' not in output, output[-3000:]


def test_a_user_error_of_a_two_process_job_is_its_line_alone(tmp_path):
    """After the processes' one line, torchrun added its ChildFailedError traceback and a
    failure table blaming the rank it had stopped."""
    result = run([str(DEMO), '2', '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                  'train_cfg.max_epochs=1.5'], script='dist_train.sh')
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr and 'ChildFailedError' not in result.stderr
    assert result.stderr.count('error: LaunchError: train_cfg.max_epochs=1.5') == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        'train.py: the process of rank 0 ended first, with status 1')


def test_a_command_line_error_of_a_two_process_job_is_printed_once_with_status_2(tmp_path):
    """Every process parsed the command line before any waited for the first to report: the
    usage error came once per process, and torchrun's status 1 replaced argparse's 2."""
    alone = run([str(DEMO), '--bogus'])
    assert alone.returncode == 2  # argparse's status for a command-line error
    result = run([str(DEMO), '2', '--work-dir', str(tmp_path / 'work'), '--bogus'],
                 script='dist_train.sh')
    assert result.returncode == 2, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr
    assert result.stderr.count('train.py: error: unrecognized arguments: --bogus') == 1
    assert result.stderr.count('usage: train.py') == 1
    assert not (tmp_path / 'work').exists()


def test_the_help_of_a_two_process_job_is_printed_once():
    result = run([str(DEMO), '2', '--help'], script='dist_train.sh')
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count('usage: train.py') == 1
    assert result.stdout.count('--work-dir WORK_DIR  ') == 1  # the help's options, once


def test_a_port_another_job_holds_is_one_line(tmp_path):
    import socket
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run([str(DEMO), '2', '--work-dir', str(tmp_path / 'work')],
                     env={'PORT': str(port)}, script='dist_train.sh')
    assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert f'could not listen on 127.0.0.1:{port}' in result.stderr
    assert 'another PORT' in result.stderr


def test_a_run_removes_the_temporary_files_of_writes_killed_before(tmp_path, tiny_demo):
    """The atomic writer removes its temporary file on an exception, which SIGKILL never
    raises: ``.epoch_2.pth.<random>.tmp`` (1 GB for ViT-B with AdamW's state) stayed in the
    work dir for good, hidden from ``ls`` and from ``max_keep_ckpts``."""
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

    result = run([str(DEMO), '--work-dir', str(work_dir), '--cfg-options',
                  *tiny_demo.recorded_options, 'train_cfg.max_epochs=1'])
    assert result.returncode == 0, result.stderr[-3000:]

    assert not any(path.exists() for path in stale)
    assert all(path.read_text() == 'keep me' for path in [*kept, nested])
    assert (work_dir / 'epoch_1.pth').exists()
    log = ''.join(path.read_text() for path in work_dir.glob('*/*.log'))
    assert f'removed {stale[0]} (12.1 KiB)' in log, log[-3000:]
    assert f'removed {stale[1]} (0 B)' in log
    assert log.count('removed ') == 2


def test_killing_torchrun_stops_its_processes_after_they_save(tmp_path, tiny_demo):
    """torchrun killed outright (kill -9, the out-of-memory killer) left its processes training
    on with nobody watching them (their parent became init), beside the next job's processes.
    Each asks the kernel for SIGTERM when torchrun dies, and PreemptionHook saves and stops
    it. The launch script waits for them (it exited 137 at once, so a requeue script did not
    retry the saved job), exits with the preempted status and removes its record."""
    # Minutes of training: left alone, the processes would outlast the wait below.
    args = [str(DEMO), '2', '--cfg-options', *tiny_demo.recorded_options,
            'train_cfg.max_epochs=1000']
    work_dir = tmp_path / 'work'
    temporary = tmp_path / 'tmp'
    temporary.mkdir()
    process = start(args, work_dir, script='dist_train.sh', env={'TMPDIR': str(temporary)})
    ranks = []
    try:
        wait_for_iterations(process, work_dir, 1)
        torchrun = next(child for child in psutil.Process(process.pid).children(recursive=True)
                        if 'torchrun.py' in ' '.join(child.cmdline()))
        ranks = torchrun.children()
        assert len(ranks) == 2
        torchrun.kill()
        _, running = psutil.wait_procs(ranks, timeout=60)
        assert not running, Path(f'{work_dir}.log').read_text()[-3000:]
        assert process.wait(timeout=30) == PREEMPTED, Path(f'{work_dir}.log').read_text()[-3000:]
    finally:
        for rank in ranks:
            if rank.is_running():
                rank.kill()
        kill_leftovers(process)
    log = Path(f'{work_dir}.log').read_text()
    saved = Path((work_dir / 'last_checkpoint').read_text().strip())
    assert re.fullmatch(r'iter_\d+\.pth', saved.name), saved
    assert log.count(f'preempted: SIGTERM: saved {saved}') == 2, log[-3000:]
    assert not [path.name for path in temporary.iterdir() if path.name.startswith('fastmim_')]


SIGNAL_WHILE_IMPORTING = """
import os, signal, sys


class SignalsWhenFastmimImportsTorch:
    # The job is preempted while tools/train.py imports its modules: fastmim's package starts
    # importing torch (seconds; the tool has looked up where fastmim is, no more).
    def find_spec(self, name, path=None, target=None):
        if name == 'torch':
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGTERM)
        return None


sys.meta_path.insert(0, SignalsWhenFastmimImportsTorch())
"""


def test_a_signal_while_the_tool_imports_stops_the_run_with_the_preempted_status(tmp_path,
                                                                                 tiny_demo):
    """The signal arrived before train.py recorded signals (it does once the config is
    loaded): the run died with status 143, which a requeue script takes for a crash."""
    work_dir = tmp_path / 'work'
    result = run_with_sitecustomize(tmp_path, SIGNAL_WHILE_IMPORTING,
                                    [str(DEMO), '--work-dir', str(work_dir), '--cfg-options',
                                     *tiny_demo.recorded_options])
    assert result.returncode == PREEMPTED, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        'preempted: SIGTERM before training started: nothing trained in this run (at '
        'iteration 0); continue with --resume')
    assert not list(work_dir.glob('*.pth'))


RECORD_FROM_THE_FIRST_LINE = """
import importlib.util, os, signal, sys
spec = importlib.util.spec_from_file_location('train', {train!r})
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)
train.record_signals_while_importing()
os.kill(os.getpid(), signal.SIGTERM)
print(sorted(name for name in sys.modules
             if name.partition('.')[0] in ('fastmim', 'mmengine', 'numpy', 'torch')))
print(sys.modules['fastmim.engine.early_signals'].RECORDED)
"""


def test_the_tool_records_signals_before_importing_anything_heavy():
    """The first line's recording is the record the hook takes over, so it lives in the
    package; imported through the package it would first import torch (fastmim/__init__.py),
    seconds in which a signal killed the job with status 143."""
    code = RECORD_FROM_THE_FIRST_LINE.format(train=str(ROOT / 'tools' / 'train.py'))
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.splitlines() == ["['fastmim.engine.early_signals']",
                                          f'[{signal.SIGTERM.value}]'], result.stderr


def test_the_record_is_the_module_of_the_fastmim_that_imports(tmp_path):
    """It was loaded from the repository's file whatever fastmim the tool then imported: with
    another version installed, the hook of that version never saw the recorded signals."""
    other = tmp_path / 'fastmim' / 'engine'
    other.mkdir(parents=True)
    (other.parent / '__init__.py').write_text('')
    (other / '__init__.py').write_text('')
    (other / 'early_signals.py').write_text(
        (ROOT / 'fastmim' / 'engine' / 'early_signals.py').read_text())
    code = RECORD_FROM_THE_FIRST_LINE.format(train=str(ROOT / 'tools' / 'train.py')) + (
        "print(sys.modules['fastmim.engine.early_signals'].__file__)")
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path,
                            env={**os.environ, 'PYTHONPATH': str(tmp_path)})
    assert result.stdout.splitlines()[1:] == [f'[{signal.SIGTERM.value}]',
                                              str(other / 'early_signals.py')], result.stderr


def test_a_fastmim_without_the_record_is_imported_as_it_is(tmp_path):
    """A version older than the record has no such file: the tool goes on to its import."""
    (tmp_path / 'fastmim').mkdir()
    (tmp_path / 'fastmim' / '__init__.py').write_text('')
    code = RECORD_FROM_THE_FIRST_LINE.format(train=str(ROOT / 'tools' / 'train.py')).replace(
        'os.kill(os.getpid(), signal.SIGTERM)', '')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path,
                            env={**os.environ, 'PYTHONPATH': str(tmp_path)})
    assert result.returncode == 1 and "KeyError: 'fastmim.engine.early_signals'" in result.stderr
    assert result.stdout.splitlines() == ['[]'], result.stderr



TRAIN_IN_PROCESS = """
import importlib.util, os, signal, sys, threading, time
from pathlib import Path
import mmengine.runner.loops as loops
spec = importlib.util.spec_from_file_location('train', {train!r})
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)
received = []
signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
expected = dict(SIGTERM=signal.SIG_DFL, SIGUSR1=signal.getsignal(signal.SIGUSR1))


def main(work_dir, *options):
    try:
        train.main([{config!r}, '--work-dir', work_dir, '--cfg-options', *{tiny!r}, *options])
    except Exception as error:
        print('result:', type(error).__name__)
    handlers = dict((name, signal.getsignal(getattr(signal, name))) for name in expected)
    print('result:', handlers == expected, flush=True)


def signal_once(path):
    while not os.path.exists(path):
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)


threading.Thread(target=signal_once, args=({work!r} + '/1/epoch_1.pth', ), daemon=True).start()
main({work!r} + '/1', 'train_cfg.max_epochs=20')  # preempted after its first epoch


def crash(*args):
    raise RuntimeError('a bug inside training')


loops.EpochBasedTrainLoop.run_iter = crash
main({work!r} + '/2')
os.kill(os.getpid(), signal.SIGUSR1)
print('result:', received == [signal.SIGUSR1], flush=True)
os.kill(os.getpid(), signal.SIGTERM)  # ends the process, as it would have before the runs
print('result: still running', flush=True)
"""


def test_training_in_process_leaves_the_signal_handlers_as_it_found_them(tmp_path, tiny_demo):
    """A notebook or a Python session calling tools/train.py's main: after a preempted run
    SIGTERM and SIGUSR1 were ignored, after a crash inside training they went to the hook's
    handler, which only records: either way a later SIGTERM to that process did nothing."""
    code = TRAIN_IN_PROCESS.format(train=str(ROOT / 'tools' / 'train.py'), config=str(DEMO),
                                   tiny=tiny_demo.recorded_options, work=str(tmp_path))
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=600, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    results = [line[len('result: '):] for line in result.stdout.splitlines()
               if line.startswith('result: ')]
    assert results == ['TrainingPreempted', 'True', 'RuntimeError', 'True', 'True'], (
        result.stdout[-3000:] + result.stderr[-3000:])
    assert result.returncode == -signal.SIGTERM

FAKE_SRUN = '''#!{python}
"""srun as tools/slurm_train.sh runs it, on this machine: starts --ntasks copies of the command
with SLURM's variables, passes SIGTERM and SIGUSR1 on to them, kills the others once one exits
with an error (--kill-on-bad-exit) and exits with srun's status: the first task's to end, or
a later one's higher exit code."""
import os
import signal
import subprocess
import sys

args = sys.argv[1:]
ntasks = 1
while args[0].startswith('-'):
    option = args.pop(0)
    if option == '-p':
        args.pop(0)
    elif option.startswith('--ntasks='):
        ntasks = int(option.split('=')[1])
ends = {{}}  # pid: its exit code (-signal), None while it runs
for rank in range(ntasks):
    env = dict(os.environ, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank),
               SLURM_NTASKS=str(ntasks), SLURM_NODELIST='localhost', SLURM_JOB_ID='1')
    ends[subprocess.Popen(args, env=env).pid] = None


def send(signum, frame=None):
    for pid, end in ends.items():
        if end is None:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:  # ended, not recorded yet
                pass


signal.signal(signal.SIGTERM, send)
signal.signal(signal.SIGUSR1, send)
status = None
while None in ends.values():
    pid, wait_status = os.wait()
    ends[pid] = os.waitstatus_to_exitcode(wait_status)
    if status is None or ends[pid] > status:  # a signal (negative) replaces no exit code
        status = ends[pid]
    if ends[pid] != 0:
        send(signal.SIGKILL)
sys.exit(128 - status if status < 0 else status)
'''


def test_a_preempted_slurm_job_exits_with_the_preempted_status(tmp_path, tiny_demo):
    """SLURM signals every process of a job it preempts: the ranks srun started saved and
    exited with 75, but tools/slurm_train.sh, a shell waiting for srun, died of the SIGTERM
    at once, so the batch script saw 143 and did not requeue the job."""
    import socket
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'srun').write_text(FAKE_SRUN.format(python=sys.executable))
    (bin_dir / 'scontrol').write_text('#!/bin/sh\necho "$3"\n')  # show hostnames NODELIST
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    work_dir = tmp_path / 'work'
    args = ['partition', 'job', str(DEMO), str(work_dir), '--cfg-options',
            *tiny_demo.recorded_options, 'train_cfg.max_epochs=100']
    env = {'PATH': f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', 'GPUS': '2',
           'GPUS_PER_NODE': '2', 'MASTER_PORT': str(port)}
    process = start(args, work_dir, script='slurm_train.sh', env=env)
    try:
        wait_for_iterations(process, work_dir, 1)
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=300)
    finally:
        kill_leftovers(process)
    log = Path(f'{work_dir}.log').read_text()
    assert process.returncode == PREEMPTED, log[-3000:]
    saved = Path((work_dir / 'last_checkpoint').read_text().strip())
    assert log.count(f'preempted: SIGTERM: saved {saved}') == 2, log[-3000:]
    assert 'Traceback' not in log
