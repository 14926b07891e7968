"""tools/analysis/train_speed.py: what a user who mistypes its inputs sees (its measurement runs
tools/train.py for minutes and is not repeated here)."""
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from fastmim.errors import LaunchError

TOOL = Path(__file__).resolve().parents[2] / 'tools' / 'analysis' / 'train_speed.py'


@pytest.fixture(scope='module')
def train_speed(load_script):
    return load_script(TOOL)


@pytest.fixture
def no_training(train_speed, monkeypatch):
    def run_tool(script, args):
        raise AssertionError(f'tools/{script} ran before the inputs were checked')
    monkeypatch.setattr(train_speed, 'run_tool', run_tool)


@pytest.mark.parametrize('options, error, message', [
    (['--out', '{tmp}/a_folder'], IsADirectoryError, r'--out .*a_folder is a folder'),
    (['--out', '{tmp}/a_file/r.json'], NotADirectoryError, r'--out .*a_file/r\.json: .*a_file is a '
     r'file'),
    (['--out', '{tmp}/r.json', '--config', '{tmp}/absent.py'], FileNotFoundError,
     r'config file not found: .*absent\.py'),
    # A config that is no valid Python ended in a traceback of '<unknown>', a text for a
    # number at the first batch in 'str' object cannot be interpreted as an integer.
    (['--out', '{tmp}/r.json', '--config', '{tmp}/a_folder/broken.py'], LaunchError,
     r'broken\.py, line 1: .* never closed'),
    (['--out', '{tmp}/r.json', '--cfg-options', 'train_dataloader.batch_size=abc'], LaunchError,
     r"train_dataloader\.batch_size=abc: .* has a number there \(512\); 'abc' is not one"),
    # A file given as the work dir ended in NotADirectoryError after the imports.
    (['--out', '{tmp}/r.json', '--work-dir', '{tmp}/a_file'], LaunchError,
     r'--work-dir .*a_file is not writable: .*a_file is a file, not a folder'),
    # The task sets an ImageFolder's data_root and data_prefix: on the demo's EmbeddedPhotos
    # the training run crashed inside mmengine.
    (['--out', '{tmp}/r.json', '--config', 'configs/fastmim/demo_vit_tiny_embedded.py'],
     LaunchError, r'demo_vit_tiny_embedded\.py: its train_dataloader\.dataset is '
     r'EmbeddedPhotos; the pretrain task trains on a folder of JPEG files it writes, which '
     r'needs an ImageFolder dataset \(data_root, data_prefix\)')])
def test_inputs_are_checked_before_training(tmp_path, train_speed, no_training, options, error,
                                            message):
    """The result used to be written only after the training run, and a missing config ended
    in mmengine's traceback."""
    (tmp_path / 'a_folder').mkdir()
    (tmp_path / 'a_folder' / 'broken.py').write_text('model = dict(\n')
    (tmp_path / 'a_file').write_text('')
    with pytest.raises(error, match=message):
        train_speed.main(['pretrain', *(option.format(tmp=tmp_path) for option in options)])
    assert sorted(path.name for path in tmp_path.iterdir()) == ['a_file', 'a_folder']


def test_a_failed_training_run_ends_in_one_line(train_speed, monkeypatch):
    """subprocess.run(check=True) added a CalledProcessError traceback under the tool's own
    one-line error."""
    class Failed:
        def __init__(self, *args, **kwargs):
            pass

        def wait(self):
            return 1
    monkeypatch.setattr(train_speed.subprocess, 'Popen', Failed)
    with pytest.raises(SystemExit, match=r'^error: tools/train\.py failed with exit status 1 '
                       r'\(its error is above\)$'):
        train_speed.run_tool('train.py', ['config.py'])


@pytest.mark.parametrize('earlier', ['data', 'train'])
def test_a_work_dir_with_an_earlier_run_is_refused_before_training(tmp_path, train_speed,
                                                                   no_training, earlier):
    """A second run in the same --work-dir ended in 'File exists' (pretrain's photos) or, after
    the whole training run, in a traceback: two runs' logs under train/."""
    (tmp_path / earlier).mkdir()
    with pytest.raises(FileExistsError, match=rf'--work-dir .* holds an earlier run '
                       rf'\({earlier}\); give a new or empty folder'):
        train_speed.main(['pretrain', '--out', str(tmp_path / 'r.json'),
                          '--work-dir', str(tmp_path)])


@pytest.mark.parametrize('flag, value', [('--iters', '0'), ('--images', '0'), ('--skip', '-2')])
def test_counts_that_cannot_be_meant_are_refused(train_speed, capsys, flag, value):
    """--images 0 was read as 'not given', --skip -2 took the median of the last two
    iterations, --iters 0 trained no iteration."""
    with pytest.raises(SystemExit):
        train_speed.parse_args(['pretrain', '--out', 'r.json', flag, value])
    assert f'argument {flag}: must be' in capsys.readouterr().err


