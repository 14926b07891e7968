"""The shell launchers refuse a wrong command line in one line, before torchrun or srun starts."""
import os
import re
import subprocess
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / 'tools'


def launch(script, *args, env=None, cwd=None):
    environment = {k: v for k, v in os.environ.items()
                   if k not in ('PORT', 'MASTER_PORT', 'NNODES', 'NODE_RANK', 'MASTER_ADDR')}
    return subprocess.run(['bash', str(TOOLS / script), *args], capture_output=True, text=True,
                          timeout=60, env={**environment, **(env or {})}, cwd=cwd)


@pytest.mark.parametrize('script, args, usage', [
    ('dist_train.sh', ['c.py'], 'CONFIG GPUS'),
    ('dist_test.sh', ['c.py', 'k.pth'], 'CONFIG CHECKPOINT GPUS'),
    ('slurm_train.sh', ['part', 'job'], 'PARTITION JOB_NAME CONFIG WORK_DIR'),
])
def test_missing_arguments_print_the_usage(script, args, usage):
    result = launch(script, *args)
    assert result.returncode == 2
    assert result.stderr.strip() == f'usage: tools/{script} {usage} ' + (
        '[test.py args]' if script == 'dist_test.sh' else '[train.py args]')


@pytest.mark.parametrize('gpus', ['two', '0', '-1', '1.5'])
def test_gpus_must_be_a_whole_number_of_processes(gpus):
    """Named by the script the user ran (it was dist_launch.sh, which dist_train.sh runs)."""
    result = launch('dist_train.sh', 'c.py', gpus)
    assert result.returncode == 2
    assert result.stderr.strip() == ("dist_train.sh: GPUS must be a whole number >= 1, "
                                     f"got '{gpus}'")


@pytest.mark.parametrize('port', ['99999', '65536', '0', 'abc', '080', '1e3'])
@pytest.mark.parametrize('script, args', [('dist_train.sh', ['c.py', '1']),
                                          ('dist_test.sh', ['c.py', 'k.pth', '1'])])
def test_port_must_be_a_port_number(script, args, port):
    """PORT=99999 was torchrun's 20-line traceback, PORT=abc its usage, neither naming PORT."""
    result = launch(script, *args, env={'PORT': port})
    assert result.returncode == 2
    assert result.stderr == f"{script}: PORT must be a whole number from 1 to 65535, got '{port}'\n"


@pytest.mark.parametrize('port', ['1', '29500', '65535'])
def test_a_valid_port_is_let_through(port):
    """To the next check: the config, here missing."""
    result = launch('dist_test.sh', 'c.py', 'k.pth', '1', env={'PORT': port})
    assert result.returncode == 2
    assert result.stderr == 'dist_test.sh: config file not found: c.py\n'


def torchrun_arguments(tmp_path, env):
    """What dist_train.sh passes to torchrun for the demo config on 1 process with ``env``."""
    python = tmp_path / 'python'  # stands in for torchrun: prints what it was given
    python.write_text('#!/bin/bash\n[ "$1" = -m ] && exit 0\necho "$@"\n')
    python.chmod(0o755)
    config = TOOLS.parent / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'
    result = launch('dist_train.sh', str(config), '1', env={'PYTHON': str(python), **env})
    assert result.returncode == 0, result.stderr
    return result.stdout


TWO_NODES = {'NNODES': '2', 'NODE_RANK': '0', 'MASTER_ADDR': '127.0.0.1'}


@pytest.mark.parametrize('env, port', [({'MASTER_PORT': '29612'}, '29612'),
                                       ({'PORT': '29613', 'MASTER_PORT': '29612'}, '29613')])
def test_several_nodes_take_master_port_where_port_is_not_set(tmp_path, env, port):
    """MASTER_PORT, the name torchrun and mmengine use, was ignored: the nodes waited for a
    master on torchrun's default 29500."""
    arguments = torchrun_arguments(tmp_path, {**TWO_NODES, **env})
    assert f'--master_port={port} ' in arguments and '--standalone' not in arguments


