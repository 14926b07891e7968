"""fastmim as an installed package: its configs ship with it and resolve as ``fastmim::``, and
importing it loads no model."""
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

import fastmim

ROOT = Path(__file__).resolve().parents[1]


def test_a_project_of_ones_own_inherits_a_shipped_recipe(tmp_path):
    """mmpretrain's way: a config outside the repository names a recipe by package path."""
    config = tmp_path / 'my_vit.py'
    config.write_text("_base_ = ['fastmim::fastmim/vit_b_hog_800e.py']\n"
                      'train_dataloader = dict(batch_size=64)\n')
    cfg = Config.fromfile(str(config))
    assert cfg.train_dataloader.batch_size == 64
    assert cfg.optim_wrapper.optimizer.lr == 2.4e-3 and cfg.train_cfg.max_epochs == 800
    assert cfg.model.backbone.type == 'VisionTransformer' and cfg.model.block_size == 16


def test_the_shipped_configs_are_the_repositorys():
    shipped = Path(fastmim.__file__).parent / '.mim' / 'configs'
    assert sorted(p.relative_to(shipped) for p in shipped.rglob('*.py')) == sorted(
        p.relative_to(ROOT / 'configs') for p in (ROOT / 'configs').rglob('*.py'))


def test_package_paths_resolve_without_setuptools_deprecation_noise(tmp_path):
    """mmengine resolves ``fastmim::`` (and ``mmdet::``) through pkg_resources, whose import
    printed setuptools' two-line deprecation warning in every tool's output."""
    config = tmp_path / 'my_vit.py'
    config.write_text("_base_ = ['fastmim::fastmim/vit_b_hog_800e.py']\n")
    result = subprocess.run(
        [sys.executable, '-W', 'default', '-c', 'import sys, fastmim; '
         'from mmengine.config import Config; print(Config.fromfile(sys.argv[1]).model.type)',
         str(config)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'FastMIM'
    assert 'pkg_resources is deprecated' not in result.stderr


@pytest.mark.parametrize('module', ['fastmim', 'fastmim.engine'])
def test_importing_the_package_loads_no_model(module):
    """Every tool imports fastmim, also those that build no model (print_config, analyze_logs,
    a converter's --help); the models register lazily through the registries' ``locations``,
    so the model modules, timm and torchvision (over a second of imports) load only where a
    model or a transform that needs them is built."""
    result = subprocess.run(
        [sys.executable, '-c', f'import sys, {module}; print(" ".join(name for name in '
         '("fastmim.models", "timm", "torchvision") if name in sys.modules))'],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ''
