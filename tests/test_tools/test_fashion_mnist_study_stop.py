"""tools/experiments/run_fashion_mnist.py stopped and rerun: a pre-training stopped on the way
is resumed, not taken as finished, and a stopped study starts none of its queued runs.
(test_fashion_mnist_inputs.py checks that a stop ends the running commands.)"""
import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TOOLS = Path(__file__).resolve().parents[2] / 'tools' / 'experiments'


@pytest.fixture(scope='module')
def study(load_script):
    sys.path.insert(0, str(TOOLS))  # the dense runner imports the study by name, as it runs
    return load_script(TOOLS / 'run_fashion_mnist.py')


def save(path, epoch, iteration):
    """A checkpoint as the training saves it: weights and ``meta`` with its position."""
    torch.save(dict(meta=dict(epoch=epoch, iter=iteration),
                    state_dict=dict(weight=torch.zeros(2))), path)
    (path.parent / 'last_checkpoint').write_text(str(path))
    return path


def pretrain(study, work_dir, jobs):
    """The pre-training stage as the runners call it: on the pre-training found first."""
    return study.pretrain(study.find_pretraining(str(Path(work_dir) / 'pretrain')), jobs)


@pytest.fixture
def fake_training(study, monkeypatch):
    """``execute`` replaced: the pre-training command 'trains' to the end (``epoch_3.pth``, as
    tools/train.py names it) unless ``stops_at`` says where it stops; ``commands`` lists the
    commands run."""
    state = dict(commands=[], stops_at=None)

    def execute(command, log_path, threads):
        state['commands'].append(command)
        folder = Path(command[command.index('--work-dir') + 1])
        if state['stops_at']:
            save(folder / f'iter_{state["stops_at"]}.pth', 0, state['stops_at'])
        else:
            save(folder / 'epoch_3.pth', 3, 468)
        return 2.0

    monkeypatch.setattr(study, 'execute', execute)
    return state


def test_a_stopped_pretraining_is_resumed_not_reused(tmp_path, study, fake_training, capsys):
    """A study stopped during pre-training left iter_22.pth named in last_checkpoint (the
    training saves it on SIGTERM); the rerun said 'pre-training: reusing .../iter_22.pth' and
    trained every downstream run from those partial weights."""
    (tmp_path / 'pretrain').mkdir()
    partial = save(tmp_path / 'pretrain' / 'iter_22.pth', 0, 22)
    checkpoint, facts = pretrain(study, tmp_path, 1)
    assert len(fake_training['commands']) == 1
    assert fake_training['commands'][0][-1] == '--resume'
    assert checkpoint == study.latest_checkpoint(str(tmp_path / 'pretrain')) == str(
        tmp_path / 'pretrain' / 'epoch_3.pth')
    assert facts == dict(pretrain_seconds=2.0, pretrain_resumed_from=str(partial))
    out = capsys.readouterr().out
    assert f'{partial} is not of its end (epoch 0, iteration 22); resuming it' in out
    assert 'reusing' not in out

    # the rerun after that: the finished checkpoint is reused, nothing runs
    assert pretrain(study, tmp_path, 1) == (checkpoint, {})
    assert len(fake_training['commands']) == 1
    assert f'pre-training: reusing {tmp_path}/pretrain/epoch_3.pth' in capsys.readouterr().out


@pytest.fixture
def loaded(monkeypatch):
    """The names of the checkpoints loaded whole (fastmim's ``load_from_local``), in order."""
    from fastmim.engine import checkpoint
    names = []

    def load_from_local(path, map_location=None):
        names.append(Path(path).name)
        return torch.load(path, map_location=map_location)
    monkeypatch.setattr(checkpoint, 'load_from_local', load_from_local)
    return names