def test_one_node_keeps_its_free_port_despite_master_port(tmp_path):
    """A MASTER_PORT left in the environment does not fix the port of a one-node job: two jobs
    on one machine would collide on it."""
    arguments = torchrun_arguments(tmp_path, {'MASTER_PORT': '29612'})
    assert '--standalone' in arguments and '29612' not in arguments


def test_a_master_port_that_is_no_port_is_named_as_master_port():
    result = launch('dist_train.sh', 'c.py', '1', env={**TWO_NODES, 'MASTER_PORT': 'abc'})
    assert result.returncode == 2
    assert result.stderr == ("dist_train.sh: MASTER_PORT must be a whole number from 1 to "
                             "65535, got 'abc'\n")


@pytest.mark.parametrize('given, seen', [(None, '110'), ('300', '300')])
def test_torchrun_waits_long_enough_for_a_preemption_save(tmp_path, given, seen):
    """torchrun kills the processes it signalled after TORCH_ELASTIC_SHUTDOWN_TIMEOUT, 30 s by
    default: a checkpoint write of 40 s after SIGUSR1 was cut off (no checkpoint, status 138),
    though --signal=USR1@120 leaves 120 s. The launcher sets 110 unless the user set it."""
    python = tmp_path / 'python'  # stands in for torchrun: prints what it was given
    python.write_text('#!/bin/bash\n[ "$1" = -m ] && exit 0\n'
                      'echo "timeout=$TORCH_ELASTIC_SHUTDOWN_TIMEOUT"\n')
    python.chmod(0o755)
    config = TOOLS.parent / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'
    env = {'PYTHON': str(python), 'TORCH_ELASTIC_SHUTDOWN_TIMEOUT': given or ''}
    result = launch('dist_train.sh', str(config), '1', env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f'timeout={seen}'


@pytest.fixture
def recording_srun(tmp_path):
    """A stand-in srun on PATH that records its arguments: was the job handed to SLURM?"""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    srun = bin_dir / 'srun'
    srun.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "srun_args"}\n')
    srun.chmod(0o755)
    (tmp_path / 'c.py').write_text('')
    return dict(PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}',
                config=str(tmp_path / 'c.py'), record=tmp_path / 'srun_args')


@pytest.mark.parametrize('variable, value', [
    ('GPUS', 'two'), ('GPUS', '0'), ('GPUS_PER_NODE', '1.5'), ('CPUS_PER_TASK', '-1')])
def test_slurm_counts_are_checked_before_srun(recording_srun, variable, value):
    """srun was handed GPUS=two: the job waited for GPUs, then failed on every rank."""
    result = launch('slurm_train.sh', 'part', 'job', recording_srun['config'], 'w',
                    env={'PATH': recording_srun['PATH'], variable: value})
    assert (result.returncode, result.stderr) == (
        2, f"slurm_train.sh: {variable} must be a whole number >= 1, got '{value}'\n")
    assert not recording_srun['record'].exists()


def test_a_missing_slurm_config_is_named_before_srun(recording_srun, tmp_path):
    result = launch('slurm_train.sh', 'part', 'job', 'absent.py', 'w',
                    env={'PATH': recording_srun['PATH']}, cwd=tmp_path)  # no config close by
    assert (result.returncode, result.stderr) == (
        2, 'slurm_train.sh: config file not found: absent.py\n')
    assert not recording_srun['record'].exists()


def test_good_slurm_input_is_handed_to_srun(recording_srun):
    result = launch('slurm_train.sh', 'part', 'job', recording_srun['config'], 'w',
                    env={'PATH': recording_srun['PATH'], 'GPUS': '2', 'GPUS_PER_NODE': '2'})
    assert result.returncode == 0, result.stderr
    handed = recording_srun['record'].read_text()
    assert '--ntasks=2 --ntasks-per-node=2 --cpus-per-task=5' in handed


def test_without_srun_the_script_says_it_is_for_slurm(tmp_path):
    """It was 'line 35: srun: command not found'."""
    (tmp_path / 'c.py').write_text('')
    bin_dir = tmp_path / 'bin'  # bash and basename only, no srun
    bin_dir.mkdir()
    for tool in ('bash', 'basename', 'dirname'):
        (bin_dir / tool).symlink_to(subprocess.check_output(['which', tool], text=True).strip())
    result = launch('slurm_train.sh', 'part', 'job', str(tmp_path / 'c.py'), 'w',
                    env={'PATH': str(bin_dir)})
    assert (result.returncode, result.stderr) == (
        127, "slurm_train.sh: srun not found: it is SLURM's launcher and this script is for SLURM "
        "clusters; elsewhere run tools/dist_train.sh CONFIG GPUS\n")


