"""The command-line arguments tools/train.py and tools/test.py share and run_cli (fastmim.cli),
the launcher's environment, the CPU process group and the tie to torchrun."""
import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from fastmim import cli
from fastmim.cli import add_launch_args, apply_launch_args, parse_launch_args
from fastmim.engine import launcher_env, process_group
from fastmim.errors import LaunchError


ROOT = Path(__file__).resolve().parents[2]


def parse(argv):
    return parse_launch_args(add_launch_args(argparse.ArgumentParser()), argv)


def test_local_rank_of_torch_distributed_launch_reaches_mmengine(monkeypatch):
    # setenv first, so that the LOCAL_RANK parse() sets is removed after the test (delenv of
    # an absent variable records nothing to undo)
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.delenv('LOCAL_RANK')
    parse(['x.py', '--local-rank', '3'])  # torch.distributed.launch appends it
    assert os.environ['LOCAL_RANK'] == '3'
    parse(['x.py', '--local_rank', '5'])  # a LOCAL_RANK already set (torchrun's) is kept
    assert os.environ['LOCAL_RANK'] == '3'


def test_work_dir_from_the_command_line_else_the_config_else_its_name():
    args = parse(['configs/a/b_config.py', '--cfg-options', 'x=1', '--launcher', 'pytorch'])
    assert args.cfg_options == {'x': 1}
    cfg = Config(dict())
    apply_launch_args(cfg, args)
    assert (cfg.launcher, cfg.work_dir) == ('pytorch', os.path.join('work_dirs', 'b_config'))
    cfg = Config(dict(work_dir='mine'))
    apply_launch_args(cfg, args)
    assert cfg.work_dir == 'mine'
    apply_launch_args(cfg, parse(['b_config.py', '--work-dir', 'there']))
    assert cfg.work_dir == 'there'


@pytest.mark.parametrize('empty', ['', ' '])
def test_an_empty_work_dir_is_refused_not_taken_as_the_default(empty):
    """``--work-dir "$DIR"`` with DIR unset trained (and resumed) in work_dirs/<config>."""
    with pytest.raises(LaunchError, match='--work-dir is empty'):
        apply_launch_args(Config(dict()), parse(['b_config.py', '--work-dir', empty]))


class _FailingDataset(torch.utils.data.Dataset):
    """Two samples whose loading runs ``fail(index)``."""

    def __init__(self, fail):
        self.fail = fail

    def __len__(self):
        return 2

    def __getitem__(self, index):
        return self.fail(index)


def _unreadable(index):
    raise ValueError(f'sample {index}: no readable image')


def _unlabelled(index):
    raise KeyError(f'sample {index}: no label')


def _first_batch(fail):
    """A tool's main that loads one batch of a ``_FailingDataset`` in a worker process."""
    def main(argv):
        next(iter(torch.utils.data.DataLoader(_FailingDataset(fail), num_workers=1)))
    return main


# torch re-raises a worker's error with the worker's traceback as its message; a KeyError
# gets that text as its argument.
@pytest.mark.parametrize('fail, line', [
    (_unreadable, 'error: ValueError: sample 0: no readable image\n'),
    (_unlabelled, "error: KeyError: 'sample 0: no label'\n")])
def test_an_error_in_a_dataloader_worker_ends_in_its_own_one_line(capsys, fail, line):
    with pytest.raises(SystemExit):
        cli.run_cli(_first_batch(fail), [])
    assert capsys.readouterr().err == line


def _run_failing(main, capsys, **kwargs):
    """run_cli's exit and what it printed; a bug propagates instead of exiting."""
    with pytest.raises(SystemExit) as stop:
        cli.run_cli(main, [], **kwargs)
    return stop.value.code, capsys.readouterr().err


def test_a_bug_in_a_dataloader_worker_keeps_its_traceback():
    with pytest.raises(TypeError, match='in DataLoader worker process 0'):
        cli.run_cli(_first_batch(lambda index: None + index), [])