def test_each_checkpoint_is_loaded_once(tmp_path, study, fake_training, loaded, monkeypatch):
    """The study asks of the pre-training whether it finished (to hold finished runs to it),
    where it stopped, and after it what the runs start from: each asking loaded the whole
    checkpoint again. It finds the pre-training once and hands it on."""
    import fastmim.datasets
    monkeypatch.setattr(fastmim.datasets, 'fetch_fashion_mnist', lambda: str(tmp_path))
    monkeypatch.setattr(study, 'stop_commands_on_signals', lambda: None)
    monkeypatch.setattr(study, 'save_initial_weights', lambda path: path)
    started_from = []
    monkeypatch.setattr(study, 'downstream', lambda runs, checkpoints, jobs: started_from.append(
        checkpoints['pretrained']))
    (tmp_path / 'pretrain').mkdir()
    save(tmp_path / 'pretrain' / 'iter_22.pth', 0, 22)
    study.main(['--work-dir', str(tmp_path), '--seeds', '0', '--fractions', '0.01', '--jobs',
                '1', '--no-doc'])
    assert loaded == ['iter_22.pth', 'epoch_3.pth']
    assert started_from == [str(tmp_path / 'pretrain' / 'epoch_3.pth')]


def test_a_stopped_pretraining_is_resumed_only_with_its_jobs(tmp_path, study, fake_training):
    """A study stopped during pre-training and rerun with another --jobs resumed it with
    another number of processes and per-process batch: not the run it had started. A finished
    one is reused under any --jobs (the runs record its weights' sha256)."""
    folder = tmp_path / 'pretrain'
    fake_training['stops_at'] = 22
    with pytest.raises(SystemExit, match='ended without the checkpoint of its end'):
        pretrain(study, tmp_path, 2)
    fake_training['stops_at'] = None
    other = (rf'error: {folder} was stopped with other settings than this command \(--jobs 4 '
             r'now, 2 then; options: train_dataloader\.batch_size=32 now; '
             r'train_dataloader\.batch_size=64 then\); rerun with --jobs 2 to resume it, or '
             rf'delete {folder} to start it over$')
    with pytest.raises(SystemExit, match=other):
        pretrain(study, tmp_path, 4)
    # a runner that recorded nothing: the command on the first line of its run.log
    (folder / study.SETTINGS_FILE).unlink()
    (folder / 'run.log').write_text(' '.join(fake_training['commands'][0]) + '\n\n')
    with pytest.raises(SystemExit, match=r'\(options: .*=32 now; .*=64 then\); rerun with the '
                       r'--jobs it was started with to resume it'):
        pretrain(study, tmp_path, 4)
    assert len(fake_training['commands']) == 1

    checkpoint, facts = pretrain(study, tmp_path, 2)
    assert facts['pretrain_resumed_from'] == str(folder / 'iter_22.pth')
    assert pretrain(study, tmp_path, 4) == (checkpoint, {})


def test_a_first_pretraining_runs_with_resume(tmp_path, study, fake_training):
    """--resume with no checkpoint yet starts from scratch (tools/train.py), so one command
    serves a first run and a resumed one."""
    assert pretrain(study, tmp_path, 2)[1] == dict(pretrain_seconds=2.0)
    command, = fake_training['commands']
    assert command[-1] == '--resume' and 'train_dataloader.batch_size=64' in command


def test_an_unreadable_checkpoint_is_not_taken_as_finished(tmp_path, study, fake_training):
    (tmp_path / 'pretrain').mkdir()
    (tmp_path / 'pretrain' / 'epoch_3.pth').write_bytes(b'cut off')
    (tmp_path / 'pretrain' / 'last_checkpoint').write_text(
        str(tmp_path / 'pretrain' / 'epoch_3.pth'))
    pretrain(study, tmp_path, 1)
    assert len(fake_training['commands']) == 1  # tools/train.py --resume names the problem


def test_a_pretraining_that_ends_short_is_refused(tmp_path, study, fake_training):
    """What pretrain leaves in last_checkpoint is what every downstream run starts from."""
    fake_training['stops_at'] = 40
    with pytest.raises(SystemExit, match=r'the pre-training ended without the checkpoint of '
                       r'its end \(.*pretrain/last_checkpoint names .*iter_40\.pth\)'):
        pretrain(study, tmp_path, 1)


def test_resuming_needs_jobs_that_divide_the_batch(tmp_path, study, fake_training):
    """A resumed pre-training needs --jobs that divide its batch, whoever calls pretrain()."""
    (tmp_path / 'pretrain').mkdir()
    save(tmp_path / 'pretrain' / 'iter_22.pth', 0, 22)
    with pytest.raises(SystemExit, match=r'--jobs must divide the pre-training batch 128'):
        pretrain(study, tmp_path, 3)
    assert not fake_training['commands']