def test_a_skip_that_leaves_nothing_to_time_is_refused(train_speed, capsys):
    """summarise fell back to timing every iteration, the warm-up included, without a word."""
    with pytest.raises(SystemExit):
        train_speed.parse_args(['pretrain', '--out', 'r.json', '--iters', '5', '--skip', '5'])
    assert '--skip 5 leaves none of the --iters 5 iterations to time' in capsys.readouterr().err


def test_a_config_beside_the_command_is_found(tmp_path, train_speed, monkeypatch):
    """--config my_config.py was looked up in the repository only: 'config file not found:
    <repository>/my_config.py' for a file in the current folder."""
    (tmp_path / 'my_config.py').write_text('x = 1\n')
    monkeypatch.chdir(tmp_path)
    assert train_speed.resolve_config('my_config.py') == str(tmp_path / 'my_config.py')
    assert train_speed.resolve_config(train_speed.CONFIGS['pretrain']) == str(
        train_speed.ROOT / train_speed.CONFIGS['pretrain'])


STOPS_SLOWLY = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    marker = Path(sys.argv[1])
    def stop(signum, frame):  # as tools/train.py: finish the iteration, save, exit 75
        time.sleep(1)
        marker.write_text('stopped')
        sys.exit(75)
    signal.signal(signal.SIGTERM, stop)
    marker.with_suffix('.ready').write_text('')
    time.sleep(120)
""")
RUN_TOOL = textwrap.dedent("""
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location('train_speed', sys.argv[1])
    train_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_speed)
    train_speed.run_tool(sys.argv[2], [sys.argv[3]])
""")


def test_a_sigterm_stops_the_training_tool_before_this_one_exits(tmp_path):
    """gpu_check.sh's time limit (or a kill) sent SIGTERM to train_speed.py, which died at once
    and left tools/train.py training on unseen, holding the GPU during the next step. The
    signal is passed on, and train_speed.py exits only once the tool has stopped."""
    tool, marker = tmp_path / 'slow_tool.py', tmp_path / 'stopped.txt'
    tool.write_text(STOPS_SLOWLY)
    driver = subprocess.Popen([sys.executable, '-c', RUN_TOOL, str(TOOL), str(tool), str(marker)],
                              cwd=TOOL.parents[2], start_new_session=True)
    children = []
    try:
        deadline = time.monotonic() + 60
        while not marker.with_suffix('.ready').exists():
            assert driver.poll() is None and time.monotonic() < deadline, 'the tool never started'
            time.sleep(0.1)
        children = psutil.Process(driver.pid).children()
        driver.send_signal(signal.SIGTERM)  # to train_speed.py alone, not its process group
        assert driver.wait(timeout=60) != 0
        assert marker.read_text() == 'stopped'  # the tool stopped on the signal, then we exited
    finally:
        driver.kill()
        for child in children:
            try:
                child.kill()  # the orphan a failure leaves
            except psutil.NoSuchProcess:
                pass


class ToolStarted(Exception):
    """Raised by the stand-in for run_tool: the test only looks at the command."""


def test_a_relative_work_dir_is_made_absolute_for_the_tools(tmp_path, train_speed, monkeypatch):
    """When tools/train.py ran in the repository (cwd=ROOT), a relative --work-dir given from
    elsewhere ended in 'folder wdrel/data (relative to <repo>) not found', and the folder it had
    made blocked the rerun ('holds an earlier run (data)'). The commands name it absolutely."""
    started = []

    def run_tool(script, args):
        started.append(args)
        raise ToolStarted
    monkeypatch.setattr(train_speed, 'run_tool', run_tool)
    monkeypatch.setattr(train_speed, 'pretrain_options',
                        lambda data_dir, images: ({'data_root': data_dir}, None, None))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ToolStarted):
        train_speed.main(['pretrain', '--out', 'r.json', '--work-dir', 'wdrel'])
    (args, ) = started
    assert args[args.index('--work-dir') + 1] == str(tmp_path / 'wdrel' / 'train')
    assert f'data_root={tmp_path / "wdrel" / "data"}' in args


READS_A_RELATIVE_PATH = textwrap.dedent("""
    import sys
    from pathlib import Path
    Path(sys.argv[1]).read_text()  # as tools/train.py opens a relative data_root or load_from
