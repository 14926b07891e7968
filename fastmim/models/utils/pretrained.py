"""Load pre-trained weights into a backbone, resizing what depends on the input size.

FastMIM pre-trains at low resolution (128 px) and fine-tunes or transfers at another (224 px,
detection, segmentation), so a plain ``load_state_dict`` fails on the tensors tied to a token
grid or a window. :func:`load_pretrained` loads

- fastmim / mmengine checkpoints ``{'state_dict', 'meta'}``: pre-training ones hold
  ``backbone.*``, ``neck.*``, ``target_generator.*`` and ``mask_token``, and ``meta['geometry']``
  (written by ``CheckpointMetaHook`` from ``FastMIM.geometry()``) says which grid and windows the
  tensors were built for;
- timm-format state dicts (a plain name -> tensor mapping: ``tools/convert/to_timm.py`` output,
  timm classifier weights), the original Swin and PVTv2 layouts included (converted by timm's own
  ``checkpoint_filter_fn``);
- reference-release checkpoints (ggjy/FastMIM.pytorch, MAE-style ``{'model': state_dict}``),
  converted by :func:`~fastmim.models.utils.reference.convert_reference_checkpoint`;

and then, for the target model,

- resizes ViT's ``pos_embed`` (bicubic, class token kept), Swin's
  ``relative_position_bias_table`` (bicubic over the offset grid) and CMT's
  ``relative_position_bias`` (:func:`~fastmim.models.backbones.cmt.resize_relative_position_bias`);
- drops what the target rebuilds itself: Swin's ``relative_position_index`` and ``attn_mask``
  buffers, and a frozen sin-cos ``pos_embed`` of the target; and what the target switched off:
  the weights of a module it has as ``nn.Identity`` (ViT fine-tuning with ``final_norm=False``
  replaces the final norm by a ``fc_norm`` after pooling, as MAE does);
- reports every other disagreement (unexpected key, missing key not allowed, shape that no
  rule transfers) in one :class:`~fastmim.engine.checkpoint.CheckpointError` that names the
  file, the keys and the shapes, instead of loading half a model.
"""
import logging
import math
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from mmengine.model.weight_init import update_init_info
from mmengine.runner.checkpoint import _load_checkpoint
from torch import nn

from fastmim.errors import CheckpointError
from fastmim.models.backbones import cmt as cmt_backbone
from fastmim.registry import WEIGHT_INITIALIZERS

from .load_problems import LoadProblems, listing
from .reference import (TIMM_CLASSIFIER_PREFIXES, convert_reference_checkpoint,
                        is_reference_pretraining, original_to_timm_names)
from .resize import resize_pos_embed, resize_relative_position_bias_table

# Parts of a pre-training checkpoint that no downstream model has.
PRETRAINING_ONLY = ('neck.*', 'target_generator.*', 'mask_token')
# Buffers a target computes from its own geometry; a checkpoint's copy is stale or absent.
REBUILT_BUFFERS = ('relative_position_index', 'attn_mask')


# --------------------------------------------------------------------------------------------
# Reading a checkpoint, whatever its format
# --------------------------------------------------------------------------------------------
@dataclass
class SourceWeights:
    """The weights of a checkpoint as fastmim names them, plus what is known of their geometry.

    ``state`` keys are as in a fastmim checkpoint (``backbone.*``, ``neck.*``, ...); ``geometry``
    is the backbone's ``geometry()`` at save time, or None when the file does not say.
    """
    state: Dict[str, torch.Tensor]
    geometry: Optional[dict]
    format: str