def test_the_dense_runner_records_the_finished_checkpoint(tmp_path, load_script, monkeypatch,
                                                          loaded):
    """The dense runner recorded the sha256 of the partial checkpoint it trained from. It
    loads each checkpoint once (it asked whether the pre-training finished before the
    pre-training stage asked again)."""
    runner = load_script(TOOLS / 'run_fashion_mnist_dense.py')
    import fastmim.datasets
    from fastmim.datasets import fashion_mnist_canvas
    from fastmim.fileio import file_sha256
    monkeypatch.setattr(fastmim.datasets, 'fetch_fashion_mnist', lambda: str(tmp_path))
    monkeypatch.setattr(runner.study, 'stop_commands_on_signals', lambda: None)

    def write_canvases(root, num_train, num_test, seed=0, data_root=None):
        return dict(settings=dict(num_train=num_train, num_test=num_test, seed=seed),
                    counts=dict(train=dict(canvases=num_train, items=3 * num_train),
                                test=dict(canvases=num_test, items=3 * num_test)))

    commands = []

    def execute(command, log_path, threads):
        commands.append(command)
        folder = Path(command[command.index('--work-dir') + 1])
        if any(part.endswith('fashion_mnist_pretrain.py') for part in command):
            save(folder / 'epoch_3.pth', 3, 468)
            return 2.0
        vis_data = folder / '20260101_000000' / 'vis_data'
        vis_data.mkdir(parents=True)
        (vis_data / 'scalars.json').write_text(json.dumps(dict(mIoU=50.0)))
        return 1.0

    monkeypatch.setattr(fashion_mnist_canvas, 'write_canvas_segmentation', write_canvases)
    monkeypatch.setattr(runner.study, 'execute', execute)
    work_dir = tmp_path / 'study'
    (work_dir / 'pretrain').mkdir(parents=True)
    save(work_dir / 'pretrain' / 'iter_22.pth', 0, 22)
    runner.main(['--work-dir', str(work_dir), '--seeds', '0', '--jobs', '1', '--docs',
                 '--train-canvases', '4', '--test-canvases', '2'])
    final = work_dir / 'pretrain' / 'epoch_3.pth'
    assert commands[0][-1] == '--resume' and len(commands) == 3
    assert loaded == ['iter_22.pth', 'epoch_3.pth']
    record = json.loads((work_dir / 'upernet' / 'pretrained' / 'seed0' /
                         runner.SETTINGS_FILE).read_text())
    assert record['checkpoint_sha256'] == file_sha256(str(final))
    assert any(str(final) in part for part in record['command'])


HARNESS = '''
import sys
sys.path.insert(0, {tools!r})
import run_fashion_mnist as study
study.stop_commands_on_signals()
child = {child!r}
runs = [study.Run(study.METHODS[0], 0.01, seed, {work_dir!r} + f'/run{{seed}}',
                  command=[sys.executable, '-c', child.format(seed=seed)]) for seed in range(3)]
study.report_stops(lambda: study.run_pending(3, runs, 1, finish=lambda run: None,
                                             describe=lambda run: 'done'))
'''
CHILD = '''
import time
open({started!r} + '/started{{seed}}', 'w').close()
time.sleep(3)
'''


