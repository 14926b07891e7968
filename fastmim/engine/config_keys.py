"""Name the config entry behind a module's refusal of a key it does not take.

Python names the class whose ``__init__`` refused the keyword, often a base of the class the
config names (``BaseDataset`` for an ``ImageFolder``), and nothing says where in the config the
key is or how to drop it: ``--cfg-options`` can change a key but not remove one, so switching a
dataset's ``type`` on the command line keeps the old type's arguments.
"""
import re
from contextlib import contextmanager
from typing import Iterator, Tuple

from mmengine import registry as mmengine_registries

_UNEXPECTED_KEY = re.compile(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'")


@contextmanager
def refused_keys_located(cfg) -> Iterator[None]:
    """Raise a ``TypeError`` for a refused key again with the entries of ``cfg`` that set it
    in front (``train_dataloader.dataset (ImageFolder) sets num_samples, which it does not
    take: ...``) and how to remove it. Other errors pass unchanged."""
    try:
        yield
    except TypeError as error:
        match = _UNEXPECTED_KEY.search(str(error))
        entries = _entries_setting(cfg, match[2], match[1]) if match else []
        if not entries:
            raise
        where = ', '.join(f'{path} ({type_name})' for path, type_name in entries)
        raise TypeError(
            f'{where} sets {match[2]}, which it does not take: {error}; remove the key from the '
            f'config (--cfg-options can change a key but not remove one; a config that '
            f'inherits this one can: dict(_delete_=True, type=..., ...))') from error


def _entries_setting(cfg, key: str, refusing_class: str):
    """``(path, type name)`` of each dict under ``cfg`` with a ``type`` and ``key``, left out
    those whose type is a registered class that is no ``refusing_class`` (by its bases)."""
    entries = []
    for path, node in _typed_dicts(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg, ''):
        if key not in node:
            continue
        type_name = node['type'] if isinstance(node['type'], str) else node['type'].__name__
        classes = ([node['type']] if isinstance(node['type'], type)
                   else list(_registered_classes(type_name.rsplit('.', 1)[-1])))
        if not classes or any(refusing_class in (base.__name__ for base in cls.__mro__)
                              for cls in classes):
            entries.append((path, type_name))
    return entries


def _typed_dicts(node, path: str) -> Iterator[Tuple[str, dict]]:
    if isinstance(node, dict):
        if 'type' in node:
            yield path, node
        for name, value in node.items():
            yield from _typed_dicts(value, f'{path}.{name}' if path else str(name))
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _typed_dicts(value, f'{path}.{index}')


def _registered_classes(name: str):
    """The classes registered as ``name`` in any scope of mmengine's root registries."""
    for root in vars(mmengine_registries).values():
        if isinstance(root, mmengine_registries.Registry):
            for table in [root.module_dict, *(child.module_dict
                                              for child in root.children.values())]:
                if isinstance(table.get(name), type):
                    yield table[name]