@pytest.mark.parametrize('bug', [lambda: None + 1, lambda: {}['depths'], lambda: int('two')],
                         ids=['None + 1', 'a missing dict key', "int('two')"])
def test_an_error_the_interpreter_raises_is_a_bug_and_keeps_its_traceback(bug):
    with pytest.raises((TypeError, KeyError, ValueError)):
        cli.run_cli(lambda argv: bug(), [])


def test_a_checked_error_and_a_call_with_a_key_the_module_lacks_are_one_line(capsys):
    def checked(argv):
        raise ValueError('model.mask_ratio must be in (0, 1), got 0')

    def unknown_key(argv):
        from fastmim.registry import MODELS
        MODELS.build(dict(type='HOGGenerator', nbins=9, cell_width=8))

    assert _run_failing(checked, capsys) == (
        1, 'error: ValueError: model.mask_ratio must be in (0, 1), got 0\n')
    code, err = _run_failing(unknown_key, capsys)
    assert code == 1 and err.startswith('error: TypeError: ') and "'cell_width'" in err
    assert err.count('\n') == 1


def test_a_batchnorm_given_one_value_per_channel_names_the_batch_size(capsys):
    """UperNet's 1 x 1 pooled branch with one image per process (BN, not SyncBN, on the CPU):
    torch's one line said nothing of the setting to change."""
    def one_image(argv):
        torch.nn.BatchNorm2d(4).train()(torch.zeros(1, 4, 1, 1))

    code, err = _run_failing(one_image, capsys)
    assert code == 1 and err.count('\n') == 1
    assert err.startswith('error: ValueError: Expected more than 1 value per channel when '
                          'training, got input size torch.Size([1, 4, 1, 1]) (')
    assert 'set train_dataloader.batch_size to 2 or more' in err


def test_a_ctrl_c_that_mmengine_turned_into_another_error_is_a_ctrl_c(capsys, monkeypatch):
    """mmengine formats the config at every checkpoint save inside a bare except that turns a
    Ctrl-C into a SyntaxError, which printed the whole config as a crash with status 1."""
    def formatting_config(argv):
        try:
            raise KeyboardInterrupt
        except:  # noqa: E722  what mmengine's Config.pretty_text does
            raise SyntaxError('Failed to format the config file, please check the syntax of:')

    assert _run_failing(formatting_config, capsys) == (130, 'interrupted (Ctrl-C)\n')
    monkeypatch.setenv('LOCAL_RANK', '1')  # torchrun's other processes: logged, not printed
    assert _run_failing(lambda argv: (_ for _ in ()).throw(KeyboardInterrupt), capsys) == (
        130, '')


@pytest.mark.parametrize('stop, line', [
    (ValueError('val image 3 cannot be read'), 'error: ValueError: val image 3 cannot be read'),
    (KeyboardInterrupt(), 'interrupted (Ctrl-C)')], ids=['error', 'Ctrl-C'])
def test_the_line_that_ends_a_run_is_in_its_log_file_too(tmp_path, capsys, stop, line):
    """The work dir's log, read later beside the checkpoints, ended at the last iteration with
    no word of why the run stopped: the line went to the terminal only."""
    from mmengine.logging import MMLogger
    log_file = tmp_path / 'run.log'

    def run(argv):
        MMLogger.get_instance('run_that_stops', log_file=str(log_file)).info('iteration 1')
        raise stop

    code, err = _run_failing(run, capsys)
    assert err.startswith(line) and err.count(line) == 1  # the terminal gets it once
    logged = log_file.read_text().splitlines()
    assert logged[0].endswith('iteration 1') and logged[-1].endswith(err.strip())