def test_a_stopped_study_starts_none_of_its_queued_runs(tmp_path):
    """On SIGTERM the study stopped the running command, then waited for its thread pool,
    which started every queued run, one after another, stopped by nothing."""
    started = tmp_path / 'started'
    started.mkdir()
    harness = HARNESS.format(tools=str(TOOLS), work_dir=str(tmp_path / 'runs'),
                             child=CHILD.format(started=str(started)))
    process = subprocess.Popen([sys.executable, '-c', harness], stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        deadline = time.time() + 60
        while not (started / 'started0').exists() and time.time() < deadline:
            time.sleep(0.05)
        assert (started / 'started0').exists()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert 'error: stopped by SIGTERM' in stderr
        assert process.returncode == 75
        assert sorted(path.name for path in started.iterdir()) == ['started0']
        assert sorted(path.name for path in (tmp_path / 'runs').iterdir()) == ['run0']
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# A training run as PreemptionHook makes it: on SIGTERM it takes a moment to save, then exits 75.
SAVING_CHILD = '''
import os, signal, sys, time
def save(signum, frame):
    time.sleep(0.5)
    open({folder!r} + '/saved', 'w').close()
    sys.exit(75)
signal.signal(signal.SIGTERM, save)
open({folder!r} + '/started', 'w').write(str(os.getpid()))
time.sleep(60)
'''
# The pre-training: one command, run in the study's main thread.
PRETRAINING_HARNESS = '''
import sys
sys.path.insert(0, {tools!r})
import run_fashion_mnist as study
study.stop_commands_on_signals()
study.report_stops(lambda: study.execute([sys.executable, '-c', {child!r}],
                                         {folder!r} + '/run.log', threads=1))
'''


def test_sigusr1_stops_the_study_once_its_commands_saved(tmp_path):
    """SLURM's --signal=USR1@120 killed the runner on the spot, without a word, and its
    running commands trained on unwatched. On SIGTERM the runner left at once while the
    pre-training was saving: under SLURM the job's processes die with it, cutting the save
    short. (The runs of the thread pool were waited for; a stop starts none of the queued
    ones: test_a_stopped_study_starts_none_of_its_queued_runs.)"""
    folder = tmp_path / 'runs'
    folder.mkdir()
    code = PRETRAINING_HARNESS.format(tools=str(TOOLS), folder=str(folder),
                                      child=SAVING_CHILD.format(folder=str(folder)))
    process = subprocess.Popen([sys.executable, '-c', code], stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    child = None
    try:
        deadline = time.time() + 60
        started = folder / 'started'
        while not (started.exists() and started.read_text()) and time.time() < deadline:
            time.sleep(0.05)
        child = int(started.read_text())
        process.send_signal(signal.SIGUSR1)
        _, stderr = process.communicate(timeout=30)
        assert 'error: stopped by SIGUSR1; the running commands were stopped too; rerun the ' \
            'same command to go on where the study stopped' in stderr
        assert process.returncode == 75
        assert (folder / 'saved').exists()
    finally:
        for group in (process.pid, child):
            if group is not None:
                try:
                    os.killpg(group, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        process.wait()


def test_the_preempted_status_is_the_preemption_hooks(tmp_path, study, monkeypatch):
    """The runner restated PreemptionHook's exit status 75 instead of importing it."""
    from fastmim.engine.hooks import preemption_hook
    monkeypatch.setattr(preemption_hook, 'PREEMPTED_EXIT_STATUS', 76)
    with pytest.raises(study.Stopped, match=r'^preempted \(exit code 76\)'):
        study.execute([sys.executable, '-c', 'raise SystemExit(76)'], str(tmp_path / 'log'), 1)


def test_a_copied_pretraining_is_taken_from_the_copy(tmp_path, study, fake_training, capsys):
    """last_checkpoint holds an absolute path: in a copied work dir (or a pre-training copied
    into another one, as docs/experiments.md suggests) the study said 'pre-training: reusing
    <the original's epoch_3.pth>' and trained every run from the other folder's file; a copied
    stopped pre-training was 'resumed' from the original's iter_N.pth. tools/train.py takes
    the file of that name in the work dir (fastmim.engine.last_checkpoint.latest_checkpoint)."""
    import shutil
    original = tmp_path / 'original' / 'pretrain'
    original.mkdir(parents=True)
    save(original / 'epoch_3.pth', 3, 468)
    shutil.copytree(original, tmp_path / 'copy' / 'pretrain')
    copy = tmp_path / 'copy' / 'pretrain'
    assert pretrain(study, tmp_path / 'copy', 1) == (str(copy / 'epoch_3.pth'), {})
    assert f'pre-training: reusing {copy}/epoch_3.pth\n' in capsys.readouterr().out
    assert study.latest_checkpoint(str(copy)) == str(copy / 'epoch_3.pth')
    assert not fake_training['commands']

    # a stopped one, copied: the copy's iter_22.pth is resumed in the copy
    save(original / 'iter_22.pth', 0, 22)
    shutil.rmtree(copy)
    shutil.copytree(original, copy)
    (copy / 'epoch_3.pth').unlink()
    (original / 'epoch_3.pth').unlink()
    checkpoint, facts = pretrain(study, tmp_path / 'copy', 1)
    assert checkpoint == str(copy / 'epoch_3.pth')
    assert facts['pretrain_resumed_from'] == str(copy / 'iter_22.pth')
    assert f'pre-training: {copy}/iter_22.pth is not of its end' in capsys.readouterr().out
    assert study.latest_checkpoint(str(copy)) == str(copy / 'epoch_3.pth')
    assert not (original / 'epoch_3.pth').exists()


def test_no_last_checkpoint_names_none_and_an_empty_one_is_refused(tmp_path, study, capsys):
    assert study.latest_checkpoint(str(tmp_path)) is None
    assert 'Did not find last_checkpoint' not in capsys.readouterr().out
    (tmp_path / 'last_checkpoint').write_text('')
    with pytest.raises(SystemExit, match=r'error: .*last_checkpoint is empty'):
        study.latest_checkpoint(str(tmp_path))


# tools/train.py and tools/test.py as the downstream runs see them: a training run given
# --resume starts from the iteration its last_checkpoint names (the file holds the number),
# else from 0, and appends where it started to STARTS; below FAKE_STOP_AT it saves
# iter_<FAKE_STOP_AT>.pth and exits 75, as PreemptionHook does on SIGTERM. kNN writes --out.
FAKE_TOOL = '''
import json, os, sys
args = sys.argv[1:]
work_dir = args[args.index('--work-dir') + 1]
os.makedirs(work_dir, exist_ok=True)
if '--out' in args:
    with open(args[args.index('--out') + 1], 'w') as f:
        json.dump({'knn/top1': 50.0}, f)
    sys.exit(0)
named = os.path.join(work_dir, 'last_checkpoint')
start = 0
if '--resume' in args and os.path.isfile(named):
    with open(named) as f, open(f.read().strip()) as checkpoint:
        start = int(checkpoint.read())
with open(os.path.join(work_dir, 'STARTS'), 'a') as f:
    f.write(f'{start}\\n')
stop_at = int(os.environ.get('FAKE_STOP_AT', '0'))
if start < stop_at:
    path = os.path.join(work_dir, f'iter_{stop_at}.pth')
    with open(path, 'w') as f:
        f.write(str(stop_at))
    with open(named, 'w') as f:
        f.write(path)
    sys.exit(75)
vis_data = os.path.join(work_dir, '20260101_000000', 'vis_data')
os.makedirs(vis_data)
with open(os.path.join(vis_data, 'scalars.json'), 'w') as f:
    f.write(json.dumps({'accuracy/top1': 60.0 + start}) + '\\n')
'''


@pytest.fixture
def fake_tools(tmp_path, study, monkeypatch):
    """The runs' commands run (study.execute, a process each) a fake of tools/train.py and
    tools/test.py (FAKE_TOOL); returns the runs of a fine-tuning and a kNN, seed 0, 1%."""
    tool = tmp_path / 'fake_tool.py'
    tool.write_text(FAKE_TOOL)
    monkeypatch.setattr(study, 'python_tool', lambda name: [sys.executable, str(tool)])
    monkeypatch.delenv('FAKE_STOP_AT', raising=False)

    def runs():
        return [study.Run(method, 0.01, 0, str(tmp_path / study.method_folder(method) / 'run'))
                for method in (study.METHODS[0], study.METHODS[4])]
    return runs


CHECKPOINTS = dict(pretrained='/nowhere/epoch_3.pth', random='/nowhere/initial_weights.pth')


def test_a_stopped_downstream_run_is_resumed_not_retrained(tmp_path, study, fake_tools,
                                                            monkeypatch, capsys):
    """A fine-tuning stopped by SIGTERM saved iter_100.pth and exited 75; the rerun started
    it again from iteration 0 (no --resume), losing the training done."""
    monkeypatch.setenv('FAKE_STOP_AT', '100')
    with pytest.raises(SystemExit):
        study.downstream(fake_tools(), CHECKPOINTS, 1)
    monkeypatch.delenv('FAKE_STOP_AT')
    finetune, knn = fake_tools()
    study.downstream([finetune, knn], CHECKPOINTS, 1)
    assert (Path(finetune.work_dir) / 'STARTS').read_text().split() == ['0', '100']
    assert finetune.top1 == 160.0 and knn.top1 == 50.0
    assert finetune.command[-1] == '--resume' and '--resume' not in knn.command
    assert '1 of 2 runs already done; running 1' in capsys.readouterr().out


def test_a_preempted_run_is_reported_as_stopped_not_failed(tmp_path, study, fake_tools,
                                                            monkeypatch, capsys):
    """Exit status 75 (PreemptionHook saved the run) was reported as 'FAILED: exit code 75'
    with the log's tail, and the study ended with '1 runs failed'."""
    monkeypatch.setenv('FAKE_STOP_AT', '100')
    with pytest.raises(SystemExit, match=r'^error: 1 runs were stopped \(a rerun resumes those '
                       r'that saved a checkpoint\); rerun the command to go on with them$') as stop:
        study.downstream(fake_tools(), CHECKPOINTS, 1)
    assert stop.value.code == 75  # it read 1, which a requeue script takes for a failure
    out = capsys.readouterr().out
    assert 'FAILED' not in out
    assert re.search(r'FastMIM pre-trained, fine-tuned, 1% labels, seed 0 stopped: preempted '
                     r'\(exit code 75\): it saved its checkpoint, which a rerun resumes; log '
                     r'.*/run\.log', out)


def test_a_run_failing_while_the_study_stops_is_not_reported_as_failed(tmp_path, study,
                                                                         monkeypatch, capsys):
    """A command that the stop ended (killed: exit -15) is stopped, not failed."""
    def execute(command, log_path, threads):
        study.STOPPING.set()
        raise RuntimeError(f'exit code -15; log {log_path}')
    monkeypatch.setattr(study, 'execute', execute)
    run = study.Run(study.METHODS[0], 0.01, 0, str(tmp_path / 'run'), command=['train'])
    try:
        with pytest.raises(SystemExit, match=r'^error: 1 runs were stopped'):
            study.run_pending(1, [run], 1, finish=lambda run: None, describe=str)
    finally:
        study.STOPPING.clear()
    assert 'FAILED' not in capsys.readouterr().out


def test_a_preempted_or_failed_pretraining_ends_the_study_in_its_line(tmp_path, study,
                                                                    monkeypatch):
    """The runner's own traceback came before the stop's message. A preempted one ends the
    study with PreemptionHook's status, a failed one with 1 (the message as SystemExit's
    code)."""
    for error, line, status in [
            (study.Stopped('preempted (exit code 75): it saved its checkpoint, which a rerun '
                           'resumes; log L'), 'error: pre-training preempted (exit code 75)', 75),
            (RuntimeError('exit code 1; log L:\nValueError: bad'),
             'error: pre-training exit code 1; log L:\nValueError: bad', None)]:
        def execute(command, log_path, threads, error=error):
            raise error
        monkeypatch.setattr(study, 'execute', execute)
        with pytest.raises(SystemExit) as stop:
            pretrain(study, tmp_path, 1)
        assert str(stop.value).startswith(line)
        assert stop.value.code == (status or str(stop.value))


def test_each_run_gets_a_rendezvous_of_its_own(tmp_path, study, monkeypatch):
    """A port probed by the study and passed on as PORT could be taken by another of the
    --jobs runs before torchrun bound it; a PORT or NNODES of the study's own environment
    (a cluster job script) would have joined every run to one rendezvous. Runs see none of
    them, so dist_train.sh starts each as a one-node job with a port torchrun picks."""
    for name in study.RENDEZVOUS_VARIABLES:
        monkeypatch.setenv(name, '2')
    seen = tmp_path / 'env.json'
    child = f'import json, os; json.dump(dict(os.environ), open({str(seen)!r}, "w"))'
    study.execute([sys.executable, '-c', child], str(tmp_path / 'log'), 1)
    env = json.loads(seen.read_text())
    assert not {'PORT', 'MASTER_PORT', 'MASTER_ADDR', 'NNODES', 'NODE_RANK'} & set(env)
    assert env['OMP_NUM_THREADS'] == '1'
