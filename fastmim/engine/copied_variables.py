"""Warn when ``--cfg-options`` changes a config variable whose value the settings that run
copied when the file was read.

Configs name a value once, in a top-level variable (``train_pipeline``, ``crop_size``,
``data_root``, ``norm_cfg``), and use it in the settings the Runner is built from
(``dataset=dict(pipeline=train_pipeline)``, ``data_preprocessor=dict(size=crop_size)``). The
file is Python: the uses are evaluated when mmengine reads it, and mmengine applies
``--cfg-options`` afterwards, to the finished dict. ``--cfg-options crop_size=256,256`` or
``train_pipeline.1.size=96`` thus replaces the variable alone and the run goes on as before.
The warning names the settings that hold the variable's value, the keys to set instead. It
stays a warning: a key read by name outside the Runner's settings (``checkpoints_made_by``,
mmseg's ``tta_pipeline``) is no mistake, and an equal value can be there by chance.
"""
import inspect
import logging
from typing import Collection, Iterator, List, Set

from mmengine.logging import print_log


def warn_copied_variables(tree, cfg_options, path,
                          checked_elsewhere: Collection[str] = ()) -> Set[str]:
    """Log a warning for each option of ``cfg_options`` that sets (a part of) a top-level
    variable of ``tree`` (the config before the options) whose value the Runner's settings
    hold, naming those keys (:func:`copies`) but the ones the options set too. Variables in
    ``checked_elsewhere`` (the schedule's lengths, with warnings of their own), ``None`` and
    booleans (equal to too much by chance) are left out. Returns the variables warned
    about."""
    settings = runner_settings()
    warned = set()
    for option in cfg_options:
        variable, _, below = option.partition('.')
        if (variable in settings or variable in checked_elsewhere or variable not in tree
                or tree[variable] is None or isinstance(tree[variable], bool)):
            continue
        left = [key for key in copies(tree, variable, settings, below)
                if not _set_by(key, cfg_options)]
        if left:
            warned.add(variable)
            print_log(f'--cfg-options {option}: {path}: {variable} is a variable, and the '
                      f'settings that use it took its value when the file was read; mmengine '
                      f'applies --cfg-options afterwards, so this changes {variable} alone, '
                      f'not the run. Set instead: {", ".join(left)} (the keys that hold its '
                      f'value; a value computed from it is not found)', logger='current',
                      level=logging.WARNING)
    return warned


def runner_settings() -> Set[str]:
    """The top-level keys mmengine's Runner is built from: ``Runner.from_cfg`` hands it the
    config's value of each of its arguments."""
    from mmengine.runner import Runner
    return set(inspect.signature(Runner.__init__).parameters) - {'self', 'cfg'}


def copies(tree, variable, settings, below='') -> List[str]:
    """The keys under ``settings`` whose value equals the variable's (the ``_scope_`` mmengine
    adds to an inherited one aside), in the config's order, each followed by ``below``."""
    value = comparable(tree[variable])
    found = []
    for key in (key for key in tree if key in settings):
        found += _equal_keys(tree[key], value, key)
    return [f'{key}.{below}' if below else key for key in found]


def _equal_keys(node, value, key) -> Iterator[str]:
    if comparable(node) == value:
        yield key
    elif isinstance(node, dict):
        for name, child in node.items():
            yield from _equal_keys(child, value, f'{key}.{name}')
    elif isinstance(node, (list, tuple)):
        for index, child in enumerate(node):
            yield from _equal_keys(child, value, f'{key}.{index}')


def comparable(node):
    """``node`` with lists for tuples and without the ``_scope_`` keys mmengine adds to
    variables it inherits from another package's base (``mmseg::``); a boolean tagged, as
    Python finds ``True == 1``."""
    if isinstance(node, bool):
        return ('bool', node)
    if isinstance(node, dict):
        return {key: comparable(value) for key, value in node.items() if key != '_scope_'}
    if isinstance(node, (list, tuple)):
        return [comparable(value) for value in node]
    return node


def _set_by(key, cfg_options) -> bool:
    """Whether an option sets ``key``, a part of it or the setting it is in."""
    return any(option == key or option.startswith(f'{key}.') or key.startswith(f'{option}.')
               for option in cfg_options)
