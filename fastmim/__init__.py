"""FastMIM: masked image modeling pre-training at low resolution with HOG targets.

Importing the package installs the safe checkpoint I/O (``fastmim.engine.checkpoint``) and
makes mmengine find the ``fastmim::`` configs; models, datasets and hooks register themselves
lazily through the registries' ``locations``. ``fastmim.apis`` builds a model from a config
and checkpoint, extracts features and draws reconstructions, from a notebook or a script.
"""
import warnings

from mmengine.config.utils import MODULE2PACKAGE

from . import engine  # noqa: F401
from .version import __version__

# mmengine finds the packages of `<name>::` config paths through pkg_resources, which setuptools
# deprecates with a UserWarning at its first import: printed by every tool and every config that
# inherits `fastmim::`, `mmdet::` or `mmseg::`, and about nothing the user can change.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

# The configs ship in the package (fastmim/.mim/configs, mmpretrain's layout), so a project of
# one's own inherits them by `_base_ = ['fastmim::fastmim/vit_b_hog_800e.py']` once fastmim is
# imported. mmengine resolves `<name>::` only for the names in this table, locating the package
# by the value: a module of fastmim rather than the distribution, because for an editable
# install mmengine's lookup by distribution points into site-packages, where fastmim is not,
# while a module is found by the import system wherever fastmim is installed.
MODULE2PACKAGE.setdefault('fastmim', 'fastmim.version')

__all__ = ['__version__']
