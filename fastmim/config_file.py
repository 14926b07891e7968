"""The check of a path given as a config, before mmengine reads it (a leaf module, importing
only the standard library).

mmengine calls a folder a file that 'does not exist' and refuses a checkpoint given as the
config with 'Only py/yml/yaml/json type are supported now!', naming no file. The tools, the
Python API and the analysis scripts all check here, so the same mistake reads the same
everywhere. ``tools/train.py`` and ``tools/test.py`` load this file on its own, before they
import fastmim and torch (``tools/early_checks.py``), so it imports nothing of the package.
"""
import difflib
import os
import os.path as osp

# The config file suffixes mmengine's Config.fromfile reads.
CONFIG_SUFFIXES = ('.py', '.json', '.yaml', '.yml')


def check_config_file(path, given=None) -> None:
    """Raise ``IsADirectoryError``, ``FileNotFoundError`` or ``ValueError`` naming ``path``
    unless it is a file mmengine's ``Config.fromfile`` reads.

    ``given`` is how the user named ``path`` when it differs (``'fastmim::fastmim/x.py'``, the
    packaged config ``path`` is the file of): the message starts with it, and names the close
    config files as the user would."""
    path = str(path)
    given = path if given is None else str(given)
    named = '' if given == path else f'{given}: '
    if osp.isdir(path):
        raise IsADirectoryError(f'{named}config {path} is a folder; expected a config file')
    if not osp.isfile(path):
        raise FileNotFoundError(f'{named}config file not found: {path}'
                                f'{_did_you_mean(path, given)}')
    if osp.splitext(path)[1] not in CONFIG_SUFFIXES:
        raise ValueError(f'{named}config file {path} is not a {"/".join(CONFIG_SUFFIXES)} file '
                         '(a checkpoint given as the config? The config comes first)')

def _did_you_mean(path, given) -> str:
    """The config files close to ``path`` (:func:`_close_configs`), named as the user named the
    config (``given``): a mistyped recipe (``vit_b_hog_80e.py``) would otherwise be only 'not
    found', while a misspelt ``--cfg-options`` key gets its close names. Where ``path``'s
    folder has none, the same folder under ``configs/`` is searched: a config named as in
    ``configs/`` (``fastmim/vit_b_hog_800e.py``) without that folder or the ``fastmim::``
    prefix."""
    folder, name = osp.split(path)
    prefix = given[:len(given) - len(name)] if given.endswith(name) else ''
    close = _close_configs(folder, name)
    if not close and folder and not osp.isabs(folder):
        close = _close_configs(osp.join('configs', folder), name)
        prefix = 'configs/' + prefix
    return f' (did you mean {" or ".join(prefix + entry for entry in close)}?)' if close else ''


# The shortest name (without its suffix) that a config's name is searched for as a part of:
# a shorter one is part of most names.
SHORTEST_PART = 3


def _close_configs(folder, name):
    """The config files of ``folder`` named ``name``, or else close to it (difflib), or else
    starting with or holding its stem: ``demo.py`` is far from ``demo_vit_tiny_embedded.py`` by
    difflib's ratio."""
    if not osp.isdir(folder or '.'):
        return []
    configs = sorted(entry for entry in os.listdir(folder or '.')
                     if osp.splitext(entry)[1] in CONFIG_SUFFIXES)
    if name in configs:  # the config itself, in the folder under configs/
        return [name]
    close = difflib.get_close_matches(name, configs, n=2)
    stem = osp.splitext(name)[0]
    if close or len(stem) < SHORTEST_PART:
        return close
    return [entry for entry in configs if entry.startswith(stem)][:2] or \
        [entry for entry in configs if stem in osp.splitext(entry)[0]][:2]
