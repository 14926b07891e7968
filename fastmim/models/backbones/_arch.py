"""Backbone sizes: a published name (``'b'``, ``'base'``, ``'b2'``) or a dict of widths."""
from typing import Dict, Mapping, Optional, Sequence, Union


def resolve_arch(owner: str,
                 arch: Union[str, dict],
                 archs: Mapping[str, dict],
                 required_keys: Sequence[str],
                 aliases: Optional[Mapping[str, str]] = None,
                 optional_keys: Optional[Sequence[str]] = None) -> Dict:
    """A copy of the settings that ``arch`` names, or of ``arch`` itself when it is a dict.

    Names are case-insensitive and may be an alias (``'base'`` for ``'b'``). A dict must hold
    every key of ``required_keys``; when ``optional_keys`` is given, any other key is rejected
    too (a misspelt width would otherwise be silently ignored). Errors name ``owner``, the
    accepted names and the expected keys.
    """
    aliases = aliases or {}
    if isinstance(arch, str):
        name = aliases.get(arch.lower(), arch.lower())
        if name not in archs:
            raise ValueError(f'{owner}: unknown arch {arch!r}; expected one of '
                             f'{sorted(archs) + sorted(aliases)} or a dict with keys '
                             f'{list(required_keys)}')
        return dict(archs[name])
    if not isinstance(arch, Mapping):
        raise TypeError(f'{owner}: arch must be a str or a dict, got {type(arch).__name__}')
    missing = [key for key in required_keys if key not in arch]
    unknown = (sorted(set(arch) - set(required_keys) - set(optional_keys))
               if optional_keys is not None else [])
    if missing or unknown:
        problems = ([f'lacks keys {missing}'] if missing else []) + (
            [f'has unknown keys {unknown}'] if unknown else [])
        optional = f' (optionally {list(optional_keys)})' if optional_keys else ''
        raise ValueError(f'{owner}: arch dict {dict(arch)} ' + ' and '.join(problems)
                         + f'; expected keys {list(required_keys)}{optional}')
    return dict(arch)
