"""Name the config entry behind a module's refusal of a key it does not take.

Python names the class whose ``__init__`` refused the keyword, often a base of the class the
config names (``BaseDataset`` for an ``ImageFolder``), and nothing says where in the config the
key is or how to drop it: ``--cfg-options`` can change a key but not remove one, so switching a
dataset's ``type`` on the command line keeps the old type's arguments.
"""
import ast
import difflib
import functools
import importlib
import inspect
import re
import textwrap
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Optional, Tuple

from mmengine import registry as mmengine_registries
from torch.utils.data import DataLoader

from fastmim.registry import type_name

_UNEXPECTED_KEY = re.compile(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'")


@contextmanager
def refused_keys_located(cfg, cfg_options: Optional[dict] = None,
                         name_option: Callable[[str], str] = '--cfg-options {}'.format
                         ) -> Iterator[None]:
    """Raise a ``TypeError`` for a refused key again with the entries of ``cfg`` that set it
    in front (``train_dataloader.dataset (ImageFolder) sets num_samples, which it does not
    take: ...``) and how to remove it, or what the class advises instead
    (:func:`_refusal_hint`); a key that ``cfg_options`` (``--cfg-options``) set is
    named as the command line's, with the names the entry does take that are close to it.
    ``name_option`` words a key of ``cfg_options`` as its user typed it (a Python API takes
    them as keyword arguments). Other errors pass unchanged."""
    try:
        yield
    except TypeError as error:
        match = _UNEXPECTED_KEY.search(str(error))
        entries = _entries_setting(cfg, match[2], match[1]) if match else []
        if not entries:
            raise
        key = match[2]
        typed_on_command_line = next(
            ((path, node, option) for path, node in entries
             if (option := _set_by(cfg_options or {}, f'{path}.{key}'))), None)
        if typed_on_command_line:
            path, node, option = typed_on_command_line
            hint = _refusal_hint(node, key, path)
            raise TypeError(
                f'{path} ({_built_type(node)}) does not take {key}, set by '
                f'{name_option(option)}: {error}; '
                + (hint or f'check the name{_what_it_takes(path, node, key)}')) from error
        where = ', '.join(f'{path} ({_built_type(node)})' for path, node in entries)
        hint = _refusal_hint(entries[0][1], key, entries[0][0])
        raise TypeError(
            f'{where} sets {key}, which it does not take: {error}; ' + (hint or (
                'remove the key from the config (--cfg-options can change a key but not '
                'remove one; a config that inherits this one can: dict(_delete_=True, '
                'type=..., ...))'))) from error


def _set_by(cfg_options: dict, key_path: str) -> Optional[str]:
    """The ``--cfg-options`` key that set ``key_path`` (itself, or a key below it)."""
    return next((option for option in cfg_options
                 if option == key_path or option.startswith(key_path + '.')), None)


def _what_it_takes(path: str, node: dict, key: str) -> str:
    """For a data loader whose dataset takes ``key``, that it belongs there; else ``; did you
    mean 'x'?`` from the arguments of the entry's classes."""
    dataset = node.get('dataset')
    if (_built_type(node) == DataLoader.__name__ and isinstance(dataset, dict)
            and key in _arguments(_classes(dataset))):
        return f' ({path}.dataset takes {key})'
    close = difflib.get_close_matches(key, sorted(_arguments(_classes(node))), n=2)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ''


def _arguments(classes: Iterable[type]) -> set:
    """The keyword arguments of the classes' ``__init__``, their bases' included where
    ``**kwargs`` go on to them (:func:`_init_parameters`), less the keys a class
    refuses though a base takes them (its ``refused_keyword_hints``: the embedded datasets
    pass ``BaseDataset``'s arguments on but refuse its ``data_root``)."""
    names = set()
    for cls in classes:
        own = {parameter.name for parameters in _init_parameters(cls)
               for parameter in parameters or ()
               if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
               and parameter.name != 'self'}
        names |= own - set(getattr(cls, 'refused_keyword_hints', None) or ())
    return names


def _init_parameters(cls: type) -> Iterator[Optional[list]]:
    """The parameters of each ``__init__`` that ``cls(...)`` reaches: its own and, while one
    hands its ``**kwargs`` to a base's (:func:`_hands_kwargs_to_a_base`), the next one in the
    MRO; None for one whose signature cannot be read, after which none is followed."""
    for base in inspect.getmro(cls):
        if '__init__' not in vars(base):
            continue
        try:
            parameters = list(inspect.signature(base.__init__).parameters.values())
        except (TypeError, ValueError):
            yield None
            return
        yield parameters
        if not _hands_kwargs_to_a_base(base.__init__):
            return


@functools.lru_cache(maxsize=None)
def _hands_kwargs_to_a_base(init: Callable) -> bool:
    """Whether ``init`` takes ``**kwargs`` and calls a base's ``__init__`` with them
    (``super().__init__(**kwargs)``, read from its source): the keywords the base names are
    then the class's too. One that keeps them (mmengine's CheckpointHook) or hands them to
    something else (TimmBackbone, to ``timm.create_model``) takes any keyword; so does one
    whose source cannot be read."""
    kwargs = next((parameter.name for parameter in inspect.signature(init).parameters.values()
                   if parameter.kind == parameter.VAR_KEYWORD), None)
    if kwargs is None:
        return False
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
    except (OSError, TypeError, SyntaxError):
        return False
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
               and node.func.attr == '__init__'
               and any(keyword.arg is None and isinstance(keyword.value, ast.Name)
                       and keyword.value.id == kwargs for keyword in node.keywords)
               for node in ast.walk(tree))