def test_a_packaged_slurm_config_is_left_to_train_py(recording_srun):
    """fastmim::<path> is no file here; tools/train.py resolves it to the package's configs."""
    result = launch('slurm_train.sh', 'part', 'job', 'fastmim::fastmim/vit_b_hog_800e.py', 'w',
                    env={'PATH': recording_srun['PATH']})
    assert result.returncode == 0, result.stderr
    assert 'fastmim::fastmim/vit_b_hog_800e.py' in recording_srun['record'].read_text()


def test_the_launchers_use_the_python_status_and_variable_names():
    """tools/dist_launch.sh and tools/torchrun.py restate the preempted status and the names of
    the variables the training processes read (they load no fastmim module): a value changed
    on one side only would make a preempted job read as crashed, or leave the processes
    unwatched, without a test failing."""
    from fastmim.engine.hooks import PREEMPTED_EXIT_STATUS
    from fastmim.engine.launcher_lifecycle import LAUNCHER_PID_ENV, PREEMPTED_RECORD_ENV

    script = (TOOLS / 'dist_launch.sh').read_text()
    assert re.findall(r'^\s+status=(\d+)$', script, re.MULTILINE) == [str(PREEMPTED_EXIT_STATUS)]
    assert re.findall(r'^(\w+)="\$PREEMPTED_RECORD" \\$', script, re.MULTILINE) == [
        PREEMPTED_RECORD_ENV]
    torchrun = (TOOLS / 'torchrun.py').read_text()
    assert re.findall(r"^LAUNCHER_PID_ENV = '(\w+)'$", torchrun, re.MULTILINE) == [
        LAUNCHER_PID_ENV]
    assert re.findall(r'^PREEMPTED_EXIT_STATUS = (\d+)$', torchrun, re.MULTILINE) == [
        str(PREEMPTED_EXIT_STATUS)]


@pytest.mark.parametrize('config, line', [
    ('configs/fastmim/demo_vit.py', 'config file not found: configs/fastmim/demo_vit.py (did you '
     'mean configs/fastmim/demo_vit_tiny_embedded.py?)'),
    ('configs/fastmim', 'config configs/fastmim is a folder; expected a config file')])
def test_a_missing_config_is_named_with_the_close_configs(config, line):
    """The tools' own words (early_checks.py): dist_train.sh said only 'not found'."""
    result = launch('dist_train.sh', config, '1', cwd=TOOLS.parent)
    assert (result.returncode, result.stderr) == (2, f'dist_train.sh: {line}\n')


# tools/train.py's line for a weights-only --resume file, after 'error: CheckpointError: '.
WEIGHTS_ONLY = ("{} holds weights only, without the state of the run that wrote them (no meta, "
                'message_hub, optimizer): a published, converted or exported file. --resume '
                "continues a run from that state: resume from the run's latest checkpoint "
                '(epoch_*/iter_*.pth, or --resume alone), or start a new run from these weights '
                'with load_from / init_cfg, without --resume')


@pytest.fixture
def recording_python(tmp_path):
    """A stand-in for the venv's python that records what dist_launch.sh hands torchrun."""
    python = tmp_path / 'python'
    python.write_text('#!/bin/bash\n[ "$1" = -m ] && exit 0\n'
                      f'echo "$@" > {tmp_path / "torchrun"}\n')
    python.chmod(0o755)
    return dict(PYTHON=str(python), record=tmp_path / 'torchrun')


@pytest.mark.parametrize('as_given', [lambda path: ['--resume', path],
                                      lambda path: [f'--resume={path}']])
