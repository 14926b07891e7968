"""Backbone sizes: a published name (``'b'``, ``'base'``, ``'b2'``) or a dict of widths."""
import difflib
import inspect
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union


def resolve_arch(owner: str,
                 arch: Union[str, dict],
                 archs: Mapping[str, dict],
                 required_keys: Sequence[str],
                 aliases: Optional[Mapping[str, str]] = None,
                 optional_keys: Optional[Sequence[str]] = None,
                 own_arguments: Sequence[str] = ()) -> Dict:
    """A copy of the settings that ``arch`` names, or of ``arch`` itself when it is a dict.

    Names are case-insensitive and may be an alias (``'base'`` for ``'b'``). A dict must hold
    every key of ``required_keys``; when ``optional_keys`` is given, any other key is rejected
    too (a misspelt width would otherwise be silently ignored). ``own_arguments`` are the
    keywords the backbone hands its timm model from its own argument of the same name
    (``img_size``): a dict holding one would reach timm twice, as ``got multiple values for
    keyword argument``, so it is refused, naming the argument to use instead. Errors name
    ``owner``, the accepted names and the expected keys.
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
    _reject_own_arguments(owner, arch, own_arguments)
    missing = [key for key in required_keys if key not in arch]
    unknown = (sorted(set(arch) - set(required_keys) - set(optional_keys))
               if optional_keys is not None else [])
    if missing or unknown:
        close = {key: difflib.get_close_matches(key, [*required_keys, *optional_keys], n=1)
                 for key in unknown}
        hint = ', '.join(f'{matches[0]!r} for {key!r}' if len(close) > 1 else repr(matches[0])
                         for key, matches in close.items() if matches)
        problems = ([f'lacks keys {missing}'] if missing else []) + (
            [f'has unknown keys {unknown}' + (f' (did you mean {hint}?)' if hint else '')]
            if unknown else [])
        optional = f' (optionally {list(optional_keys)})' if optional_keys else ''
        raise ValueError(f'{owner}: arch dict {dict(arch)} ' + ' and '.join(problems)
                         + f'; expected keys {list(required_keys)}{optional}')
    return dict(arch)


def timm_arch_keys(timm_class: type, fixed: Sequence[str]) -> Tuple[str, ...]:
    """The keyword arguments of ``timm_class``'s constructor less ``fixed`` (those the backbone
    sets): what an arch dict may add to its sizes (``mlp_ratio``, ``qkv_bias``), which the
    backbone hands to timm. A key outside them would reach timm as ``TypeError: __init__() got
    an unexpected keyword argument``, naming neither the arch dict nor the key meant."""
    parameters = inspect.signature(timm_class.__init__).parameters.values()
    return tuple(parameter.name for parameter in parameters
                 if parameter.name not in ('self', *fixed)
                 and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY))


def _reject_own_arguments(owner: str, arch: Mapping, own_arguments: Sequence[str]) -> None:
    """Refuse the keys of an arch dict that the backbone sets from its own arguments."""
    taken = [key for key in arch if key in own_arguments]
    if taken:
        raise ValueError(f'{owner}: ' + '; '.join(
            f"arch dict sets {key!r}, which the backbone sets from its own argument {key}; "
            f"give {key}={arch[key]!r} as the backbone's argument instead" for key in taken))


def reject_keys_given_twice(owner: str, arch: Union[str, dict], arch_cfg: Mapping,
                            timm_kwargs: Mapping) -> None:
    """Refuse a timm argument that both the resolved arch and the backbone's keyword arguments
    set: both go to the timm constructor, which would fail with ``got multiple values for
    keyword argument``, naming neither."""
    twice = [key for key in arch_cfg if key in timm_kwargs]
    if twice:
        raise ValueError(f'{owner}: {twice} set both in arch and as the backbone\'s arguments '
                         f'(arch {arch!r}); give each once (in an arch dict to change a named '
                         f'size)')