def _has_var_keyword(parameters: Iterable[inspect.Parameter]) -> bool:
    return any(parameter.kind == parameter.VAR_KEYWORD for parameter in parameters)


def _refusal_hint(node: dict, key: str, entry: str) -> str:
    """What to do instead of giving ``key`` to the entry ``entry``, as one of its classes
    says in ``refused_keyword_hints`` (``{key: advice}``, the advice formatted with
    ``entry``); empty when none says."""
    for cls in _classes(node):
        hint = (getattr(cls, 'refused_keyword_hints', None) or {}).get(key)
        if hint:
            return hint.format(entry=entry)
    return ''


def _built_type(node: dict) -> str:
    """The class name a config entry builds; an entry without ``type`` is a dataloader
    (``*_dataloader``, which mmengine builds as torch's ``DataLoader``)."""
    return type_name(node.get('type', DataLoader))


def _classes(node: dict) -> list:
    """The classes a config entry's ``type`` may name (registered in any scope)."""
    kind = node.get('type', DataLoader)
    if isinstance(kind, type):
        return [kind]
    return list(_registered_classes(type_name(kind)))


def _entries_setting(cfg, key: str, refusing_class: str):
    """``(path, entry)`` of each dict under ``cfg`` that builds an object (a
    ``type``, or a data loader) and sets ``key``, left out those whose type is a registered
    class that is no ``refusing_class`` (by its bases)."""
    entries = []
    for path, node in _typed_dicts(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg, ''):
        if key not in node:
            continue
        classes = _classes(node)
        if not classes or any(refusing_class in (base.__name__ for base in cls.__mro__)
                              for cls in classes):
            entries.append((path, node))
    return entries


def _typed_dicts(node, path: str) -> Iterator[Tuple[str, dict]]:
    """The dicts under ``node`` that build an object: those with a ``type``, and the data
    loaders (``*_dataloader``, which mmengine builds as torch's ``DataLoader`` without one)."""
    if isinstance(node, dict):
        if 'type' in node or path.rsplit('.', 1)[-1].endswith('dataloader'):
            yield path, node
        for name, value in node.items():
            yield from _typed_dicts(value, f'{path}.{name}' if path else str(name))
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _typed_dicts(value, f'{path}.{index}')


def _registered_classes(name: str):
    """The classes registered as ``name`` in any scope of mmengine's root registries."""
    for root in _root_registries():
        for table in [root.module_dict, *(child.module_dict
                                          for child in root.children.values())]:
            if isinstance(table.get(name), type):
                yield table[name]


# Keys that the builders take from an entry before its class gets the others: the registry's
# type and scope, a hook's priority (Runner.register_hook), a scheduler's conversion to
# iterations (build_iter_from_epoch), an optimiser wrapper's constructor and its settings, a
# norm layer's requires_grad (mmcv's build_norm_layer: norm_cfg=dict(type='SyncBN', ...)).
BUILDER_KEYS = frozenset({'type', '_scope_', 'priority', 'convert_to_iter_based',
                          'constructor', 'paramwise_cfg', 'requires_grad'})