def read_checkpoint(checkpoint, path: str, prefix: str = 'backbone.') -> SourceWeights:
    """Recognise the format of a loaded checkpoint and return its weights in fastmim naming.

    A timm-format state dict holds one backbone's weights without a prefix: they are put under
    ``prefix``, except the classifier (``head.*``, ``fc_norm.*``), which is left outside it.
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'{path} holds a {type(checkpoint).__name__}, not a dict of weights')
    if isinstance(checkpoint.get('state_dict'), dict):
        geometry = (checkpoint.get('meta') or {}).get('geometry')
        return SourceWeights(dict(checkpoint['state_dict']), backbone_geometry(geometry), 'fastmim')
    if isinstance(checkpoint.get('model'), dict):
        if is_reference_pretraining(checkpoint['model']):
            converted = convert_reference_checkpoint(checkpoint, path)
            return SourceWeights(converted['state_dict'],
                                 converted['meta']['geometry']['backbone'], 'reference')
        # Other releases (MAE, DeiT, Swin classifiers) keep a plain state dict under 'model'.
        checkpoint = checkpoint['model']
    if checkpoint and all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        if prefix and any(key.startswith(prefix) for key in checkpoint):
            return SourceWeights(dict(checkpoint), None, 'state_dict')
        state = original_to_timm_names(checkpoint, path)
        return SourceWeights(
            {key if key.startswith(TIMM_CLASSIFIER_PREFIXES) else prefix + key: value
             for key, value in state.items()}, None, 'timm')
    raise CheckpointError(
        f'{path}: not a checkpoint format fastmim knows: expected a dict with "state_dict" '
        f'(fastmim / mmengine), "model" (reference release) or a name -> tensor mapping (timm); '
        f'found keys {listing(sorted(map(str, checkpoint)))}')


def backbone_geometry(geometry: Optional[dict]) -> Optional[dict]:
    """The backbone part of ``meta['geometry']``: FastMIM nests it under ``backbone``."""
    if not isinstance(geometry, dict):
        return None
    nested = geometry.get('backbone')
    if isinstance(nested, dict):
        return nested
    return geometry if 'type' in geometry else None


# --------------------------------------------------------------------------------------------
# Transferring weights into a target model
# --------------------------------------------------------------------------------------------
@dataclass
class TransferredState:
    """Weights ready for ``load_state_dict`` and what was done to get them."""
    state: Dict[str, torch.Tensor]
    resized: Dict[str, Tuple[tuple, tuple]]
    rebuilt: List[str]
    problems: LoadProblems
    mismatched_keys: List[str] = field(default_factory=list)
    switched_off: List[str] = field(default_factory=list)


def transfer_state(state: Dict[str, torch.Tensor], model: nn.Module,
                   geometry: Optional[dict] = None) -> TransferredState:
    """Match ``state`` (keys relative to ``model``) to the model's parameters and buffers.

    Equal shapes load as they are; position embeddings and relative-position tensors are
    resized to the model's grid or window (source sizes from ``geometry`` when it has them, else
    inferred as square); buffers the model rebuilds are skipped, and so are the weights of a
    module the model replaced by ``nn.Identity`` (fine-tuning with ``final_norm=False`` drops
    the final norm for a ``fc_norm``, as MAE does). Missing keys are not judged here (see
    :func:`load_pretrained`).
    """
    target = model.state_dict()
    result = TransferredState({}, {}, [], LoadProblems())
    for key, value in state.items():
        if key.endswith(REBUILT_BUFFERS):
            continue
        if key not in target:
            if isinstance(_submodule(model, key.rpartition('.')[0]), nn.Identity):
                result.switched_off.append(key)
            else:
                result.problems.unexpected.append(f'{key} {tuple(value.shape)}')
            continue
        owner = model.get_submodule(key.rpartition('.')[0])
        if key.endswith('pos_embed') and getattr(owner, 'pos_embed_type', None) == 'sincos':
            result.rebuilt.append(key)  # a frozen table the model computes for its own grid
            continue
        wanted = tuple(target[key].shape)
        if tuple(value.shape) == wanted:
            result.state[key] = value
            continue
        try:
            resized = _resize_for(key, value, owner, wanted, geometry)
        except ValueError as error:
            result.problems.mismatched.append(
                f'{key}: checkpoint {tuple(value.shape)} vs model {wanted} ({error})')
            result.mismatched_keys.append(key)
            continue
        result.state[key] = resized
        result.resized[key] = (tuple(value.shape), wanted)
    return result


def _resize_for(key, value, owner, wanted, geometry):
    name = key.rpartition('.')[2]
    if name == 'pos_embed':
        resized = _resize_pos_embed(value, owner, geometry)
    elif name == 'relative_position_bias_table':
        resized = _resize_swin_table(key, value, owner, geometry)
    elif name == 'relative_position_bias':
        resized = _resize_cmt_bias(key, value, owner, wanted, geometry)
    else:
        raise ValueError('no resize rule for this tensor')
    if tuple(resized.shape) != wanted:
        raise ValueError(f'resized to {tuple(resized.shape)}, not the model shape')
    return resized


def _resize_pos_embed(value, owner, geometry):
    prefix_tokens = getattr(owner, 'num_prefix_tokens', 1)
    target_grid = tuple(owner.patch_embed.grid_size)
    if value.shape[-1] != owner.pos_embed.shape[-1]:
        raise ValueError('the embedding widths differ')
    source_grid = (geometry or {}).get('pos_embed_grid')
    if not source_grid or math.prod(source_grid) != value.shape[1] - prefix_tokens:
        side = math.isqrt(value.shape[1] - prefix_tokens)
        if side * side != value.shape[1] - prefix_tokens:
            raise ValueError(f'{value.shape[1] - prefix_tokens} patch tokens are not a square '
                             f'grid and the checkpoint geometry does not give the grid')
        source_grid = (side, side)
    return resize_pos_embed(value, source_grid, target_grid, prefix_tokens)


def _resize_swin_table(key, value, owner, geometry):
    if value.dim() != 2 or value.shape[1] != owner.relative_position_bias_table.shape[1]:
        raise ValueError('the numbers of heads differ')
    source = None
    stage = re.search(r'(?:^|\.)layers\.(\d+)\.', key)
    windows = (geometry or {}).get('stage_window_sizes')
    if stage and windows and int(stage[1]) < len(windows):
        source = tuple(windows[int(stage[1])])
        if (2 * source[0] - 1) * (2 * source[1] - 1) != value.shape[0]:
            source = None
    if source is None:
        side = math.isqrt(value.shape[0])
        if side * side != value.shape[0] or side % 2 == 0:
            raise ValueError(f'{value.shape[0]} rows are not (2w-1)^2 for a square window w and '
                             'the checkpoint geometry does not give the window')
        source = ((side + 1) // 2, ) * 2
    return resize_relative_position_bias_table(value, source, tuple(owner.window_size))


def _resize_cmt_bias(key, value, owner, wanted, geometry):
    if not hasattr(owner, 'query_grid'):
        raise ValueError('the owning module is not a CMT stage')
    source_grid = None
    stage = re.search(r'(?:^|\.)stages\.(\d+)\.', key)
    size = (geometry or {}).get('img_size')
    if stage and size is not None and (geometry or {}).get('type') == 'CMT':
        height, width = (size, size) if isinstance(size, int) else size
        stride = cmt_backbone.STAGE_STRIDES[int(stage[1])]
        source_grid = (height // stride, width // stride)
        if source_grid[0] * source_grid[1] != value.shape[1]:
            source_grid = None
    return cmt_backbone.resize_relative_position_bias(
        value, wanted, old_query_grid=source_grid, new_query_grid=tuple(owner.query_grid))


# --------------------------------------------------------------------------------------------
# The entry points: a function and an mmengine weight initializer
# --------------------------------------------------------------------------------------------
@dataclass
class LoadSummary:
    """What :func:`load_pretrained` did, for logs and tests."""
    loaded: List[str]
    resized: Dict[str, Tuple[tuple, tuple]]
    rebuilt: List[str]
    left_out: List[str]
    missing_allowed: List[str]


def load_pretrained(model_or_backbone: nn.Module,
                    checkpoint_path: str,
                    prefix: str = 'backbone.',
                    allow_missing: Sequence[str] = (),
                    map_location='cpu',
                    logger='current') -> LoadSummary:
    """Load the weights under ``prefix`` of a checkpoint into a model, across resolutions.

    Args:
        model_or_backbone: the module to load into; checkpoint keys under ``prefix`` (with the
            prefix removed) must name its parameters and buffers.
        checkpoint_path: a fastmim / mmengine checkpoint, a timm-format state dict or a
            reference-release checkpoint (see the module docstring). Loaded weights-only.
        prefix: which part of the checkpoint to load: ``'backbone.'`` for a backbone, ``''``
            for a whole model. Keys outside it (the decoder ``neck.*``, ``mask_token``, a
            classifier ``head.*``) are left out and logged once at INFO; so are the pre-training
            parts ``neck.*``, ``target_generator.*`` and ``mask_token`` inside it, and the
            weights of modules the model replaced by ``nn.Identity`` (ViT ``norm`` with
            ``final_norm=False``).
        allow_missing: glob patterns (e.g. ``'head.*'``, ``'fc_norm.*'``) of model keys that
            the checkpoint may lack: new layers that keep their initialisation.
        map_location: passed to the loader.
        logger: where the INFO summary goes (mmengine ``print_log`` logger).

    Raises:
        CheckpointError: the file cannot be read, or it does not fit the model: one message
            naming the file and every unexpected key, missing key and untransferable shape.
    """
    checkpoint = _load_checkpoint(checkpoint_path, map_location=map_location)
    source = read_checkpoint(checkpoint, checkpoint_path, prefix)
    selected, left_out = {}, []
    for key, value in source.state.items():
        if not key.startswith(prefix) or _matches(key, PRETRAINING_ONLY):
            left_out.append(key)
        else:
            selected[key[len(prefix):]] = value
    target_name = type(model_or_backbone).__name__
    if not selected:
        raise CheckpointError(
            f'{checkpoint_path} has no weights under the prefix {prefix!r} for {target_name}; '
            f'its top-level names are {listing(_groups(source.state))}')

    transferred = transfer_state(selected, model_or_backbone, source.geometry)
    missing, missing_allowed = [], []
    provided = set(transferred.state) | set(transferred.rebuilt) | set(transferred.mismatched_keys)
    for key, value in model_or_backbone.state_dict().items():
        if key in provided:
            continue
        if _matches(key, allow_missing):
            missing_allowed.append(key)
        else:
            missing.append(f'{key} {tuple(value.shape)}')
    transferred.problems.missing = missing
    if transferred.problems:
        how = f'prefix {prefix!r}, allow_missing={tuple(allow_missing)}'
        raise CheckpointError(transferred.problems.message(checkpoint_path, target_name, how))

    model_or_backbone.load_state_dict(transferred.state, strict=False)
    summary = LoadSummary(sorted(transferred.state), transferred.resized, transferred.rebuilt,
                          sorted(left_out + [prefix + key for key in transferred.switched_off]),
                          missing_allowed)
    print_log(_summary_line(checkpoint_path, target_name, source.format, summary), logger=logger,
              level=logging.INFO)
    return summary


def _summary_line(path, target, source_format, summary: LoadSummary) -> str:
    parts = [f'loaded {len(summary.loaded)} tensors of {path} ({source_format} format) '
             f'into {target}']
    if summary.resized:
        resized = [f'{key} {old}->{new}' for key, (old, new) in summary.resized.items()]
        parts.append('resized ' + ', '.join(resized[:3]) +
                     (f' and {len(resized) - 3} more' if len(resized) > 3 else ''))
    if summary.rebuilt:
        parts.append('kept the model\'s own ' + ', '.join(summary.rebuilt))
    if summary.left_out:
        parts.append('left out ' + ', '.join(_groups(summary.left_out, count=True)))
    if summary.missing_allowed:
        parts.append('kept initialised ' + ', '.join(_groups(summary.missing_allowed,
                                                             count=True)))
    return '; '.join(parts)


@WEIGHT_INITIALIZERS.register_module(name='FastMIMPretrained')
class FastMIMPretrainedInit:
    """mmengine weight initializer: ``init_cfg=dict(type='FastMIMPretrained', checkpoint=...)``.

    Like mmengine's ``Pretrained``, but through :func:`load_pretrained`: any of its formats,
    position-embedding / relative-bias resizing, and an error instead of a silent partial load.
    From mmdet / mmseg configs (another default scope) write ``type='fastmim.FastMIMPretrained'``.

    Args:
        checkpoint: path of the checkpoint.
        prefix: part of the checkpoint to load, ``'backbone.'`` by default.
        allow_missing: glob patterns of the module's keys that may stay initialised.
        map_location: passed to the loader.
    """

    def __init__(self, checkpoint: str, prefix: str = 'backbone.',
                 allow_missing: Sequence[str] = (), map_location='cpu'):
        self.checkpoint = checkpoint
        self.prefix = prefix
        self.allow_missing = tuple(allow_missing)
        self.map_location = map_location

    def __call__(self, module: nn.Module) -> None:
        load_pretrained(module, self.checkpoint, prefix=self.prefix,
                        allow_missing=self.allow_missing, map_location=self.map_location)
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=f'FastMIMPretrained: loaded {self.prefix!r} '
                             f'from {self.checkpoint}')


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def _submodule(model: nn.Module, name: str) -> Optional[nn.Module]:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(key, pattern) for pattern in patterns)


def _groups(keys, count: bool = False) -> List[str]:
    """Top-level names of keys (``neck``, ``mask_token``), with tensor counts if asked."""
    counts: Dict[str, int] = {}
    for key in keys:
        group = key.split('.')[0]
        counts[group] = counts.get(group, 0) + 1
    return [f'{group} ({n})' if count else group for group, n in counts.items()]