def test_a_weights_only_resume_is_refused_before_torchrun(recording_python, tmp_path, as_given):
    """Each of the GPUS processes imported everything, then refused it in the same line."""
    import torch
    weights = tmp_path / 'published.pth'
    torch.save({'w': torch.ones(1)}, weights)
    config = TOOLS.parent / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'
    result = launch('dist_train.sh', str(config), '2', *as_given(str(weights)),
                    env={'PYTHON': recording_python['PYTHON']})
    assert (result.returncode, result.stderr) == (
        2, f'dist_train.sh: {WEIGHTS_ONLY.format(weights)}\n')
    assert not recording_python['record'].exists()


def test_a_weights_only_resume_is_refused_before_srun(recording_srun, tmp_path):
    from safetensors.torch import save_file
    import torch
    weights = tmp_path / 'published.safetensors'
    save_file({'w': torch.ones(1)}, str(weights))
    result = launch('slurm_train.sh', 'part', 'job', recording_srun['config'], 'w',
                    '--resume', str(weights), env={'PATH': recording_srun['PATH']})
    assert (result.returncode, result.stderr) == (
        2, f'slurm_train.sh: {WEIGHTS_ONLY.format(weights)}\n')
    assert not recording_srun['record'].exists()


@pytest.mark.parametrize('resume', [[], ['--resume'], ['--resume', '{checkpoint}']])
def test_a_resumable_run_is_handed_to_torchrun(recording_python, tmp_path, resume):
    """A training checkpoint, --resume alone (the work dir's newest) or none: train.py's."""
    import torch
    checkpoint = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'meta': {'epoch': 1}, 'message_hub': {},
                'optimizer': {}}, checkpoint)
    config = TOOLS.parent / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'
    args = [arg.format(checkpoint=checkpoint) for arg in resume]
    result = launch('dist_train.sh', str(config), '2', *args,
                    env={'PYTHON': recording_python['PYTHON']})
    assert result.returncode == 0, result.stderr
    assert ' '.join([str(config), *args, '--launcher pytorch']) in (
        recording_python['record'].read_text())


def test_the_launchers_use_train_py_words_for_a_weights_only_resume(tmp_path, load_script,
                                                                     capsys):
    """The line is early_checks.py's, the one tools/train.py prints (test_early_checks.py)."""
    import torch
    early_checks = load_script(TOOLS / 'early_checks.py')
    weights = tmp_path / 'published.pth'
    torch.save({'w': torch.ones(1)}, weights)
    with pytest.raises(SystemExit):
        early_checks.refuse_resuming_weights_only(['c.py', '--resume', str(weights)])
    assert capsys.readouterr().err == (
        f'error: CheckpointError: {WEIGHTS_ONLY.format(weights)}\n')


@pytest.mark.parametrize('as_given', [lambda path: ['--cfg-options', f'load_from={path}'],
                                      lambda path: ['--cfg-options', 'randomness.seed=1',
                                                    f'load_from={path}']])
def test_a_missing_load_from_is_refused_before_torchrun(recording_python, tmp_path, as_given,
                                                        load_script, capsys):
    """Each of the GPUS processes imported everything, then refused it in the line train.py
    prints (early_checks.py's, compared here)."""
    missing = tmp_path / 'pretrained.pth'
    config = TOOLS.parent / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'
    result = launch('dist_train.sh', str(config), '2', *as_given(str(missing)),
                    env={'PYTHON': recording_python['PYTHON']})
    early_checks = load_script(TOOLS / 'early_checks.py')
    with pytest.raises(SystemExit):
        early_checks.refuse_a_missing_load_from([str(config), *as_given(str(missing))])
    train_line = capsys.readouterr().err.removeprefix('error: CheckpointError: ')
    assert train_line.startswith(f'load_from: checkpoint not found: {missing}')
    assert (result.returncode, result.stderr) == (2, f'dist_train.sh: {train_line}')
    assert not recording_python['record'].exists()


def test_a_missing_load_from_is_refused_before_srun(recording_srun, tmp_path):
    missing = tmp_path / 'pretrained.pth'
    result = launch('slurm_train.sh', 'part', 'job', recording_srun['config'], 'w',
                    '--cfg-options', f'load_from={missing}', env={'PATH': recording_srun['PATH']})
    assert (result.returncode, result.stderr) == (
        2, f'slurm_train.sh: load_from: checkpoint not found: {missing}\n')
    assert not recording_srun['record'].exists()
