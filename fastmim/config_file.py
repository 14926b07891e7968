"""The check of a path given as a config, before mmengine reads it (a leaf module).

mmengine calls a folder a file that 'does not exist' and refuses a checkpoint given as the
config with 'Only py/yml/yaml/json type are supported now!', naming no file. The tools, the
Python API and the analysis scripts all check here, so the same mistake reads the same
everywhere.
"""
import os.path as osp

from fastmim.constants import CONFIG_SUFFIXES


def check_config_file(path) -> None:
    """Raise ``IsADirectoryError``, ``FileNotFoundError`` or ``ValueError`` naming ``path``
    unless it is a file mmengine's ``Config.fromfile`` reads."""
    path = str(path)
    if osp.isdir(path):
        raise IsADirectoryError(f'config {path} is a folder; expected a config file')
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
    if osp.splitext(path)[1] not in CONFIG_SUFFIXES:
        raise ValueError(f'config file {path} is not a {"/".join(CONFIG_SUFFIXES)} file (a '
                         'checkpoint given as the config? The config comes first)')
