"""tools/early_checks.py: the tools refuse a mistyped config, and tools/train.py a weights-only
file given to --resume, before they import fastmim, mmengine and torch (the imports take seconds
before the line; the full check of --resume's file runs once the Runner is built, its log
folder written)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastmim.checkpoint_files import holds_weights_only

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ('torch', 'mmengine', 'fastmim', 'numpy', 'timm')
MISTYPED = 'configs/fastmim/vit_b_hog_80e.py'
CLOSE = '(did you mean configs/fastmim/vit_b_hog_800e.py or configs/fastmim/pvtv2_b2_hog_800e.py?)'
NOT_FOUND = f'error: LaunchError: config file not found: {MISTYPED} {CLOSE}'
# How get_model (visualize_reconstruction.py) and train_speed.py's own check report it.
FILE_NOT_FOUND = f'error: FileNotFoundError: config file not found: {MISTYPED} {CLOSE}'
# train_speed.py looks a --config up in the repository too (its resolve_config).
NOT_FOUND_IN_REPOSITORY = (f'error: FileNotFoundError: {MISTYPED}: config file not found: '
                           f'{ROOT / MISTYPED} {CLOSE}')
# A mistyped config, for each tool that takes one: (tool, arguments, the line of its refusal).
MISTYPED_CONFIGS = [
    ('train.py', [MISTYPED, '--work-dir', 'w'], NOT_FOUND),
    ('test.py', [MISTYPED, 'absent.pth'], NOT_FOUND),
    ('misc/print_config.py', [MISTYPED], NOT_FOUND),
    ('analysis/get_flops.py', [MISTYPED], NOT_FOUND),
    ('visualize/visualize_reconstruction.py',
     [MISTYPED, 'absent.pth', '--embedded', '1', '--out-dir', 'out'], FILE_NOT_FOUND),
    ('analysis/soak_memory.py', [MISTYPED, '--iters', '4', '--every', '2'], NOT_FOUND),
    ('analysis/train_speed.py', ['pretrain', '--out', 'r.json', '--config', MISTYPED],
     NOT_FOUND_IN_REPOSITORY),
    ('analysis/project_wallclock.py', ['--rate', 'fastmim', '100', 'here', '--config', MISTYPED],
     NOT_FOUND),
    ('benchmarks/downstream.py', ['absent.pth', '1', '--det-config', MISTYPED], NOT_FOUND),
]


@pytest.fixture(scope='module')
def early_checks(load_script):
    return load_script(ROOT / 'tools' / 'early_checks.py')


def run_tool(tool, args, *python_flags, cwd=ROOT):
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    env.pop('FASTMIM_DEBUG', None)
    return subprocess.run([sys.executable, *python_flags, str(ROOT / 'tools' / tool), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def imported_modules(importtime_report):
    """The modules ``python -X importtime`` reports (``import time: self | total | name``)."""
    return [line.rpartition('|')[2].strip() for line in importtime_report.splitlines()
            if line.startswith('import time:') and '|' in line]


@pytest.mark.parametrize('tool, args, line', MISTYPED_CONFIGS)
def test_a_mistyped_config_is_refused_before_any_heavy_import(tool, args, line):
    result = run_tool(tool, args, '-X', 'importtime')

    assert result.returncode == 1
    printed = result.stderr.splitlines()
    assert [text for text in printed if not text.startswith('import time:')] == [line]
    imported = imported_modules(result.stderr)
    assert imported and not [name for name in imported if name.partition('.')[0] in HEAVY]


def test_a_checkpoint_given_as_the_config_is_named_before_the_imports(tmp_path):
    checkpoint = tmp_path / 'epoch_1.pth'
    checkpoint.write_bytes(b'')
    result = run_tool('test.py', [str(checkpoint), 'configs/knn/vit_b_knn.py'])
    assert result.returncode == 1
    assert result.stderr == (f'error: LaunchError: config file {checkpoint} is not a '
                             '.py/.json/.yaml/.yml file (a checkpoint given as the config? The '
                             'config comes first)\n')


def test_the_early_line_is_the_line_of_the_check_after_the_imports():
    """With an option first, the config is left to the tool's parser and load_config: the
    same mistake must read the same either way."""
    result = run_tool('train.py', ['--work-dir', 'w', MISTYPED])
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == NOT_FOUND


@pytest.mark.parametrize('argv, config', [
    (['a.py', '--work-dir', 'w'], 'a.py'),
    (['a.py', 'ckpt.pth', '--cfg-options', 'x=1'], 'a.py'),
    (['--work-dir', 'w', 'a.py'], None),  # which argument is the config: the parser's to say
    (['fastmim::fastmim/vit_b_hog_800e.py'], None),  # located through mmengine
    (['a.py', '--help'], None),  # the help wins over a wrong config, as argparse prints it
    (['a.py', '-h'], None),
    (['a.py', '--debug'], None),  # the full check's traceback
    (['a.py', '--launcher', 'pytorch'], None),  # every process would print the line
    (['a.py', '--launcher=slurm'], None),
    (['a.py', '--local-rank=1'], None),
    ([], None),
])
def test_the_config_is_taken_only_where_argparse_would_take_it(early_checks, argv, config,
                                                               monkeypatch):
    monkeypatch.delenv('FASTMIM_DEBUG', raising=False)
    assert early_checks.config_of(argv) == config


def test_fastmim_debug_leaves_the_config_to_the_full_check(early_checks, monkeypatch):
    monkeypatch.setenv('FASTMIM_DEBUG', '1')
    assert early_checks.config_of(['a.py']) is None


def test_an_existing_config_passes(early_checks):
    early_checks.refuse_a_missing_config([str(ROOT / 'configs' / 'knn' / 'vit_b_knn.py')])


# Each tool with a mistyped config, as run_cli runs its main in-process after the imports: the
# tool's own check, whose line the early one must be. {tmp}: the test's folder.
OWN_CHECKS = [
    ('visualize/visualize_reconstruction.py',
     [MISTYPED, 'absent.pth', '--embedded', '1', '--out-dir', '{tmp}/out']),
    ('analysis/soak_memory.py', [MISTYPED, '--iters', '4', '--every', '2']),
    ('analysis/train_speed.py', ['pretrain', '--out', '{tmp}/r.json', '--config', MISTYPED]),
    ('analysis/project_wallclock.py', ['--rate', 'fastmim', '100', 'here', '--config', MISTYPED]),
    # The checkpoint is read before the configs: weights under --backbone.
    ('benchmarks/downstream.py', ['{tmp}/pretrain.pth', '1', '--backbone', 'VisionTransformer',
                                  '--work-dir', '{tmp}/work', '--det-config', MISTYPED]),
]


@pytest.mark.parametrize('tool, args', OWN_CHECKS)
def test_the_early_line_is_the_line_of_the_tools_own_check(tool, args, tmp_path, load_script,
                                                           capsys, monkeypatch):
    from fastmim.cli import run_cli
    torch.save({'blocks.0.norm1.weight': torch.ones(2)}, tmp_path / 'pretrain.pth')
    args = [arg.format(tmp=tmp_path) for arg in args]
    early = run_tool(tool, args)
    monkeypatch.chdir(ROOT)
    module = load_script(ROOT / 'tools' / tool)
    with pytest.raises(SystemExit) as stop:
        run_cli(module.main, args)
    assert early.returncode == stop.value.code == 1
    assert early.stderr.splitlines() == capsys.readouterr().err.splitlines()[-1:]


DEMO = 'configs/fastmim/demo_vit_tiny_embedded.py'
WEIGHTS = {'backbone.patch_embed.projection.weight': torch.zeros(32, 3, 16, 16),
           'backbone.layers.0.ln1.weight': torch.ones(32)}


def save_torch(weights, path):
    torch.save(weights, path)


def save_safetensors(weights, path):
    from safetensors.torch import save_file
    save_file(weights, str(path))


@pytest.mark.parametrize('name, save, as_given', [
    ('published.pth', save_torch, lambda path: ['--resume', path]),
    ('published.pth', save_torch, lambda path: [f'--resume={path}']),
    ('published.safetensors', save_safetensors, lambda path: ['--resume', path]),
    # mmengine's layout without the run: weights under state_dict, nothing beside them
    ('exported.pth', lambda weights, path: save_torch({'state_dict': weights}, path),
     lambda path: ['--resume', path])])
def test_a_weights_only_file_given_to_resume_is_refused_before_any_heavy_import(
        tmp_path, name, save, as_given):
    weights = tmp_path / name
    save(WEIGHTS, weights)
    work_dir = tmp_path / 'work'
    result = run_tool('train.py', [DEMO, '--work-dir', str(work_dir), *as_given(str(weights))],
                      '-X', 'importtime')

    assert result.returncode == 1
    printed = [text for text in result.stderr.splitlines() if not text.startswith('import time:')]
    assert printed == [
        f'error: CheckpointError: {weights} holds weights only, without the state of the run '
        'that wrote them (no meta, message_hub, optimizer): a published, converted or exported '
        "file. --resume continues a run from that state: resume from the run's latest "
        'checkpoint (epoch_*/iter_*.pth, or --resume alone), or start a new run from these '
        'weights with load_from / init_cfg, without --resume']
    imported = imported_modules(result.stderr)
    assert imported and not [name for name in imported if name.partition('.')[0] in HEAVY]
    assert not work_dir.exists()


@pytest.mark.parametrize('name, write', [
    # The run's state beside the weights, if only part of it (a best_* checkpoint): the full
    # check, once the Runner is built, names what it lacks.
    ('best.pth', lambda path: torch.save({'state_dict': WEIGHTS, 'meta': {'epoch': 1}}, path)),
    ('legacy.pth', lambda path: torch.save(WEIGHTS, path, _use_new_zipfile_serialization=False)),
    ('notes.pth', lambda path: path.write_text('weights\n')),
    ('last_checkpoint', lambda path: path.write_text('/somewhere/epoch_1.pth')),
    ('absent.pth', lambda path: None)])
def test_what_is_not_plainly_weights_only_is_left_to_the_full_checks(early_checks, tmp_path,
                                                                     name, write):
    path = tmp_path / name
    write(path)
    assert not holds_weights_only(str(path))
    early_checks.refuse_resuming_weights_only(['c.py', '--resume', str(path)])


def test_a_weights_only_file_is_left_to_the_full_check_under_a_launcher(early_checks, tmp_path):
    """Every process of the job would print the line; run_cli lets the node's first say it."""
    torch.save(WEIGHTS, tmp_path / 'published.pth')
    assert holds_weights_only(str(tmp_path / 'published.pth'))
    early_checks.refuse_resuming_weights_only(
        ['c.py', '--resume', str(tmp_path / 'published.pth'), '--launcher', 'pytorch'])


