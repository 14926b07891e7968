"""The registries' optional locations: pre-training must not need mmdet (nor mmcv's compiled
ops, which mmdet's datasets import), while mmdet configs still find fastmim's COCO dataset;
and type_name, how code finds a class named in a config."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fastmim.datasets.transforms import RandomResizedCrop
from fastmim.registry import type_name

ROOT = Path(__file__).resolve().parents[1]


def run_without_mmdet(code):
    """Run ``code`` in a fresh interpreter where ``import mmdet`` fails, as it does where mmdet
    is not installed (or, through mmcv-lite, cannot load mmcv's ops)."""
    blocked = 'import sys\nsys.modules["mmdet"] = None\n'  # makes `import mmdet` raise
    return subprocess.run([sys.executable, '-c', blocked + textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_pretraining_datasets_build_without_mmdet():
    result = run_without_mmdet('''
        from fastmim.registry import DATASETS
        dataset = DATASETS.build(dict(type='EmbeddedPhotos', pipeline=[]))
        print(type(dataset).__name__, len(dataset) > 0)
    ''')
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ['EmbeddedPhotos', 'True']


def test_looking_up_the_coco_dataset_without_mmdet_names_the_import_error():
    result = run_without_mmdet('''
        from fastmim.registry import DATASETS
        print(DATASETS.get('CheckedCocoDataset'))
    ''')
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == 'None'
    warning = result.stdout + result.stderr
    assert "'CheckedCocoDataset' is not in the fastmim::dataset registry" in warning
    assert "could not be imported: fastmim.datasets.coco (No module named 'mmdet" in warning


def test_the_coco_dataset_is_found_where_mmdet_is_installed():
    from fastmim.registry import DATASETS
    assert DATASETS.get('fastmim.CheckedCocoDataset').__name__ == 'CheckedCocoDataset'
    assert DATASETS.import_errors == {}


@pytest.mark.parametrize('step', [dict(type='RandomResizedCrop', size=8),
                                  dict(type='fastmim.RandomResizedCrop'), RandomResizedCrop,
                                  dict(type=RandomResizedCrop), 'mmpretrain.RandomResizedCrop'])
def test_type_name_is_the_class_name_however_the_config_names_it(step):
    assert type_name(step) == 'RandomResizedCrop'


def test_type_name_of_a_hook_given_by_its_class():
    """tools/train.py and project_wallclock.py read a hook's name with str(type): a config
    that named the class itself, not a string, was not found."""
    from fastmim.engine.hooks import CompileModulesHook
    assert type_name(dict(type=CompileModulesHook, mode='max-autotune')) == 'CompileModulesHook'
