"""tools/misc/print_config.py: the config tools/train.py would train with, printed or written
to a file that trains the same, and the same one-line errors as train.py."""
import logging
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.logging import MMLogger

from fastmim.engine.config_loading import load_config
from fastmim.cli import run_cli
from fastmim.train_flags import apply_args

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py')  # _base_: vit_b_hog_800e
MASK06 = str(ROOT / 'configs' / 'fastmim' / 'ablations' / 'vit_b_hog_800e_mask06.py')


@pytest.fixture
def print_config(load_script):
    return load_script(ROOT / 'tools' / 'misc' / 'print_config.py')


def test_the_log_streams_are_put_back(print_config, capsys):
    """The tool sends mmengine's console log to stderr while it loads the config, then back:
    left on this test's capture, closed once it ends, the handlers would fail the next tool."""
    handlers = [handler for handler in MMLogger.get_current_instance().handlers
                if type(handler) is logging.StreamHandler]
    streams = [handler.stream for handler in handlers]
    print_config.main([DEMO])
    assert [handler.stream for handler in handlers] == streams


def printed(print_config, capsys, *argv):
    print_config.main(list(argv))
    return capsys.readouterr().out


def test_inherited_values_are_resolved(print_config, capsys):
    text = printed(print_config, capsys, DEMO)
    printed_cfg = Config.fromstring(text, '.py')
    assert printed_cfg.model.mask_ratio == 0.75  # from vit_b_hog_800e.py
    assert printed_cfg.model.backbone.arch == dict(embed_dim=192, depth=6, num_heads=3)
    # {{_base_.train_pipeline}}-style references are the base's pipeline itself
    assert printed_cfg.train_dataloader.dataset.pipeline == printed_cfg.train_pipeline
    assert '_base_' not in text


def test_keys_print_one_line_each_with_cfg_options(print_config, capsys):
    out = printed(print_config, capsys, MASK06, '--cfg-options', 'train_cfg.max_epochs=2',
                  '--keys', 'model.mask_ratio', 'train_cfg.max_epochs', 'param_scheduler.0.type')
    assert out.splitlines() == ['model.mask_ratio = 0.6', 'train_cfg.max_epochs = 2',
                                "param_scheduler.0.type = 'LinearLR'"]


def test_warnings_go_to_stderr(print_config, capsys):
    """The loader's warnings in stdout would end up in a config redirected to a file."""
    print_config.main([DEMO, '--cfg-options', 'train_dataloader.batch_sise=4',
                       '--keys', 'model.mask_ratio'])
    captured = capsys.readouterr()
    assert captured.out == 'model.mask_ratio = 0.75\n'
    assert 'did you mean batch_size?' in captured.err


def test_the_flags_log_goes_to_stderr_too(print_config, capsys, request):
    """What folding in a train.py flag logs (--auto-scale-lr's line on accumulation) is no
    part of the printed config either. The line is at INFO level: on a logger of the test's
    own (mmengine's current logger is the last one created), as a tool's process has one."""
    MMLogger.get_instance(f'print_config_{request.node.name}', log_level='INFO')
    print_config.main([DEMO, '--auto-scale-lr', '--cfg-options',
                       'optim_wrapper.accumulative_counts=2', '--keys', 'model.mask_ratio'])
    captured = capsys.readouterr()
    assert captured.out == 'model.mask_ratio = 0.75\n'
    assert '--auto-scale-lr: each update accumulates 2 batches' in captured.err


@pytest.mark.parametrize('key, message', [
    ('model.mask_ratoi', 'the config has no key model.mask_ratoi (did you mean mask_ratio?)'),
    ('param_scheduler.9', 'the config has no such key (param_scheduler is a list of 2)')])
def test_unknown_key_is_named_with_close_matches(key, message, print_config, capsys):
    with pytest.raises(SystemExit):
        run_cli(print_config.main, [DEMO, '--keys', 'model.mask_ratio', key])
    assert capsys.readouterr().err.strip() == f'error: LaunchError: --keys {key}: {message}'


def test_the_dump_trains_as_the_original(print_config, tmp_path, capsys):
    """tools/train.py loads the dump through the same load_config: the same config."""
    options = {'model.mask_ratio': 0.5, 'train_dataloader.batch_size': 4}
    out = tmp_path / 'ablation.py'
    print_config.main([DEMO, '--out', str(out), '--cfg-options',
                       *(f'{key}={value}' for key, value in options.items())])
    assert capsys.readouterr().out == ''
    assert load_config(str(out)).to_dict() == load_config(DEMO, options).to_dict()