def test_a_checkpoint_of_a_run_still_resumes(tmp_path, tiny_demo):
    # The shrunk demo (8 photos, batch 2: 4 iterations an epoch), a checkpoint every epoch.
    tiny = [*tiny_demo.options, 'default_hooks.checkpoint.interval=1']
    work_dir = tmp_path / 'work'
    first = run_tool('train.py', [DEMO, '--work-dir', str(work_dir), '--cfg-options',
                                  'train_cfg.max_epochs=1', *tiny])
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = run_tool('train.py', [DEMO, '--work-dir', str(work_dir), '--resume',
                                    str(work_dir / 'epoch_1.pth'), '--cfg-options',
                                    'train_cfg.max_epochs=2', *tiny])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resumed epoch: 1, iter: 4' in resumed.stdout + resumed.stderr
    assert torch.load(work_dir / 'epoch_2.pth', weights_only=True)['meta']['iter'] == 8


# Each tool that reads a checkpoint given as a positional: (tool, arguments with {ckpt}).
CHECKPOINT_READERS = [
    ('test.py', ['configs/knn/vit_b_knn.py', '{ckpt}']),
    ('convert/to_timm.py', ['{ckpt}', '{tmp}/out.pth']),
    ('convert/publish.py', ['{ckpt}', '{tmp}/out.pth']),
    ('convert/from_reference.py', ['{ckpt}', '{tmp}/out.pth', '--backbone', 'VisionTransformer']),
    ('convert/from_timm.py', ['{ckpt}', '{tmp}/out.pth', '--model-name', 'resnet18']),
    ('visualize/visualize_reconstruction.py',
     [DEMO, '{ckpt}', '--embedded', '1', '--out-dir', '{tmp}/out']),
]