@pytest.mark.parametrize('local_rank', ['LOCAL_RANK', 'SLURM_LOCALID'])
def test_a_user_error_before_the_processes_meet_waits_for_the_nodes_first_process(
        capsys, monkeypatch, local_rank):
    """tools/dist_train.sh CONFIG 8 with a missing data_root printed the same line 8 times;
    the other processes of a node now leave the first one time to report it."""
    def checked(argv):
        raise LaunchError('train_dataloader.dataset.data_root: folder data/x not found')

    waits = []
    monkeypatch.setattr(cli.time, 'sleep', waits.append)
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    line = 'error: LaunchError: train_dataloader.dataset.data_root: folder data/x not found\n'
    for rank, waited in (('3', [cli.FIRST_PROCESS_GRACE_S]), ('0', [])):
        monkeypatch.setenv(local_rank, rank)
        assert _run_failing(checked, capsys) == (1, line)  # reported when still running
        assert waits == waited
        waits.clear()


def test_torchrun_shows_an_error_every_process_hits_once(tmp_path):
    """The real launch: torchrun stops the waiting processes when the first one exits."""
    script = tmp_path / 'fails.py'
    script.write_text('from fastmim.cli import run_cli\n'
                      'from fastmim.errors import LaunchError\n\n\n'
                      'def main(argv):\n'
                      "    raise LaunchError('folder data/x not found')\n\n\n"
                      'run_cli(main)\n')
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    env.pop('LOCAL_RANK', None)
    done = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone',
                           '--nproc-per-node', '3', str(script)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.count('error: LaunchError: folder data/x not found') == 1, done.stderr


def test_ctrl_c_is_one_line_and_the_sigint_status(capsys):
    def main(argv):
        raise KeyboardInterrupt

    assert _run_failing(main, capsys, interrupted_hint='--resume continues') == (
        cli.INTERRUPTED_EXIT_STATUS, 'interrupted (Ctrl-C); --resume continues\n')
    # Other tools (tools/test.py, the converters) do not speak of training.
    assert _run_failing(main, capsys) == (cli.INTERRUPTED_EXIT_STATUS,
                                          'interrupted (Ctrl-C)\n')
    with pytest.raises(KeyboardInterrupt):
        cli.run_cli(main, ['--debug'])


def test_a_ctrl_c_hint_given_as_a_function_is_read_at_the_interrupt(capsys):
    """What --resume would continue changes as the run saves: the hint is asked then."""
    saved = []

    def main(argv):
        saved.append('epoch_1.pth')
        raise KeyboardInterrupt

    assert _run_failing(main, capsys, interrupted_hint=lambda: f'--resume takes {saved[-1]}') == (
        cli.INTERRUPTED_EXIT_STATUS, 'interrupted (Ctrl-C); --resume takes epoch_1.pth\n')


def _free_port():
    import socket
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


LAUNCHER_ENV = {
    'slurm': dict(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_NODELIST='node01', SLURM_LOCALID='0'),
    'mpi': dict(OMPI_COMM_WORLD_RANK='0', OMPI_COMM_WORLD_SIZE='1',
                OMPI_COMM_WORLD_LOCAL_RANK='0'),
}


def _launched_by(monkeypatch, launcher, **extra):
    """The environment a one-process SLURM or Open MPI launch gives, on a machine without
    CUDA; the variables init_cpu_distributed exports are restored after the test."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    for name in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**LAUNCHER_ENV[launcher], **extra}.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize('launcher', ['slurm', 'mpi'])
def test_slurm_and_mpi_launches_join_a_gloo_group_without_cuda(monkeypatch, launcher):
    """mmengine's initialisation calls torch.cuda.set_device: 'Found no NVIDIA driver'."""
    _launched_by(monkeypatch, launcher, MASTER_ADDR='127.0.0.1')
    port = _free_port()
    try:
        process_group.init_cpu_distributed(launcher, dict(backend='nccl', port=port))
        assert torch.distributed.get_backend() == 'gloo'
        assert (torch.distributed.get_rank(), torch.distributed.get_world_size()) == (0, 1)
        assert os.environ['MASTER_PORT'] == str(port)
    finally:
        process_group.shutdown_distributed()