def test_train_flags_are_folded_in_as_train_py_folds_them(print_config, load_script, capsys):
    flags = ['--amp-dtype', 'bfloat16', '--compile', '--auto-scale-lr', '--fsdp']
    shown = print_config.main([DEMO, *flags, '--keys', 'model.mask_ratio'])
    train = load_script(ROOT / 'tools' / 'train.py')
    trained = load_config(DEMO)
    apply_args(trained, train.parse_args([DEMO, *flags]))
    for key in ('optim_wrapper', 'custom_hooks', 'auto_scale_lr', 'strategy', 'runner_type'):
        assert shown[key] == trained[key], key
    assert 'work_dir' not in shown  # train.py's default names the config the dump is not


@pytest.mark.parametrize('config, options', [
    ('missing.py', []),
    ('broken.py', []),
    (DEMO, ['--cfg-options', 'model.mask_ratio=abc'])], ids=['missing', 'syntax', 'option'])
def test_errors_read_as_train_py_s(config, options, print_config, load_script, tmp_path,
                                   monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'broken.py').write_text('model = dict(\n')
    errors = []
    for tool in (print_config, load_script(ROOT / 'tools' / 'train.py')):
        with pytest.raises(SystemExit):
            run_cli(tool.main, [config, *options])
        errors.append(capsys.readouterr().err.strip().splitlines())
    assert len(errors[0]) == 1 and errors[0][0].startswith('error: ')
    assert errors[0] == errors[1]


def test_a_base_fragment_is_printed(print_config, capsys):
    """The tools that build a model refuse a fragment given as CONFIG; printing one is what
    print_config is for (its _base_ files merged)."""
    out = printed(print_config, capsys, str(ROOT / 'configs' / '_base_' / 'default_runtime.py'),
                  '--keys', 'default_scope')
    assert out == "default_scope = 'fastmim'\n"


def test_out_must_be_a_python_file_other_than_the_config(print_config, tmp_path, capsys):
    for out, message in ((tmp_path / 'x.json', 'expected a .py file'),
                         (DEMO, 'is CONFIG itself')):
        with pytest.raises(SystemExit):
            run_cli(print_config.main, [DEMO, '--out', str(out)])
        assert message in capsys.readouterr().err


def test_out_refuses_an_existing_file_without_overwrite(print_config, tmp_path, capsys):
    """An --out naming another config (a published recipe) replaced it without a word."""
    out = tmp_path / 'recipe.py'
    out.write_text('keep = 1\n')
    with pytest.raises(SystemExit):
        run_cli(print_config.main, [DEMO, '--out', str(out)])
    assert capsys.readouterr().err.strip() == \
        f'error: FileExistsError: --out {out} exists (9 B): pass --overwrite to replace it'
    assert out.read_text() == 'keep = 1\n'
    print_config.main([DEMO, '--out', str(out), '--overwrite'])
    assert load_config(str(out)).to_dict() == load_config(DEMO).to_dict()


def test_a_dump_of_a_shortened_run_keeps_its_variables_with_what_runs(print_config, tmp_path,
                                                                      capsys, load_config_log):
    """The dump wrote the recipe's ``max_epochs = 12`` beside ``train_cfg.max_epochs=1``, and
    every load of it warned that the variable had been changed too late, which the user never
    did. The demo warms up for 1 epoch of 12; here the run is 3 epochs, the warmup 2."""
    options = {'train_cfg.max_epochs': 3, 'param_scheduler.0.end': 2,
               'param_scheduler.1.begin': 2, 'param_scheduler.1.end': 3,
               'param_scheduler.1.T_max': 1}
    out = tmp_path / 'short.py'
    print_config.main([DEMO, '--out', str(out), '--cfg-options',
                       *(f'{key}={value}' for key, value in options.items())])
    capsys.readouterr()
    assert load_config_log(out) == []
    loaded = load_config(str(out))
    assert (loaded.max_epochs, loaded.warmup_epochs) == (3, 2)
    assert loaded.train_cfg.max_epochs == 3
    assert [(s['begin'], s['end']) for s in loaded.param_scheduler] == [(0, 2), (2, 3)]
    variables = ('max_epochs', 'warmup_epochs')
    assert {key: value for key, value in loaded.to_dict().items() if key not in variables} == \
        {key: value for key, value in load_config(DEMO, options).to_dict().items()
         if key not in variables}