def loader_refusal(path, resuming=False):
    """The line the checkpoint loader's own check writes for ``path`` after the imports
    (``resuming``: for --resume)."""
    from fastmim.engine.checkpoint import check_checkpoint_file
    from fastmim.errors import CheckpointError
    with pytest.raises(CheckpointError) as refused:
        check_checkpoint_file(path, resuming=resuming)
    return f'error: CheckpointError: {refused.value}'


@pytest.mark.parametrize('tool, args', CHECKPOINT_READERS)
def test_a_missing_checkpoint_is_refused_before_any_heavy_import(tool, args, tmp_path):
    torch.save({'w': torch.ones(1)}, tmp_path / 'epoch_1.pth')  # named as the one beside it
    missing = str(tmp_path / 'nope.pth')
    result = run_tool(tool, [arg.format(ckpt=missing, tmp=tmp_path) for arg in args],
                      '-X', 'importtime')

    assert result.returncode == 1
    printed = [text for text in result.stderr.splitlines() if not text.startswith('import time:')]
    assert printed == [loader_refusal(missing)]
    assert printed[0].endswith(f'Other checkpoints in {tmp_path}, newest first: epoch_1.pth')
    imported = imported_modules(result.stderr)
    assert imported and not [name for name in imported if name.partition('.')[0] in HEAVY]