@pytest.mark.parametrize('launcher', ['slurm', 'mpi'])
def test_a_slurm_or_mpi_launch_without_a_master_address_is_named(monkeypatch, tmp_path,
                                                                  launcher):
    _launched_by(monkeypatch, launcher, PATH=str(tmp_path))  # no scontrol to ask
    with pytest.raises(LaunchError, match='MASTER_ADDR'):
        process_group.init_cpu_distributed(launcher)
    assert not torch.distributed.is_initialized()


def test_help_lists_debug_which_run_cli_handles(capsys):
    with pytest.raises(SystemExit):
        parse(['--help'])
    assert '--debug' in capsys.readouterr().out
    assert parse(['x.py', '--debug']).debug  # a main called without run_cli accepts it too


def test_cfg_options_keep_the_spaces_of_a_single_value():
    """mmengine's DictAction removed them: '/mnt/My Drive' became '/mnt/MyDrive'."""
    args = parse(['x.py', '--cfg-options', 'train_dataloader.dataset.data_root=/mnt/My Drive/in',
                  "visualizer.name=' two words '", 'model.neck.depth= 2 ',
                  'model.backbone.out_indices=[1, 2]', 'pipeline.1.scale=(0.2, 1.0)',
                  'randomness.deterministic=True', 'load_from=None'])
    assert args.cfg_options == {
        'train_dataloader.dataset.data_root': '/mnt/My Drive/in',
        'visualizer.name': ' two words ', 'model.neck.depth': 2,
        'model.backbone.out_indices': [1, 2], 'pipeline.1.scale': (0.2, 1.0),
        'randomness.deterministic': True, 'load_from': None}


@pytest.mark.parametrize('items, named', [
    (['train_cfg.max_epochs', '2'], "'train_cfg.max_epochs'"),
    (['x=1', 'configs/a.py'], "'configs/a.py' (give the config before --cfg-options)"),
    (['=2'], "'=2'")])
def test_a_cfg_option_without_key_and_value_is_named(capsys, items, named):
    """mmengine's DictAction ended in 'not enough values to unpack', a traceback."""
    with pytest.raises(SystemExit) as stop:
        parse(['x.py', '--cfg-options', *items])
    assert stop.value.code == 2
    assert f'--cfg-options: expected KEY=VALUE, got {named}' in capsys.readouterr().err


@pytest.mark.parametrize('value', ['[dict(type="LinearLR",end=1)]', "[{'type':'X'}]",
                                   "(1, dict(a=2))"])
def test_a_dict_inside_a_list_on_the_command_line_is_named(capsys, value):
    """mmengine's parser recursed until Python's limit on a dict in a list ('maximum recursion
    depth exceeded', a traceback), or kept it as a string that failed in the module."""
    with pytest.raises(SystemExit) as stop:
        parse(['x.py', '--cfg-options', f'param_scheduler={value}'])
    assert stop.value.code == 2
    assert ('--cfg-options: param_scheduler: a dict cannot be given on the command line'
            in capsys.readouterr().err)


def test_processes_torchrun_started_without_a_launcher_are_refused(monkeypatch):
    """Each trained the whole run alone, all writing the same work dir."""
    monkeypatch.setenv('RANK', '1')
    monkeypatch.setenv('WORLD_SIZE', '2')
    with pytest.raises(LaunchError, match='rank 1 of WORLD_SIZE=2.*--launcher pytorch'):
        launcher_env.check_launcher_env('none')
    monkeypatch.setenv('WORLD_SIZE', '1')  # torchrun with one process: nothing to share
    launcher_env.check_launcher_env('none')