def mistyped_option_keys(tree, cfg_options: dict) -> Iterator[Tuple[str, str, str]]:
    """``(option, refusal, close names)`` for each ``--cfg-options`` key that adds a key to
    an entry of ``tree`` (the config as plain dicts) whose class cannot take it: the entry's
    ``type`` names a registered class (any scope, once fastmim's modules and those of the
    config's ``default_scope`` are imported: :func:`_classes_imported`) and none of the
    classes by that name takes it, by name or through ``**kwargs`` that go on to a base class
    or to the class it names (:func:`_keywords_taken`). mmengine adds the key silently and the
    class would refuse it only when the Runner builds the model, ~190 lines later. The refusal
    carries what the class advises instead of the key (:func:`_refusal_hint`), else the close
    names. A key that a builder takes (:data:`BUILDER_KEYS`), or one under an entry of unknown
    type, is left alone."""
    scope = _default_scope(tree, cfg_options)
    for option, where, key, node in _keys_added_to_typed_entries(tree, cfg_options):
        taken = _keywords_taken(_classes_imported(node, scope))
        if key in BUILDER_KEYS or taken is None or key in taken:
            continue
        refusal = f'{where} ({_built_type(node)}) takes no {key}'
        hint = _refusal_hint(node, key, where)
        if hint:
            yield option, f'{refusal}; {hint}', []
        else:
            yield option, refusal, difflib.get_close_matches(key, sorted(taken), n=2)


def added_arguments(tree, cfg_options: dict) -> set:
    """The keys (``default_hooks.checkpoint.by_epoch``) that ``--cfg-options`` adds to an
    entry whose class names them as arguments, or that a builder takes: an argument the
    config leaves at its default, set on the command line, which needs no typo warning. A
    class that also takes ``**kwargs`` (mmengine's CheckpointHook) counts its named ones.

    Only the first key the config lacks is judged, against the class of the entry it is added
    to: ``model.data_preprocessor.test_cfg.size_divisor=16`` fills in SegDataPreProcessor's
    ``test_cfg``, which the config leaves unset, and the keys below it make a dict that no
    class names the keys of (as one the config sets None: ``_open_unset_settings``), so no
    name is there to compare them with. A key added to a dict the config does set, typed or
    not, is judged by that dict's keys (``added_keys``)."""
    added = set()
    scope = _default_scope(tree, cfg_options)
    for _, where, key, node in _keys_added_to_typed_entries(tree, cfg_options):
        classes = _classes_imported(node, scope)
        if (key in BUILDER_KEYS or key in _arguments(classes)
                or key in (_keywords_taken(classes) or ())):
            added.add(f'{where}.{key}')
    return added


def _keys_added_to_typed_entries(tree, cfg_options: dict
                                 ) -> Iterator[Tuple[str, str, str, dict]]:
    """``(option, entry path, added key, entry as merged)`` for each ``--cfg-options`` key
    whose first part the config lacks lies directly under an entry with a ``type`` (the type
    the options give it, where they replace it)."""
    from fastmim.engine.config_loading import follow_key
    for option in cfg_options:
        parts = option.split('.')
        node, followed = follow_key(tree, option)
        if followed == len(parts) or not isinstance(node, dict) or 'type' not in node:
            continue
        where = '.'.join(parts[:followed])
        yield (option, where, parts[followed],
               {**node, 'type': cfg_options.get(f'{where}.type', node['type'])})


def unknown_option_types(tree, cfg_options: dict, default_scope=None
                         ) -> Iterator[Tuple[str, str, str]]:
    """``(option, refusal, close names)`` for each ``--cfg-options`` key ``...type=Name``
    that replaces a registered type of ``tree`` by a name no registry holding the old one
    knows (``model.backbone.type=VisionTransformr``): mmengine's raw ``KeyError`` would come
    only when the Runner builds the model, with no suggestion. Only fastmim's scope is
    searched: a name of another library's scope (``mmdet.X``, or any name in a config whose
    ``default_scope`` is another library's) may be in a registry not imported yet."""
    from fastmim.engine.config_loading import follow_key
    if default_scope not in (None, 'fastmim'):
        return
    for option, value in cfg_options.items():
        if option.split('.')[-1] != 'type' or not isinstance(value, str):
            continue
        old, followed = follow_key(tree, option)
        new = value[len('fastmim.'):] if value.startswith('fastmim.') else value
        if followed < len(option.split('.')) or not isinstance(old, str) or '.' in new:
            continue
        names = _names_beside(type_name(old))
        if names and new not in names:
            close = difflib.get_close_matches(new, sorted(names), n=3)
            yield option, f'{value} is no registered type where {old} is', close