@pytest.mark.parametrize('tool, args, named', [
    ('test.py', ['configs/knn/vit_b_knn.py', '{ckpt}'], 'vit_timm.pth, epoch_1.pth'),
    # A weights-only file is no checkpoint to resume from: --resume refuses it too.
    ('train.py', [DEMO, '--work-dir', '{tmp}/work', '--resume', '{ckpt}'], 'epoch_1.pth')])
def test_a_cut_off_checkpoint_is_refused_before_any_heavy_import(tool, args, named, tmp_path):
    """A zip archive cut short starts as a torch file: the loader refused it only after the
    start-up, the dataset listed and a log folder written."""
    torch.save({'meta': {'iter': 4}, 'message_hub': {}, 'optimizer': {},
                'state_dict': {'w': torch.ones(1)}}, tmp_path / 'epoch_1.pth')
    os.utime(tmp_path / 'epoch_1.pth', (1e9, 1e9))
    torch.save({'w': torch.ones(1)}, tmp_path / 'vit_timm.pth')
    cut = tmp_path / 'epoch_2.pth'
    torch.save({'meta': {}, 'w': torch.ones(100000)}, cut)
    cut.write_bytes(cut.read_bytes()[:10000])
    result = run_tool(tool, [arg.format(ckpt=cut, tmp=tmp_path) for arg in args],
                      '-X', 'importtime')

    assert result.returncode == 1
    printed = [text for text in result.stderr.splitlines() if not text.startswith('import time:')]
    assert printed == [loader_refusal(str(cut), resuming=tool == 'train.py')]
    assert 'truncated or not a torch checkpoint: its zip archive has no end record' in printed[0]
    assert printed[0].endswith(f'Other checkpoints in {tmp_path}, newest first: {named}')
    imported = imported_modules(result.stderr)
    assert imported and not [name for name in imported if name.partition('.')[0] in HEAVY]
    assert not (tmp_path / 'work').exists()


def cut_off_checkpoint(path):
    """A torch zip archive cut short (no end record), as a save or copy cut off leaves it."""
    torch.save({'meta': {}, 'w': torch.ones(100000)}, path)
    path.write_bytes(path.read_bytes()[:10000])
    return path


# A load_from that is no checkpoint: (its name, how it is made in a folder).
NO_LOAD_FROM = [('nope.pth', lambda folder: folder / 'nope.pth'),
                ('folder', lambda folder: folder),
                ('cut off', lambda folder: cut_off_checkpoint(folder / 'epoch_2.pth'))]