""")


def test_paths_in_the_tools_options_are_relative_to_the_callers_folder(tmp_path, train_speed,
                                                                        monkeypatch):
    """The tools ran in the repository (cwd=ROOT): from elsewhere, --cfg-options
    train_dataloader.dataset.data_root=mydata ended in 'folder mydata (relative to <repo>) not
    found' for a folder beside the command, or used the repository's folder of that name."""
    tool = tmp_path / 'reads_a_relative_path.py'
    tool.write_text(READS_A_RELATIVE_PATH)
    (tmp_path / 'beside_the_command.txt').write_text('')
    monkeypatch.chdir(tmp_path)
    train_speed.run_tool(str(tool), ['beside_the_command.txt'])  # no SystemExit: it was found


def test_the_timed_iterations_are_the_training_records(tmp_path, train_speed, capsys):
    """A validation record has a ``time`` too (its own per-batch seconds) and was timed as an
    iteration; a last line cut short by a killed run ended in a JSONDecodeError traceback."""
    vis_data = tmp_path / '20261206_100000' / 'vis_data'
    vis_data.mkdir(parents=True)
    training = [dict(iter=i, time=0.5, data_time=0.1, memory=100, step=i) for i in (1, 2)]
    validation = dict(mIoU=3.0, time=9.0, data_time=1.0, step=2)
    (vis_data / 'scalars.json').write_text(''.join(
        json.dumps(record) + '\n' for record in [*training, validation]) + '{"iter": 3, "ti')
    assert train_speed.logged_iterations(str(tmp_path)) == training


def fake_training(train_speed, monkeypatch, iterations=3):
    """run_tool trains nothing and the log holds ``iterations`` entries of 2 s."""
    monkeypatch.setattr(train_speed, 'run_tool', lambda script, args: None)
    monkeypatch.setattr(train_speed, 'pretrain_options',
                        lambda data_dir, images: ({}, None, None))
    monkeypatch.setattr(train_speed, 'logged_iterations', lambda work_dir: [
        dict(time=2.0, data_time=0.5)] * iterations)


def test_the_result_records_the_precision_the_run_used(tmp_path, train_speed, monkeypatch):
    """The pretrain recipe trains in mixed precision (GuardedAmpOptimWrapper: fp16 on CUDA,
    bf16 autocast on the CPU) without --amp, yet its result said "amp": false."""
    import torch
    fake_training(train_speed, monkeypatch)
    out = tmp_path / 'r.json'
    train_speed.main(['pretrain', '--out', str(out), '--iters', '3', '--skip', '1'])
    result = json.loads(out.read_text())
    mixed = 'float16 autocast' if torch.cuda.is_available() else 'bfloat16 autocast'
    assert (result['precision'], result['amp']) == (mixed, True)


@pytest.mark.parametrize('wrapper, amp, precision', [
    ('OptimWrapper', False, 'float32'),
    ('OptimWrapper', True, None),  # --amp: the machine's mixed precision
    ('AutocastOptimWrapper', False, 'bfloat16 autocast')])
def test_training_precision_follows_the_wrapper_and_the_flag(train_speed, wrapper, amp,
                                                             precision):
    import torch
    from fastmim.engine.config_loading import load_config
    cfg = load_config(str(train_speed.ROOT / train_speed.CONFIGS['pretrain']),
                      {'optim_wrapper.type': wrapper})
    expected = precision or ('float16 autocast' if torch.cuda.is_available()
                             else 'bfloat16 autocast')
    assert train_speed.training_precision(cfg, amp) == expected
    assert cfg.optim_wrapper.type == wrapper  # the config itself is left as it was


def test_the_result_is_replaced_atomically(tmp_path, train_speed, monkeypatch):
    """open(--out, 'w') emptied an earlier result before writing: a run killed there, or a
    value JSON cannot hold, left half a file. Now a temporary file beside it replaces it."""
    import os
    fake_training(train_speed, monkeypatch)
    replaced = []
    replace = os.replace
    monkeypatch.setattr(os, 'replace', lambda src, dst: (replaced.append((src, dst)),
                                                         replace(src, dst)))
    out = tmp_path / 'r.json'
    train_speed.main(['pretrain', '--out', str(out), '--iters', '3', '--skip', '1'])
    ((temporary, target), ) = replaced
    assert (Path(temporary).parent, target) == (tmp_path, str(out))
    assert json.loads(out.read_text())['images_per_s'] == 512 / 2.0


def test_the_result_goes_into_a_folder_not_made_yet(tmp_path, train_speed, monkeypatch):
    """--out work_dirs/speed/r.json in a fresh checkout was refused ('--out folder does not
    exist'), while the atomic write that stores it makes missing folders."""
    fake_training(train_speed, monkeypatch)
    out = tmp_path / 'work_dirs' / 'speed' / 'r.json'
    train_speed.main(['pretrain', '--out', str(out), '--iters', '3', '--skip', '1'])
    assert json.loads(out.read_text())['images_per_s'] == 512 / 2.0
