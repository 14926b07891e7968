"""--cfg-options on a config variable that the config's settings copied when the file was read
(fastmim.engine.copied_variables): a warning that names the option, why it changes nothing
that runs, and the keys to set instead.

mmengine evaluates a config file as Python, then applies --cfg-options to the finished dict:
``crop_size=(256, 256)`` replaces the variable alone. The tests check that on mmengine's own
Config first, so the warning stands on what mmengine does, and that setting the keys the
warning names does change what runs."""
import inspect
import re
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from fastmim.engine.config_loading import load_config

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'
FINETUNE = ROOT / 'configs' / 'finetune' / 'vit_b_ft_100e.py'
FINETUNE_DEMO = ROOT / 'configs' / 'finetune' / 'demo_vit_tiny_embedded_ft.py'
SEGMENTATION = (ROOT / 'projects' / 'segmentation' / 'configs' /
                'upernet_fastmim_vit_b_ade20k_512x512_160k.py')

# The keys that hold each variable's value, read from the config files: the demo hands its
# base's train_pipeline to its dataloader; the fine-tuning demo its test_pipeline to the
# validation dataloader, which test_dataloader repeats; the ImageNet base its data_root to
# the three datasets; the segmentation config its crop_size to the data preprocessor (training
# and evaluation padding) and the slide inference, and mmseg's ADE20K base (its own crop_size,
# the same value) to RandomCrop.
CASES = [
    (DEMO, 'train_pipeline.1.size', 96, ['train_dataloader.dataset.pipeline.1.size']),
    (FINETUNE_DEMO, 'test_pipeline.1.crop_size', 128,
     ['val_dataloader.dataset.pipeline.1.crop_size',
      'test_dataloader.dataset.pipeline.1.crop_size']),
    (FINETUNE, 'data_root', '/data/elsewhere',
     ['train_dataloader.dataset.data_root', 'val_dataloader.dataset.data_root',
      'test_dataloader.dataset.data_root']),
    (SEGMENTATION, 'crop_size', (256, 256),
     ['model.data_preprocessor.size', 'model.data_preprocessor.test_cfg.size',
      'model.test_cfg.crop_size', 'train_dataloader.dataset.pipeline.3.crop_size']),
]


def runner_settings(cfg):
    """What mmengine's Runner is built from: the top-level keys ``Runner.from_cfg`` reads."""
    tree = cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg
    return {key: tree[key] for key in inspect.signature(Runner.__init__).parameters
            if key in tree}


def follow(tree, key):
    for part in key.split('.'):
        tree = tree[int(part)] if isinstance(tree, (list, tuple)) else tree[part]
    return tree


@pytest.mark.parametrize('config, option, value, keys', CASES)
def test_mmengine_applies_the_option_to_the_variable_alone(config, option, value, keys):
    """The ground for the warning, on mmengine's Config without fastmim's loading."""
    cfg = Config.fromfile(str(config))
    before = runner_settings(cfg)
    cfg.merge_from_dict({option: value})
    assert runner_settings(cfg) == before
    assert follow(cfg.to_dict(), option) == value


@pytest.mark.parametrize('config, option, value, keys', CASES)
def test_the_warning_names_the_option_why_and_the_keys_that_run(load_config_log, config,
                                                                option, value, keys):
    variable = option.split('.')[0]
    [warning] = [line for line in load_config_log(config, {option: value})
                 if line.startswith(f'--cfg-options {option}: ')]
    assert f'{variable} alone' in warning and 'when the file was read' in warning
    named = re.search(r'Set instead: (.*?) \(the keys that hold its value', warning)[1]
    named = named.split(', ')
    assert named == keys
    runs = load_config(str(config), {key: value for key in named})
    assert all(follow(runs.to_dict(), key) == value for key in named)


def test_the_variable_and_its_copies_set_together_are_not_warned_about(load_config_log):
    options = {'train_pipeline.1.size': 96, 'train_dataloader.dataset.pipeline.1.size': 96}
    assert not [line for line in load_config_log(DEMO, options) if 'Set instead' in line]


def test_a_partly_set_variable_names_the_copies_left(load_config_log):
    options = {'test_pipeline.1.crop_size': 128,
               'val_dataloader.dataset.pipeline.1.crop_size': 128}
    [warning] = [line for line in load_config_log(FINETUNE_DEMO, options) if 'Set instead' in line]
    assert 'Set instead: test_dataloader.dataset.pipeline.1.crop_size (' in warning


@pytest.mark.parametrize('config, option, value', [
    (FINETUNE_DEMO, 'val_dataloader.batch_size', 8),  # a setting the Runner reads
    (FINETUNE_DEMO, 'checkpoints_made_by', None),  # a variable no setting copies
])
def test_settings_and_uncopied_variables_are_not_warned_about(load_config_log, config, option,
                                                              value):
    """val_dataloader is what the run validates with, though test_dataloader repeats it."""
    assert not [line for line in load_config_log(config, {option: value})
                if 'Set instead' in line]


def test_a_length_variable_is_left_to_the_schedule_check(load_config_log):
    """max_epochs has its own warning (fastmim.engine.schedule_length), naming the schedulers'
    ends computed from it, which hold no copy of its value."""
    logged = load_config_log(DEMO, {'max_epochs': 2})
    assert not [line for line in logged if 'Set instead' in line]
    assert [line for line in logged if 'the variable max_epochs (2) differs' in line]


def test_a_pipeline_variable_set_on_the_command_line_is_warned_about_once(load_config_log):
    """fastmim.engine.pipeline_variables compares the variables with the dataloaders' pipelines
    after the options; the option's own warning says it all."""
    logged = load_config_log(DEMO, {'train_pipeline.1.size': 96})
    assert len([line for line in logged if 'train_pipeline' in line]) == 1, logged