@pytest.mark.parametrize('made', [make for _, make in NO_LOAD_FROM],
                         ids=[name for name, _ in NO_LOAD_FROM])
@pytest.mark.parametrize('options', [['load_from={}'],
                                     ['train_cfg.max_epochs=1', 'load_from={}', 'seed=3']],
                         ids=['alone', 'among others'])
def test_a_load_from_on_the_command_line_is_refused_before_any_heavy_import(
        tmp_path, made, options, load_script, capsys, monkeypatch):
    """It was refused only once the config was loaded, after some 7 s of imports."""
    from fastmim.cli import run_cli
    torch.save({'w': torch.ones(1)}, tmp_path / 'epoch_1.pth')  # named as the one beside it
    checkpoint = made(tmp_path)
    args = [DEMO, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
            *[option.format(checkpoint) for option in options]]
    early = run_tool('train.py', args, '-X', 'importtime')

    assert early.returncode == 1
    printed = [text for text in early.stderr.splitlines() if not text.startswith('import time:')]
    assert len(printed) == 1 and printed[0].startswith('error: CheckpointError: load_from: ')
    assert 'epoch_1.pth' in printed[0]
    assert not [name for name in imported_modules(early.stderr)
                if name.partition('.')[0] in HEAVY]
    assert not (tmp_path / 'work').exists()
    # The same line from train.py's own check, after the imports.
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as stop:
        run_cli(load_script(ROOT / 'tools' / 'train.py').main, args)
    assert stop.value.code == 1
    assert capsys.readouterr().err.splitlines()[-1:] == printed


def test_a_load_from_is_read_with_its_home_expanded(early_checks, tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.delenv('FASTMIM_DEBUG', raising=False)
    assert early_checks.load_from_problem(['c.py', '--cfg-options', 'load_from=~/nope.pth']) == (
        f'load_from: checkpoint not found: {tmp_path}/nope.pth')


@pytest.mark.parametrize('argv', [
    ['c.py', '--cfg-options', 'load_from=https://example.com/x.pth'],
    ['c.py', '--cfg-options', 'load_from=s3://bucket/x.pth'],
    ['c.py', '--cfg-options', 'load_from=None'],
    ['c.py', '--cfg-options', 'load_from='],
    ['c.py', '--cfg-options', 'load_from=[a.pth,b.pth]'],  # no path: the config's checks say so
    # --resume replaces load_from, or loads it only with nothing to resume in the work dir
    ['c.py', '--resume', '--cfg-options', 'load_from=nope.pth'],
    ['c.py', '--cfg-options', 'load_from=nope.pth', '--resume=epoch_1.pth'],
    ['c.py', '--cfg-options', 'load_from=nope.pth', 'resume=True'],
    ['c.py', '--cfg-options', 'load_from=nope.pth', '--launcher', 'pytorch'],
    ['c.py', '--cfg-options', 'load_from=nope.pth', '--help'],
    ['c.py', '--cfg-options', 'load_from=nope.pth', 'c2.py'],  # the parser's error comes first
    ['c.py', '--work-dir', 'load_from=nope.pth'],
    ['c.py', '--', '--cfg-options', 'load_from=nope.pth']])
def test_what_is_no_local_load_from_of_the_command_line_is_left_to_the_tool(early_checks, argv,
                                                                             monkeypatch):
    monkeypatch.delenv('FASTMIM_DEBUG', raising=False)
    assert early_checks.load_from_problem(argv) == ''


def test_a_load_from_whose_maker_the_config_names_is_left_to_train_py(early_checks):
    """Its refusal, once the config is loaded, names the command that writes the file."""
    config = str(ROOT / 'configs' / 'finetune' / 'demo_vit_tiny_embedded_ft.py')
    assert early_checks.load_from_problem(
        [config, '--cfg-options', 'load_from=work_dirs/demo/epoch_12.pth']) == ''


def test_a_load_from_that_is_there_passes(early_checks, tmp_path):
    torch.save({'w': torch.ones(1)}, tmp_path / 'epoch_1.pth')
    assert early_checks.load_from_problem(
        ['c.py', '--cfg-options', f'load_from={tmp_path / "epoch_1.pth"}']) == ''


def test_a_folder_given_to_test_is_named_with_its_last_checkpoint_before_the_imports(
        tmp_path, load_script, capsys, monkeypatch):
    from fastmim.cli import run_cli
    torch.save({'w': torch.ones(1)}, tmp_path / 'epoch_1.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_1.pth'))
    args = ['configs/knn/vit_b_knn.py', str(tmp_path)]
    early = run_tool('test.py', args, '-X', 'importtime')
    printed = [text for text in early.stderr.splitlines() if not text.startswith('import time:')]
    assert early.returncode == 1
    assert printed == [f'{loader_refusal(str(tmp_path))}; or give {tmp_path}/last_checkpoint, '
                       'which names the newest']
    assert not [name for name in imported_modules(early.stderr)
                if name.partition('.')[0] in HEAVY]
    # The same line from test.py's own check, after the imports.
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as stop:
        run_cli(load_script(ROOT / 'tools' / 'test.py').main, args)
    assert stop.value.code == 1
    assert capsys.readouterr().err.splitlines()[-1:] == printed


