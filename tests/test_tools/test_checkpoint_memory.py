"""tools/analysis/checkpoint_memory.py as a user runs it: two processes, one per setting, the
same loss, and less step memory with activation checkpointing (the size of the saving depends
on the model and is written down in projects/detection/README.md, not asserted)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / 'tools' / 'analysis' / 'checkpoint_memory.py'


def test_with_cp_same_loss_less_step_memory(tmp_path):
    out = tmp_path / 'not made yet' / 'memory.json'  # it was refused: 'folder does not exist'
    subprocess.run([sys.executable, str(TOOL), '--img-size', '128', '--batch-size', '4',
                    '--embed-dim', '32', '--depths', '2', '2', '2', '2', '--window-size', '4',
                    '--threads', '1', '--out', str(out)], check=True, cwd=ROOT,
                   capture_output=True)
    result = json.loads(out.read_text())
    assert result['img_size'] == 128 and result['depths'] == [2, 2, 2, 2]
    assert 0 < result['step_mib_with_cp'] < result['step_mib_without_cp']
    assert result['ratio'] == pytest.approx(
        result['step_mib_with_cp'] / result['step_mib_without_cp'], abs=0.01)


def test_an_unwritable_out_is_one_line_before_measuring(tmp_path):
    """The summary was written only after both runs, and a bad --out was a traceback."""
    (tmp_path / 'a_file').write_text('')
    blocked = tmp_path / 'a_file' / 'memory.json'
    result = subprocess.run([sys.executable, str(TOOL), '--out', str(blocked)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f'error: NotADirectoryError: --out {blocked}: {blocked.parent} is a file, not a folder']


@pytest.mark.parametrize('args, message', [
    (['--threads', '0'], 'argument --threads: must be a positive integer, got 0'),
    (['--img-size', '0'], 'argument --img-size: must be a positive integer, got 0'),
    (['--img-size', '3'], 'error: ValueError: --img-size 3 is no multiple of 32, the total stride '
     'of the measured Swin'),
    # Built at 225, the Swin's patch convolution left the last pixel row and column out.
    (['--img-size', '225'], 'error: ValueError: --img-size 225 is no multiple of 32'),
    (['--embed-dim', '30'], 'error: ValueError: --embed-dim 30 --window-size 7 --img-size 224 do '
     'not build the measured Swin'),
])
def test_arguments_that_cannot_be_measured_are_one_line(args, message):
    """A 0 or a width the derived heads do not divide ended in a traceback of the child
    process (inside a RuntimeError of the parent) or of torch.set_num_threads."""
    result = subprocess.run([sys.executable, str(TOOL), *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert 'Traceback' not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]


def test_out_is_replaced_not_rewritten_in_place(tmp_path, load_script, monkeypatch):
    """--out was rewritten in place (``Path.write_text``): a run killed while writing, or a
    full disk, left half a JSON file where the earlier result was. Now a new file replaces it,
    so a second name of the earlier file (a hard link) keeps the earlier content. The two
    measuring processes are not what this is about: they are stood in for."""
    tool = load_script(TOOL)
    monkeypatch.setattr(tool, 'run_child', lambda args, setting: dict(
        loss=1.0, step_mib={'off': 8.0, 'on': 6.0}[setting], parameters_mib=1.0))
    out, earlier = tmp_path / 'memory.json', tmp_path / 'earlier.json'
    out.write_text('{"ratio": 0.5}\n')
    earlier.hardlink_to(out)

    summary = tool.main(['--img-size', '32', '--embed-dim', '32', '--window-size', '4',
                         '--out', str(out)])

    assert json.loads(out.read_text()) == summary and summary['ratio'] == 0.75
    assert earlier.read_text() == '{"ratio": 0.5}\n'


def test_the_help_names_the_one_backbone_it_measures(load_script, capsys):
    """The description promised 'a backbone' (any, as with_cp is on every backbone) while the
    tool builds a Swin only."""
    with pytest.raises(SystemExit):
        load_script(TOOL).parse_args(['--help'])
    description = ' '.join(capsys.readouterr().out.split())
    assert 'Peak memory of one training step of a Swin Transformer with and without' in description