def test_a_collective_broken_by_another_process_ending_is_one_line(capsys, monkeypatch):
    """When one process of a job failed (a full disk) or was killed, every other one printed a
    50-line gloo traceback ('Connection closed by peer') below the failed one's line, and the
    work dir's log ended without a reason."""
    import torch.distributed as torch_dist
    monkeypatch.setattr(torch_dist, 'is_initialized', lambda: True)
    monkeypatch.setattr(torch_dist, 'get_world_size', lambda: 2)
    monkeypatch.setattr(torch_dist, 'get_rank', lambda: 1)
    monkeypatch.setattr(cli, 'shutdown_distributed', lambda: None)
    # Outside a run: no log to name or write. A logger left by an earlier test in this process
    # (with a log file and no handler) made log_to_files ask mmengine for the rank, which the
    # patched torch.distributed cannot give.
    monkeypatch.setattr(cli, 'rank_log_pattern', lambda: None)
    logged = []
    monkeypatch.setattr(cli, 'log_to_files',
                        lambda line, every_rank=False: logged.append((line, every_rank)))
    waited = []
    monkeypatch.setattr(cli.time, 'sleep', waited.append)

    def peer_gone(argv):
        raise RuntimeError('[../third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection '
                           'closed by peer [127.0.0.1]:58565')

    line = ('error: rank 1: another process of the job ended during a collective operation (its '
            "own message and the launcher's line say why)")
    assert _run_failing(peer_gone, capsys) == (1, line + '\n')
    assert logged == [(line, True)]  # in the run's log, or a rank > 0's own
    assert waited == [cli.FIRST_PROCESS_GRACE_S]  # the launcher may stop it first

    def other(argv):  # any other RuntimeError is still a bug, with its traceback
        raise RuntimeError('Expected all tensors to be on the same device')

    with pytest.raises(RuntimeError, match='same device'):
        cli.run_cli(other, [])


def _user_error(argv):
    raise LaunchError('a mistake the user fixes')


def _bug(argv):
    return None + 1


@pytest.mark.parametrize('main, ending', [
    (_user_error, 'WARNING - error: LaunchError: a mistake the user fixes'),
    (_bug, "TypeError: unsupported operand type(s) for +: 'NoneType' and 'int'")])
def test_the_error_that_ends_a_rank_above_0_is_in_its_rank_log(tmp_path, monkeypatch, capsys,
                                                                 main, ending):
    """mmengine opens the run's log on rank 0 alone: the line or traceback that ended another
    rank was on its console only (a node's, after a multi-node job)."""
    from mmengine import dist
    from mmengine.logging import MMLogger

    from fastmim import run_log
    monkeypatch.setattr(dist, 'get_rank', lambda group=None: 1)
    monkeypatch.setattr(cli, 'shutdown_distributed', lambda: None)
    name = f'rank_1_of_{tmp_path.name}'
    MMLogger.get_instance(name, log_file=str(tmp_path / 'run.log'))  # as rank 1: no file
    try:
        with pytest.raises((SystemExit, TypeError)):
            cli.run_cli(main, [])
    finally:
        MMLogger._instance_dict.pop(name)
        handler = run_log._rank_log_handlers.pop(str(tmp_path / 'run_rank1.log'), None)
        if handler is not None:
            handler.close()
    assert not (tmp_path / 'run.log').exists()
    assert (tmp_path / 'run_rank1.log').read_text().rstrip().endswith(ending)
    capsys.readouterr()

def test_a_failed_preemption_save_is_one_line_from_the_rank_it_failed_on(capsys):
    """Not status 75 (a requeue script would take the run as saved); one line, printed by the
    process whose save failed, the others' only logged."""
    from fastmim.engine.hooks.preemption_hook import PreemptionSaveFailed
    message = ('SIGTERM: could not save w/iter_5.pth at iteration 5 (epoch 2) (OSError: disk '
               'full); the last good checkpoint is w/epoch_1.pth (--resume continues from it)')

    def fails(own):
        def main(argv):
            raise PreemptionSaveFailed(message, own=own)
        return main

    assert _run_failing(fails(own=True), capsys) == (1, f'error: {message}\n')
    assert _run_failing(fails(own=False), capsys) == (1, '')


