"""Reading a backbone's architecture from the shapes of its weights.

A foreign checkpoint (the reference release's) names no architecture: its widths, depths,
windows and heads are read from tensor shapes, and the backbone they describe is built on the
meta device to check every converted tensor. Each backbone knows which of its tensors tell what
(its ``from_reference_encoder``); these are the shared steps. Errors are ``CheckpointError``
naming the file.
"""
import math
import re
from typing import Dict, Optional, Sequence

import torch
from mmengine.registry import DefaultScope
from torch import nn

from fastmim.errors import CheckpointError
from fastmim.load_problems import LoadProblems, shapes
from fastmim.registry import MODELS


StateDict = Dict[str, torch.Tensor]


def require_keys(state: StateDict, keys: Sequence[str], path, what: str) -> None:
    absent = [key for key in keys if key not in state]
    if absent:
        raise CheckpointError(f'{path}: not a {what} state dict, it lacks {absent}')


def tensor_at(state: StateDict, key: str, path) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f'{path}: expected key {key!r} is missing')
    return state[key]


def count_indices(state: StateDict, pattern: str) -> int:
    """1 + the largest index captured by ``pattern`` at the start of any key."""
    indices = [int(match[1]) for match in map(re.compile(pattern).match, state) if match]
    return max(indices) + 1 if indices else 0


def square_side(count: int, what: str, path) -> int:
    side = math.isqrt(int(count))
    if side * side != count:
        raise CheckpointError(f'{path}: {what} ({count}) are not a square grid')
    return side


def mlp_ratio(hidden, dims: Sequence[int], path) -> float:
    """The MLP ratio r with int(dim * r) == hidden for every (hidden, dim), as the models
    compute hidden widths."""
    hidden = [hidden] * len(dims) if isinstance(hidden, int) else list(hidden)
    ratio = hidden[0] / dims[0]
    while int(dims[0] * ratio) < hidden[0]:
        ratio = math.nextafter(ratio, math.inf)
    if any(int(dim * ratio) != width for dim, width in zip(dims, hidden)):
        raise CheckpointError(f'{path}: the MLP widths {hidden} of widths {dims} do not share '
                              'one ratio')
    return ratio


def single_value(values, what: str):
    """The one value of ``values`` (None stays None): for an argument given per block of an
    architecture that has one for all."""
    if values is None:
        return None
    values = list(values)
    if len(set(values)) != 1:
        raise CheckpointError(f'{what} has one number of heads for every block, got {values}')
    return values[0]


def check_given_size(given, inferred, source: str, path) -> None:
    if given is not None and given != inferred:
        raise CheckpointError(f'{path}: --img-size {given} contradicts {source}, which were '
                              f'built for {inferred} px')


def build_matching(base: dict, custom: dict, state: StateDict, path,
                   try_published: bool = True, guesses: Optional[dict] = None) -> nn.Module:
    """The backbone (on the meta device) whose weights have exactly the shapes of ``state``:
    a published size when one matches (so the geometry names it), else the custom arch, whose
    entries the weights leave ``None`` come from ``guesses``."""
    if try_published:
        backbone_class = MODELS.get(base['type'])
        for name, settings in backbone_class.published_archs.items():
            if not _same_size(settings, custom, backbone_class.size_keys):
                continue  # quick reject before building
            model = build_on_meta(dict(base, arch=name))
            if model is not None and shapes(model.state_dict()) == shapes(state):
                return model
    custom = {key: (guesses or {}).get(key) if value is None else value
              for key, value in custom.items()}
    if any(value is None for value in custom.values()):
        unknown = sorted(key for key, value in custom.items() if value is None)
        raise CheckpointError(f'{path}: the weights match no published {base["type"]} size and '
                              f'do not determine {unknown}; pass them (--num-heads)')
    return build_on_meta(dict(base, arch=custom), strict=True)


def _same_size(published: dict, custom: dict, size_keys: Sequence[str]) -> bool:
    """Whether a published arch can be the one the weights describe: the entries that set the
    backbone's size (its ``size_keys``) agree wherever the weights determine them (a ``None``
    in ``custom``, PVTv2's heads, is left to the shape comparison). Ratios and other settings
    are compared through the shapes of the built model."""
    def plain(value):
        return list(value) if isinstance(value, (list, tuple)) else value

    return all(plain(published[key]) == plain(custom[key]) for key in size_keys
               if key in published and custom.get(key) is not None)


def build_on_meta(cfg: dict, strict: bool = False) -> Optional[nn.Module]:
    """Build a fastmim module without allocating its weights; None for an invalid published
    combo. In fastmim's scope, whatever the current one: from an mmdet config, ``SwinTransformer``
    would otherwise be mmdet's own Swin."""
    try:
        with torch.device('meta'), DefaultScope.overwrite_default_scope('fastmim'):
            return MODELS.build(cfg)
    except (ValueError, TypeError, AssertionError) as error:
        if strict:
            raise CheckpointError(f'the weights describe a {cfg["type"]} that cannot be built '
                                  f'({cfg}): {error}') from None
        return None


def check_state_matches(state: StateDict, model: nn.Module, path, source: str) -> None:
    """Raise one CheckpointError if ``state`` does not have exactly the model's keys and shapes;
    ``source`` says where the state came from."""
    report = LoadProblems.compare(dict(sorted(shapes(state).items())),
                                  dict(sorted(shapes(model.state_dict()).items())))
    if report:
        raise CheckpointError(report.message(path, type(model).__name__, source))