def test_a_missing_checkpoint_whose_maker_the_config_names_is_left_to_test_py(tmp_path):
    """The line before the imports cannot name the command that writes it: the config, which
    names it (``checkpoints_made_by``), is read after them."""
    config = ROOT / 'configs' / 'knn' / 'demo_vit_tiny_embedded_knn.py'
    result = run_tool('test.py', [str(config), 'work_dirs/demo/epoch_12.pth'], cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        'error: CheckpointError: checkpoint not found: work_dirs/demo/epoch_12.pth; it is made '
        'by `make demo` (configs/fastmim/demo_vit_tiny_embedded.py)')


@pytest.mark.parametrize('text, names', [
    ("checkpoints_made_by = {'w/epoch_1.pth': '`make demo`'}\n", True),
    ("checkpoints_made_by = dict(made='`make demo`')\n", True),
    ("# checkpoints_made_by = {}\nmodel = dict(checkpoints_made_by={})\n", False),
    ('checkpoints_made_by = {\n', False)])  # no Python: the config's own check says so
def test_a_config_names_the_makers_of_its_checkpoints_in_its_own_file(early_checks, tmp_path,
                                                                      text, names):
    config = tmp_path / 'c.py'
    config.write_text(text)
    assert early_checks.names_checkpoint_makers(str(config)) is names


@pytest.mark.parametrize('checkpoint', ['https://example.com/x.pth', 'fastmim::x.pth'])
def test_a_remote_or_packaged_checkpoint_is_left_to_the_loader(early_checks, checkpoint):
    early_checks.refuse_a_missing_checkpoint(['c.py', checkpoint], 1)


def test_the_checkpoint_file_checks_load_without_the_stack():
    """The tools read what fastmim says of a checkpoint file (fastmim/checkpoint_files.py)
    before their imports: the module, loaded from its file, imports no part of the stack, not
    even the fastmim package."""
    script = ('import sys\n'
              f'sys.path.insert(0, {str(ROOT / "tools")!r})\n'
              'import early_checks\n'
              "files = early_checks.load_fastmim_module('checkpoint_files.py')\n"
              "assert files.checkpoints_in('.') == ''\n"
              f'heavy = [name for name in sys.modules if name.partition(".")[0] in {HEAVY!r}]\n'
              "assert 'torch' not in sys.modules and not heavy, heavy\n")
    result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_fastmim_without_the_checkpoint_file_checks_leaves_them_to_the_tool(tmp_path):
    """An older fastmim, found where the tools' early checks look, has no checkpoint_files.py:
    its tools' own checks, after the imports, say what is wrong with the file."""
    shutil.copytree(ROOT / 'tools', tmp_path / 'tools',
                    ignore=shutil.ignore_patterns('__pycache__'))
    (tmp_path / 'fastmim').mkdir()
    (tmp_path / 'fastmim' / '__init__.py').write_text('')
    cut = tmp_path / 'epoch_2.pth'
    torch.save({'meta': {}, 'w': torch.ones(100000)}, cut)
    cut.write_bytes(cut.read_bytes()[:10000])
    script = ('import sys\n'
              f'sys.path.insert(0, {str(tmp_path / "tools")!r})\n'
              'import early_checks\n'
              f"early_checks.refuse_a_missing_checkpoint(['c.py', {str(cut)!r}], 1)\n"
              "early_checks.refuse_a_missing_checkpoint(['c.py', 'absent.pth'], 1)\n"
              f"print(repr(early_checks.weights_only_resume(['--resume', {str(cut)!r}])))\n")
    result = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "''\n"


