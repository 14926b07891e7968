"""Every tool that runs through fastmim.cli.run_cli lists --debug (which run_cli reads)
in its --help, and those that take --cfg-options parse them as tools/train.py does."""
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / 'tools'
RUN_CLI_TOOLS = sorted(path for path in TOOLS.rglob('*.py')
                       if 'run_cli(main' in path.read_text())


def test_the_tools_are_found():
    assert {'train.py', 'test.py', 'to_timm.py', 'train_speed.py', 'print_config.py',
            'get_flops.py', 'analyze_logs.py'} <= {path.name for path in RUN_CLI_TOOLS}


@pytest.mark.parametrize('tool', RUN_CLI_TOOLS, ids=lambda path: path.name)
def test_help_lists_debug(tool, load_script, capsys, monkeypatch):
    """Only train.py and test.py listed it; the others took it without saying so."""
    monkeypatch.syspath_prepend(str(tool.parent))  # benchmark tools import their siblings
    with pytest.raises(SystemExit):
        load_script(tool).parse_args(['--help'])
    assert '--debug' in capsys.readouterr().out


@pytest.mark.parametrize('tool, arguments', [
    ('analysis/train_speed.py', ['pretrain', '--out', 'speed.json']),
    ('analysis/soak_memory.py', []),
    ('analysis/get_flops.py', ['configs/finetune/vit_b_ft_100e.py'])])
def test_cfg_options_keep_the_spaces_of_a_value(tool, arguments, load_script):
    """mmengine's DictAction, which these parsed with, removes every space of a value."""
    args = load_script(TOOLS / tool).parse_args(
        [*arguments, '--cfg-options', "train_dataloader.dataset.data_root=/mnt/My Drive/imagenet",
         'train_dataloader.batch_size=2'])
    assert args.cfg_options == {'train_dataloader.dataset.data_root': '/mnt/My Drive/imagenet',
                                'train_dataloader.batch_size': 2}


def test_the_test_tool_s_work_dir_help_names_no_checkpoints(load_script, capsys):
    """tools/test.py --help said 'where logs, checkpoints and results go': a test writes no
    checkpoint."""
    for tool, says_checkpoints in (('test.py', False), ('train.py', True)):
        with pytest.raises(SystemExit):
            load_script(TOOLS / tool).parse_args(['--help'])
        help_text = ' '.join(capsys.readouterr().out.split())
        work_dir = help_text.split('--work-dir WORK_DIR', 2)[-1].split('--cfg-options')[0]
        assert ('logs, checkpoints and results' in work_dir) == says_checkpoints, work_dir
