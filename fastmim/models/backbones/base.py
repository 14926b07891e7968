"""Helpers the backbones share. The contract they keep is
:class:`~fastmim.models.utils.backbone_contract.BackboneContract`, beside the central code that
asks it."""
import inspect
import numbers
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union


def normalise_out_indices(owner: str, out_indices: Union[int, Sequence[int]], count: int,
                          what: str = 'stages') -> List[int]:
    """Sorted, unique, non-negative indices; negative ones count from the end (``-1`` = last).
    One int is that one index, as mmpretrain's backbones take it (and as ``--cfg-options
    model.backbone.out_indices=-1`` gives it). Out-of-range indices raise an error naming
    ``owner`` and how many ``what`` it has."""
    indices = [int(index) for index in as_index_tuple(out_indices)]
    if not indices:
        raise ValueError(f'{owner}: out_indices is empty; give at least one of 0..{count - 1}')
    for index in indices:
        if not -count <= index < count:
            raise ValueError(f'{owner}: out index {index} is out of range for {count} {what}')
    return sorted({index % count for index in indices})


def last_out_index(owner: type, settings: dict, count: int) -> Optional[int]:
    """The last of a config entry's ``out_indices`` (the constructor's default where it sets
    none), normalised as :func:`normalise_out_indices` normalises them for ``count`` stages:
    the map whose stride a class states without being built. None where the constructor
    refuses them."""
    given = settings.get('out_indices', constructor_default(owner, 'out_indices'))
    try:
        return normalise_out_indices(owner.__name__, given, count)[-1]
    except (ValueError, TypeError):
        return None


def constructor_default(owner: type, name: str):
    """The default of argument ``name`` of ``owner``'s constructor."""
    return inspect.signature(owner.__init__).parameters[name].default


def as_index_tuple(out_indices: Union[int, Sequence[int]]) -> Tuple[int, ...]:
    """``out_indices`` as a tuple: one int is a 1-tuple."""
    return (out_indices, ) if isinstance(out_indices, int) else tuple(out_indices)


def reject_fixed_arguments(owner: str, kwargs: Iterable[str], fixed: Sequence[str],
                           why: str) -> None:
    """Refuse arguments of the wrapped timm class that the backbone sets itself."""
    given = sorted(set(fixed) & set(kwargs))
    if given:
        raise ValueError(f'{owner}: arguments {given} are fixed by this backbone ({why})')


def check_drop_path_rate(rate: float, owner: str) -> None:
    """Stochastic depth drops a block with a probability rising to ``rate``: one outside
    [0, 1) would fail only at the first training step, inside torch's ``bernoulli_`` ('expects
    p to be in [0, 1]'), and at 1 every kept path would be divided by 0."""
    if not isinstance(rate, numbers.Real) or isinstance(rate, bool) or not 0 <= rate < 1:
        raise ValueError(f'{owner}: drop_path_rate must be a number in [0, 1) (0.1 fine-tunes '
                         f'ViT-B and Swin-B), got {rate!r}')


def check_img_size(owner: str, img_size, stated: Optional[Tuple[str, int]]) -> None:
    """Refuse a construction size ``model.backbone.img_size`` whose height or width is no
    multiple of what the backbone's inputs must be multiples of (``stated``: the class's
    ``input_multiple``, a patch size or a total stride), as every backbone that states one
    does when built. A patch convolution takes whole patches only and leaves the pixels past
    them out without a word (225 px for Swin: the last row and column; 130 px for a ViT/16: a
    position grid of 8 x 8 recorded as built for 130), and the size is recorded in the
    checkpoints' geometry. The config load asks the same classmethod, so it refuses the same
    sizes before any work starts. A size or multiple of another form is left to the
    backbone."""
    sides = _sides(img_size)
    if stated is None or sides is None or not isinstance(stated[1], int):
        return
    source, multiple = stated
    if not any(side % multiple for side in sides):
        return
    below = tuple(side - side % multiple for side in sides)
    above = tuple(low + multiple if side % multiple else side for low, side in zip(below, sides))
    one_side = isinstance(img_size, int)  # shown as given: 225, or (128, 130)
    choices = ' or '.join(str(pair[0] if one_side else pair)
                          for pair in (below, above) if all(pair))
    raise ValueError(f'{owner}: model.backbone.img_size '
                     f'{sides[0] if one_side else sides} is no multiple of {multiple} ({source}), '
                     f'which the height and width of every input must be: use {choices}')


def _sides(img_size) -> Optional[Tuple[int, int]]:
    """``(h, w)`` of an ``img_size`` given as one int or a pair of ints; None otherwise."""
    pair = (img_size, img_size) if not isinstance(img_size, (list, tuple)) else tuple(img_size)
    if len(pair) != 2 or not all(isinstance(side, int) and not isinstance(side, bool)
                                 for side in pair):
        return None
    return pair


def plain_size(size: Sequence[int]) -> Union[int, list]:
    """An (h, w) size as checkpoint metadata stores it: one int when square, else ``[h, w]``."""
    height, width = (int(s) for s in size)
    return height if height == width else [height, width]


def plain(value):
    """``value`` with tuples turned into lists, as checkpoint metadata stores configs."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def staged_layer_id(name: str, stem_names: Sequence[str], stages_name: str,
                    depths: Sequence[int], members: Optional[Dict[str, str]] = None) -> int:
    """Layer id of parameter ``name`` in a staged backbone whose stage ``s`` is
    ``<stages_name>.s`` with ``blocks`` (SimMIM's / FastMIM's Swin scheme).

    The stem is 0; block ``j`` of stage ``s`` is ``(blocks before s) + j + 1``; anything after
    the stages is ``sum(depths) + 1``. Another member of a stage takes its place from
    ``members`` (member name -> position): ``'before'`` (the default; what opens the stage, e.g.
    patch merging, shares the id of the last block before it), ``'first_block'`` (read by every
    block, so its earliest user), ``'last_block'`` (what closes the stage).
    """
    parts = name.split('.')
    if parts[0] in stem_names:
        return 0
    if parts[0] != stages_name:
        return sum(depths) + 1
    stage = int(parts[1])
    start = sum(depths[:stage])
    if parts[2] == 'blocks':
        return start + int(parts[3]) + 1
    position = (members or {}).get(parts[2], 'before')
    return start + {'before': 0, 'first_block': 1, 'last_block': depths[stage]}[position]


def resolution_source(geometry: Optional[dict], owner_type: str) -> Optional[dict]:
    """``geometry`` when it describes a backbone of ``owner_type`` (so its sizes apply), else
    None: sizes are then inferred from the tensors' shapes."""
    if isinstance(geometry, dict) and geometry.get('type') == owner_type:
        return geometry
    return None


def staged_stage_of(name: str, stem_names: Sequence[str], stages_name: str,
                    num_stages: int) -> Optional[int]:
    """``stage_of(name)`` (for ``frozen_stages``) in a backbone whose stage ``s`` (1-based) is
    ``<stages_name>.<s - 1>``: the top-level ``stem_names`` are 0, ``<stages_name>.i...`` is
    ``i + 1``, the list itself and the backbone (``''``) are None (they span stages), anything
    else (a final norm, timm's empty head) is ``num_stages``: frozen with every stage only."""
    if not name:
        return None
    parts = name.split('.')
    if parts[0] in stem_names:
        return 0
    if parts[0] == stages_name:
        return int(parts[1]) + 1 if len(parts) > 1 else None
    return num_stages