def test_a_checkpoint_that_fails_to_load_is_not_announced_as_loaded(tmp_path, capsys):
    """mmengine wrote 'Loads checkpoint by local backend from path: F' before loading F: the
    line came just before F's 'checkpoint not found'."""
    from mmengine.runner.checkpoint import _load_checkpoint

    from fastmim.errors import CheckpointError
    torch.save({'w': torch.ones(1)}, tmp_path / 'good.pth')
    with pytest.raises(CheckpointError):
        _load_checkpoint(str(tmp_path / 'nope.pth'))
    assert 'Loads checkpoint' not in ''.join(capsys.readouterr())
    _load_checkpoint(str(tmp_path / 'good.pth'))
    assert (f'Loads checkpoint by local backend from path: {tmp_path / "good.pth"}'
            in ''.join(capsys.readouterr()))


def test_a_tool_runs_the_fastmim_of_its_own_checkout(tmp_path):
    """With another checkout's fastmim importable (an editable install into a shared venv,
    PYTHONPATH here), a tool of this copy imports the copy's."""
    ignore = shutil.ignore_patterns('__pycache__')
    shutil.copytree(ROOT / 'fastmim', tmp_path / 'fastmim', ignore=ignore)
    shutil.copytree(ROOT / 'tools', tmp_path / 'tools', ignore=ignore)
    tool = tmp_path / 'tools' / 'test.py'
    script = ('import runpy, sys\n'
              f'sys.argv = [{str(tool)!r}, "--help"]\n'
              f'sys.path.insert(0, {str(tool.parent)!r})  # as python puts a script\'s folder\n'
              'try:\n'
              f'    runpy.run_path({str(tool)!r}, run_name="__main__")\n'
              'except SystemExit:\n'
              '    pass\n'
              'import fastmim\n'
              'print(fastmim.__file__)\n')
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    result = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == str(tmp_path / 'fastmim' / '__init__.py')


def test_a_python_without_torch_is_told_to_use_the_venv(tmp_path):
    """-S: a Python without the venv's site-packages, as a plain python3 is."""
    result = run_tool('train.py', [DEMO, '--work-dir', str(tmp_path / 'w')], '-S')
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: ModuleNotFoundError: No module named 'torch' in {sys.executable}: run with "
        '.venv/bin/python (made by make demo / tools/setup_env.sh)']


@pytest.mark.parametrize('config, close', [
    # difflib's ratio finds none: the name is the start of a config's name
    ('configs/fastmim/demo.py', 'configs/fastmim/demo_vit_tiny_embedded.py'),
    ('configs/fastmim/embedded.py', 'configs/fastmim/demo_vit_tiny_embedded.py'),  # a part of it
    # named as under configs/, without that folder (or the fastmim:: prefix)
    ('fastmim/cmt_s_hog_800e.py', 'configs/fastmim/cmt_s_hog_800e.py')])
def test_a_missing_config_is_named_with_the_configs_it_may_mean(config, close):
    result = run_tool('train.py', [config, '--work-dir', 'w'])
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f'error: LaunchError: config file not found: {config} (did you mean {close}?)']


@pytest.mark.parametrize('args', [[], ['--help'], ['resum', 'x.py']])
def test_run_as_a_script_without_a_known_check_it_prints_its_usage(args):
    result = subprocess.run([sys.executable, str(ROOT / 'tools' / 'early_checks.py'), *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert 'Traceback' not in result.stderr
    assert 'usage: early_checks.py {config,resume,load_from} ARGS...' in result.stderr