def _names_beside(name: str) -> set:
    """Every name of the registries (with their parents and children) that hold ``name``,
    once their modules are imported; empty if none holds it."""
    _import_registered_modules()
    names = set()
    for root in _root_registries():
        tables = [root.module_dict, *(child.module_dict for child in root.children.values())]
        if any(name in table for table in tables):
            for table in tables:
                names.update(table)
    return names


def _default_scope(tree, cfg_options: dict):
    """The ``default_scope`` the config has once ``cfg_options`` are merged."""
    return cfg_options.get('default_scope', tree.get('default_scope'))


def _classes_imported(node: dict, default_scope=None) -> list:
    """:func:`_classes`, once fastmim's registries, and those of another library that is the
    config's ``default_scope``, imported the modules they build from (their lazy
    ``locations``): a class is registered only when its module is imported, which mmengine
    does only when the Runner builds from the registry. Without it, the segmentation recipe's
    SegDataPreProcessor was no known class when the config loaded."""
    _import_registered_modules()
    _import_scope_modules(default_scope)
    return _classes(node)


def _import_registered_modules() -> None:
    from fastmim import registry
    _import_locations(registry)


def _import_scope_modules(scope) -> None:
    """Import the modules of the registries of the library ``scope`` names (``mmseg``,
    ``mmdet``); one that is no library, or whose modules fail to import, is left alone: its
    classes stay unknown, and unknown classes are not judged."""
    if not isinstance(scope, str) or not scope.isidentifier() or scope == 'fastmim':
        return
    try:
        _import_locations(importlib.import_module(f'{scope}.registry'))
    except ImportError:
        return


def _import_locations(registries) -> None:
    """Import the modules each registry of the module ``registries`` builds from."""
    for table in vars(registries).values():
        if isinstance(table, mmengine_registries.Registry):
            table.import_from_location()


def _keywords_taken(classes: list) -> Optional[set]:
    """The keywords that one of ``classes`` takes, those its ``**kwargs`` pass on included:
    to the next ``__init__`` of its MRO (:func:`_init_parameters`), or to the class it names as
    ``keywords_passed_to`` (the backbones hand them to their timm class); None when there
    are no classes or one takes any keyword (:func:`_keeps_any_keyword`)."""
    taken = set()
    for cls in classes:
        while _passes_keywords_to_a_class(cls):
            taken |= _arguments([cls])
            cls = cls.keywords_passed_to
        if _keeps_any_keyword(cls):
            return None
        taken |= _arguments([cls])
    return taken if classes else None


def _keeps_any_keyword(cls: type) -> bool:
    """Whether ``cls(...)`` takes keywords that no signature names: its ``**kwargs`` reach
    an ``__init__`` that hands them to no base's (:func:`_hands_kwargs_to_a_base`), or a
    signature cannot be read."""
    takes_kwargs = _signature_takes_kwargs(cls)
    if not takes_kwargs:
        return takes_kwargs is None
    *_, last = _init_parameters(cls)
    return last is None or _has_var_keyword(last)


def _passes_keywords_to_a_class(cls: type) -> bool:
    """Whether ``cls(...)`` takes ``**kwargs`` and names the class they go to as
    ``keywords_passed_to``."""
    return bool(_signature_takes_kwargs(cls)
                and isinstance(getattr(cls, 'keywords_passed_to', None), type))


def _signature_takes_kwargs(cls: type) -> Optional[bool]:
    """Whether the signature of ``cls(...)`` has ``**kwargs``; None when it cannot be read."""
    try:
        return _has_var_keyword(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        return None


def _root_registries():
    return [root for root in vars(mmengine_registries).values()
            if isinstance(root, mmengine_registries.Registry)]
