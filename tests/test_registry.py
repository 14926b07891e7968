"""The registries' optional locations: pre-training must not need mmdet (nor mmcv's compiled
ops, which mmdet's datasets import), while mmdet configs still find fastmim's COCO dataset;
and type_name and type_class, how code finds a class named in a config."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fastmim.datasets import ImageFolder
from fastmim.datasets.transforms import RandomResizedCrop
from fastmim.registry import DATASETS, type_class, type_name

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


@pytest.mark.parametrize('kind', [ImageFolder, 'ImageFolder', 'fastmim.ImageFolder',
                                  dict(type='fastmim.ImageFolder', data_root='data')])
def test_type_class_is_the_class_however_the_config_names_it(kind):
    assert type_class(kind, DATASETS) is ImageFolder


def test_type_class_of_a_name_registered_in_a_parent_scope():
    """A bare name fastmim's registry lacks is mmengine's, as building it finds it."""
    from mmengine.dataset import ConcatDataset
    assert type_class('ConcatDataset', DATASETS) is ConcatDataset
    assert type_class('mmengine.ConcatDataset', DATASETS) is ConcatDataset


@pytest.mark.parametrize('kind', ['NoSuchDataset', 'fastmim.NoSuchDataset', '', None, dict()])
def test_type_class_of_what_names_no_class_is_none(kind):
    assert type_class(kind, DATASETS) is None


def test_type_class_of_a_registered_function_is_none():
    from mmengine.registry import FUNCTIONS
    assert FUNCTIONS.get('pseudo_collate') is not None
    assert type_class('pseudo_collate', FUNCTIONS) is None


# Run in a fresh interpreter: after ``import fastmim`` alone, each registry is given its own
# lazy import (``import_from_location``) in a forked copy of the process, so that no other
# registry's imports help it; then the parent imports every module of the package and lists
# what is registered. A config names a class by its registry alone (no ``custom_imports``), so
# each registry's lazy import must find everything that is registered in it anywhere.
_LAZY_AGAINST_EVERY_MODULE = '''
import importlib, json, os, pkgutil
import fastmim
from fastmim import registry as registries

def names_after_own_lazy_import(registry):
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        try:
            registry.import_from_location()
            os.write(write_end, json.dumps(sorted(registry.module_dict)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        text = pipe.read()
    os.wait()
    return json.loads(text) if text else None

every = {name: registry for name, registry in vars(registries).items()
         if isinstance(registry, registries.FastMIMRegistry)}
lazy = {name: names_after_own_lazy_import(registry) for name, registry in every.items()}
for module in pkgutil.walk_packages(fastmim.__path__, 'fastmim.'):
    importlib.import_module(module.name)
print(json.dumps({name: dict(lazy=lazy[name], registered=sorted(registry.module_dict))
                  for name, registry in every.items()}))
'''


def test_every_registered_class_is_found_by_its_registry_alone():
    """KNNClassifier and KNNTestLoop (fastmim.evaluation) and FlexibleRunnerKeepingPosition
    (fastmim.engine.fsdp) were registered by modules their registries' locations never
    imported: building them by name was a KeyError unless a config imported the module."""
    result = subprocess.run([sys.executable, '-c', _LAZY_AGAINST_EVERY_MODULE], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.splitlines()[-1])
    assert found['MODELS']['registered'] and found['LOOPS']['registered']
    missed = {name: sorted(set(names['registered']) - set(names['lazy'] or ()))
              for name, names in found.items()}
    assert {name: names for name, names in missed.items() if names} == {}
    assert all(names['lazy'] is not None for names in found.values()), found


def test_the_knn_classes_build_by_name_without_custom_imports():
    result = subprocess.run([sys.executable, '-c', textwrap.dedent('''
        import fastmim
        from fastmim.registry import LOOPS, MODELS
        model = MODELS.build(dict(type='KNNClassifier', backbone=dict(
            type='VisionTransformer', arch=dict(embed_dim=32, depth=1, num_heads=2),
            img_size=32, patch_size=16), num_classes=3))
        print(type(model).__name__, LOOPS.get('KNNTestLoop').__name__)
    ''')], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ['KNNClassifier', 'KNNTestLoop']