STOP_WITH_THE_LAUNCHER = '''
import ctypes
import os
import sys

from fastmim.engine.launcher_lifecycle import LAUNCHER_PID_ENV, stop_with_the_launcher
from fastmim.errors import LaunchError


def death_signal():
    value = ctypes.c_int()
    ctypes.CDLL(None).prctl(2, ctypes.byref(value), 0, 0, 0)  # PR_GET_PDEATHSIG
    return value.value


stop_with_the_launcher('none')
print('none', death_signal())
os.environ[LAUNCHER_PID_ENV] = str(os.getppid())
stop_with_the_launcher('pytorch')
print('pytorch', death_signal())
os.environ[LAUNCHER_PID_ENV] = '1'  # a launcher that died before the process asked
try:
    stop_with_the_launcher('pytorch')
except LaunchError as error:
    print(error)
'''


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='prctl is Linux only')
def test_a_process_torchrun_started_asks_to_be_stopped_with_it():
    """torchrun killed outright (kill -9, the out-of-memory killer) left its processes training
    unwatched. Each asks the kernel for SIGTERM (15) when torchrun dies; one whose launcher had
    already died (its parent is another process) stops there."""
    done = subprocess.run([sys.executable, '-c', STOP_WITH_THE_LAUNCHER],
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        'none 0', 'pytorch 15', 'torchrun (process 1), which started this process, has ended: '
        'nothing was trained; start the job again']


HOLD_THE_RECORD_AND_FORK = '''
import os
import sys
import time

from fastmim.engine.launcher_lifecycle import LAUNCHER_PID_ENV, stop_with_the_launcher

os.environ[LAUNCHER_PID_ENV] = str(os.getppid())
stop_with_the_launcher('pytorch')
child = os.fork()  # as a DataLoader worker is started
if child == 0:
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
sys.stdin.readline()  # the test takes the lock meanwhile, then lets this process end
'''


def record_is_free(record):
    """Whether an exclusive lock on ``record`` is free: what tools/dist_launch.sh waits for."""
    import fcntl
    with open(record) as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
    return True


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='prctl is Linux only')
def test_a_process_torchrun_started_holds_the_launch_record_while_it_lives(tmp_path):
    """With torchrun killed outright, dist_launch.sh exited 137 at once while the processes
    saved. Each process share-locks the script's preemption record until it ends, and the
    script waits for the lock; a forked child (a DataLoader worker outliving it by seconds)
    does not hold it."""
    record = tmp_path / 'preempted'
    record.touch()
    process = subprocess.Popen(
        [sys.executable, '-c', HOLD_THE_RECORD_AND_FORK], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT), FASTMIM_PREEMPTED_RECORD=str(record)))
    child = int(process.stdout.readline())
    try:
        assert not record_is_free(record)
        process.stdin.write('\n')
        process.stdin.flush()
        assert process.wait(timeout=60) == 0
        assert record_is_free(record)  # the child still sleeps
    finally:
        process.kill()
        os.kill(child, signal.SIGKILL)


LOAD_THE_RUN = """
import importlib.util, logging
from mmengine.logging import print_log
spec = importlib.util.spec_from_file_location('train', {train!r})
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)
train.load_run([{config!r}, '--launcher', 'pytorch', '--cfg-options',
                'env_cfg.cudnn_benchmarc=False'])
print_log('an error', logger='current', level=logging.ERROR)
"""


@pytest.mark.parametrize('rank', ['0', '1'])
def test_config_warnings_come_from_the_first_process_only(rank):
    """Each process of tools/dist_train.sh printed the config checks' warnings (here an added
    --cfg-options key) before mmengine's Runner logger, which shows only errors beyond rank
    0, was built: eight copies from 8 GPUs."""
    code = LOAD_THE_RUN.format(train=str(ROOT / 'tools' / 'train.py'),
                               config=str(ROOT / 'configs' / 'fastmim' /
                                          'demo_vit_tiny_embedded.py'))
    env = dict(os.environ, RANK=rank, WORLD_SIZE='2', LOCAL_RANK=rank, MASTER_ADDR='127.0.0.1',
               MASTER_PORT='29500')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=120, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert ('env_cfg.cudnn_benchmarc: ' in output) == (rank == '0'), output[-2000:]
    assert 'an error' in output
