"""tools/analysis/profile_pretrain_step.py: options that cannot work are refused before the
model is built and profiled."""
import json
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / 'tools' / 'analysis' / 'profile_pretrain_step.py'


@pytest.fixture(scope='module')
def tool(load_script):
    sys.path.insert(0, str(TOOL.parent))  # it imports pretrain_methods by name, as it runs
    return load_script(TOOL)


@pytest.fixture
def nothing_built(monkeypatch):
    import pretrain_methods

    def build_method(*args, **kwargs):
        raise AssertionError('the model was built before the options were checked')
    monkeypatch.setattr(pretrain_methods, 'build_method', build_method)


def test_an_unknown_sort_column_is_named(tool, nothing_built):
    """It ended after the profile in an AttributeError traceback from torch's table."""
    with pytest.raises(ValueError, match=r"--sort 'foo' is not a profiler column; expected "
                       r"one of \[.*'self_cpu_time_total'"):
        tool.main(['--backbone', 'vit_b', '--sort', 'foo'])


@pytest.mark.parametrize('sort', ['self_cuda_time_total', 'cpu_time', 'count'])
def test_the_columns_torch_sorts_by_are_accepted(tool, sort):
    tool.check_sort(sort)


@pytest.mark.parametrize('flag', ['--rows', '--steps', '--batch-size'])
def test_counts_below_one_are_refused(tool, capsys, flag):
    """--rows 0 printed an empty table, --rows -3 the whole one."""
    with pytest.raises(SystemExit):
        tool.parse_args(['--backbone', 'vit_b', flag, '0'])
    assert f'argument {flag}: must be a positive integer, got 0' in capsys.readouterr().err


def test_a_trace_in_a_missing_folder_is_written_there(tool, tmp_path, capsys):
    """The folder was refused (torch's exporter makes none and only logs that it cannot write
    the file), while the other analysis tools make a missing --out folder."""
    trace = tmp_path / 'missing' / 'trace.json'
    tool.main(['--backbone', 'vit_b', '--batch-size', '1', '--steps', '1', '--rows', '1',
               '--device', 'cpu', '--trace', str(trace)])
    events = json.loads(trace.read_text())['traceEvents']
    assert any(event.get('name') == 'aten::addmm' for event in events)  # the step's matmuls
    assert f'trace written to {trace}' in capsys.readouterr().out


def test_a_trace_where_a_file_blocks_the_folder_is_refused(tool, nothing_built, tmp_path):
    (tmp_path / 'blocker').write_text('')
    with pytest.raises(NotADirectoryError, match='--trace .*blocker'):
        tool.main(['--backbone', 'vit_b', '--trace', str(tmp_path / 'blocker' / 'trace.json')])
