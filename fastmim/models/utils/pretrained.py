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
  converted by :func:`convert_reference_checkpoint`;

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
from timm.models import pvt_v2 as timm_pvt_v2
from timm.models import swin_transformer as timm_swin
from torch import nn

from fastmim.engine.checkpoint import CheckpointError
from fastmim.models.backbones import cmt as cmt_backbone
from fastmim.models.backbones import pvtv2 as pvtv2_backbone
from fastmim.models.backbones import swin as swin_backbone
from fastmim.models.backbones import vit as vit_backbone
from fastmim.registry import MODELS, WEIGHT_INITIALIZERS

from .resize import resize_pos_embed, resize_relative_position_bias_table

# Parts of a pre-training checkpoint that no downstream model has.
PRETRAINING_ONLY = ('neck.*', 'target_generator.*', 'mask_token')
# Buffers a target computes from its own geometry; a checkpoint's copy is stale or absent.
REBUILT_BUFFERS = ('relative_position_index', 'attn_mask')
# Classifier parts of a timm-format state dict: they sit after the backbone's features.
TIMM_CLASSIFIER_PREFIXES = ('head.', 'fc_norm.')
REFERENCE_RELEASE = 'ggjy/FastMIM.pytorch'
_MAX_LISTED = 12


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
        f'found keys {_listing(sorted(map(str, checkpoint)))}')


def backbone_geometry(geometry: Optional[dict]) -> Optional[dict]:
    """The backbone part of ``meta['geometry']``: FastMIM nests it under ``backbone``."""
    if not isinstance(geometry, dict):
        return None
    nested = geometry.get('backbone')
    if isinstance(nested, dict):
        return nested
    return geometry if 'type' in geometry else None


def original_to_timm_names(state: Dict[str, torch.Tensor], path: str) -> Dict[str, torch.Tensor]:
    """Original Swin (downsample at the end of a stage) and PVTv2 (``patch_embed1``,
    ``block1.0``) layouts -> timm names, through timm's own filters; other layouts unchanged."""
    if 'layers.0.downsample.reduction.weight' in state:
        return _swin_reference_model(state, path, img_size=None)[1]
    if 'patch_embed1.proj.weight' in state:
        return timm_pvt_v2.checkpoint_filter_fn(dict(state), None)  # the model is not used
    return dict(state)


# --------------------------------------------------------------------------------------------
# Reference release (ggjy/FastMIM.pytorch) -> fastmim
# --------------------------------------------------------------------------------------------
# How each reference encoder is recognised: a key only its layout has.
_REFERENCE_MARKERS = {
    'vit': 'blocks.0.attn.qkv.weight',
    'swin': 'encoder.layers.0.blocks.0.attn.relative_position_bias_table',
    'pvtv2': 'encoder.patch_embed1.proj.weight',
    'cmt': 'encoder.stem_conv1.weight',
}


def is_reference_pretraining(state: Dict[str, torch.Tensor]) -> bool:
    """Whether a ``model`` state dict is a pre-training checkpoint of the reference release
    (an encoder of its layout and no classifier), rather than another release's classifier."""
    return any(marker in state for marker in _REFERENCE_MARKERS.values()) and \
        not any(key.startswith(TIMM_CLASSIFIER_PREFIXES) for key in state)


def detect_reference_backbone(state: Dict[str, torch.Tensor], path: str) -> str:
    """Which of the reference release's backbones a ``model`` state dict holds."""
    found = [kind for kind, marker in _REFERENCE_MARKERS.items() if marker in state]
    if len(found) != 1:
        raise CheckpointError(
            f'{path}: cannot tell which reference backbone this is; expected exactly one of the '
            f'keys {sorted(_REFERENCE_MARKERS.values())}, found keys '
            f'{_listing(sorted(state))}')
    return found[0]


def convert_reference_checkpoint(checkpoint: dict,
                                 path: str = '<checkpoint>',
                                 backbone: Optional[str] = None,
                                 img_size: Optional[int] = None,
                                 num_heads: Optional[Sequence[int]] = None) -> dict:
    """A reference-release checkpoint ``{'model': state_dict}`` -> a fastmim checkpoint.

    The architecture is read from the weights (widths, depths, windows, heads where the weights
    determine them) and the converted weights are checked against the fastmim backbone it
    describes, built on the meta device. The decoder (``decoder_*``) is dropped: fastmim's
    decoder is another module and fine-tuning discards it.

    Args:
        checkpoint: the loaded file; its ``model`` entry is converted.
        path: the file name, for messages.
        backbone: ``'vit'``, ``'swin'``, ``'pvtv2'`` or ``'cmt'``; checked against the weights
            when given, detected otherwise.
        img_size: pre-training input size where the weights do not determine it (Swin without
            shifted-window masks, PVTv2). Default: the smallest size at which every Swin stage
            holds its window (128 for window 4); None for PVTv2, which has no size.
        num_heads: attention heads where the weights do not determine them (ViT: default
            ``embed_dim // 64``; PVTv2: default from the published size with these shapes).

    Returns:
        ``{'state_dict': {'backbone.*', 'mask_token'}, 'meta': {'geometry': ..., ...}}``.
    """
    state = checkpoint.get('model')
    if not isinstance(state, dict):
        raise CheckpointError(f'{path}: a reference-release checkpoint holds its weights under '
                              f'"model"; found keys {_listing(sorted(map(str, checkpoint)))}')
    kind = detect_reference_backbone(state, path)
    if backbone is not None and backbone != kind:
        raise CheckpointError(f'{path}: --backbone {backbone} was given, but the weights are a '
                              f'reference {kind} (key {_REFERENCE_MARKERS[kind]!r})')
    decoder = sorted(key for key in state if key.startswith('decoder_'))
    if kind == 'vit':  # MAE layout: the encoder at the top level
        encoder = {key: value for key, value in state.items()
                   if not key.startswith('decoder_') and key != 'mask_token'}
    else:
        stray = sorted(key for key in state
                       if not key.startswith(('encoder.', 'decoder_')) and key != 'mask_token')
        if stray:
            raise CheckpointError(f'{path}: reference {kind} keys outside "encoder." and the '
                                  f'decoder: {_listing(stray)}')
        encoder = {key[len('encoder.'):]: value for key, value in state.items()
                   if key.startswith('encoder.')}
    model, backbone_state, dropped = _REFERENCE_CONVERTERS[kind](encoder, path, img_size,
                                                                 num_heads)
    check_state_matches(backbone_state, model, path)
    geometry = model.geometry()
    size = img_size or geometry.get('img_size')
    state_dict = {'backbone.' + key: value for key, value in backbone_state.items()}
    if 'mask_token' in state:
        state_dict['mask_token'] = state['mask_token']
    meta = dict(
        geometry=dict(backbone=geometry,
                      input_size=None if size is None else _size_list(size)),
        converted_from=dict(source=REFERENCE_RELEASE, backbone=kind, file=str(path),
                            dropped=sorted({_group(key) for key in decoder + dropped})))
    return dict(state_dict=state_dict, meta=meta)


def _convert_reference_vit(state, path, img_size, num_heads):
    """MAE-style ViT: timm 0.3.2 names, which current timm (and fastmim) still use."""
    _require(state, ('cls_token', 'pos_embed', 'patch_embed.proj.weight',
                     'blocks.0.mlp.fc1.weight'), path, 'ViT')
    embed_dim = state['cls_token'].shape[-1]
    patch_size = state['patch_embed.proj.weight'].shape[-1]
    grid = _square_side(state['pos_embed'].shape[1] - 1, 'pos_embed patch tokens', path)
    _check_size(img_size, grid * patch_size, 'the position embedding', path)
    hidden = state['blocks.0.mlp.fc1.weight'].shape[0]
    # The release keeps its fixed sin-cos table in `pos_embed`, as fastmim's sincos mode does.
    base = dict(type='VisionTransformer', img_size=grid * patch_size, patch_size=patch_size,
                pos_embed_type='sincos', mlp_ratio=_ratio(hidden, [embed_dim], path),
                qkv_bias='blocks.0.attn.qkv.bias' in state)
    custom = dict(embed_dim=embed_dim, depth=_count(state, r'blocks\.(\d+)\.'),
                  num_heads=_one_value(num_heads, 'ViT') or max(1, embed_dim // 64))
    model = _build_matching(base, vit_backbone.ARCHS, custom, state, path,
                            try_published=num_heads is None)
    return model, dict(state), []


def _swin_reference_model(state, path, img_size):
    """The fastmim Swin (meta device) that an original-layout Swin state dict describes, and
    the state dict in timm's layout, converted by timm's ``checkpoint_filter_fn``."""
    _require(state, ('patch_embed.proj.weight', 'layers.0.blocks.0.mlp.fc1.weight'), path,
             'Swin')
    num_stages = _count(state, r'layers\.(\d+)\.')
    tables = [_get(state, f'layers.{i}.blocks.0.attn.relative_position_bias_table', path)
              for i in range(num_stages)]
    windows = [(_square_side(table.shape[0], f'layers.{i} relative-position table rows', path)
                + 1) // 2 for i, table in enumerate(tables)]
    embed_dim, _, patch_size, _ = state['patch_embed.proj.weight'].shape
    mask = state.get('layers.0.blocks.1.attn_mask')
    if mask is not None:  # (windows, N, N) of stage 0 tells the pre-training size
        size = windows[0] * _square_side(mask.shape[0], 'layers.0 attention windows', path)
        _check_size(img_size, size * patch_size, 'the attention masks', path)
        img_size = size * patch_size
    elif img_size is None:
        img_size = patch_size * 2**(num_stages - 1) * max(windows)
    hidden = state['layers.0.blocks.0.mlp.fc1.weight'].shape[0]
    base = dict(type='SwinTransformer', img_size=img_size, patch_size=patch_size,
                window_size=windows[0] if len(set(windows)) == 1 else windows,
                mlp_ratio=_ratio(hidden, [embed_dim], path),
                qkv_bias='layers.0.blocks.0.attn.qkv.bias' in state)
    custom = dict(embed_dim=embed_dim,
                  depths=[_count(state, rf'layers\.{i}\.blocks\.(\d+)\.')
                          for i in range(num_stages)],
                  num_heads=[table.shape[1] for table in tables])
    # timm's filter needs a model with the checkpoint's patch size and windows: any size will do.
    renamed = timm_swin.checkpoint_filter_fn(dict(state), _build_on_meta(dict(base, arch=custom),
                                                                         strict=True))
    return _build_matching(base, swin_backbone.ARCHS, custom, renamed, path), renamed


def _convert_reference_swin(state, path, img_size, num_heads):
    """Original Microsoft Swin, as the release pre-trains it: timm converts the layout."""
    model, renamed = _swin_reference_model(state, path, img_size)
    return model, renamed, []


def _convert_reference_pvtv2(state, path, img_size, num_heads):
    """Original PVTv2 (``patch_embed1``, ``block1.0``, ``norm1``): timm converts the layout."""
    state = timm_pvt_v2.checkpoint_filter_fn(dict(state), None)  # the model is not used
    _require(state, ('stages.0.blocks.0.mlp.fc1.weight', 'stages.0.norm.weight'), path, 'PVTv2')
    num_stages = _count(state, r'stages\.(\d+)\.')
    dims = [_get(state, f'stages.{i}.norm.weight', path).shape[0] for i in range(num_stages)]
    sr_kernels = [state[key].shape[-1] if key in state else 1
                  for key in (f'stages.{i}.blocks.0.attn.sr.weight' for i in range(num_stages))]
    # Linear-attention PVTv2 (b2_li) pools keys to 7x7 and has a 1x1 `sr` in every stage; the
    # other variants have no `sr` where the reduction ratio is 1 (the last stage).
    linear = f'stages.{num_stages - 1}.blocks.0.attn.sr.weight' in state and sr_kernels[-1] == 1
    custom = dict(
        depths=[_count(state, rf'stages\.{i}\.blocks\.(\d+)\.') for i in range(num_stages)],
        embed_dims=dims,
        num_heads=list(num_heads) if num_heads else None,
        mlp_ratios=[_ratio(state[f'stages.{i}.blocks.0.mlp.fc1.weight'].shape[0], [dim], path)
                    for i, dim in enumerate(dims)],
        sr_ratios=[1] * num_stages if linear else sr_kernels,
        linear=linear)
    model = _build_matching(dict(type='PyramidVisionTransformerV2'), pvtv2_backbone.ARCHS, custom,
                            state, path, try_published=num_heads is None)
    return model, state, []


# Reference CMT names -> fastmim CMT names, inside a block (first matching prefix wins).
_CMT_BLOCK_NAMES = (
    ('proj.', 'lpu.dwconv.'),
    ('attn.sr.', 'attn.reduce.'),
    ('mlp.conv1.', 'ffn.expand.'),
    ('mlp.proj_bn.', 'ffn.dwconv_norm.'),
    ('mlp.proj.', 'ffn.dwconv.'),
    ('mlp.conv2.', 'ffn.project.'),
)
_CMT_STAGES = 'abcd'


def cmt_reference_name(key: str) -> Optional[str]:
    """Reference CMT key -> fastmim CMT key; None for the final ``norm`` (fastmim's CMT has
    none: it returns the last stage as it is, like the CMT classifier)."""
    if key.startswith('norm.'):
        return None
    match = re.match(r'stem_(conv|norm)(\d)\.(.*)', key)
    if match:
        layer = 3 * (int(match[2]) - 1) + (0 if match[1] == 'conv' else 2)
        return f'stem.{layer}.{match[3]}'
    match = re.match(r'patch_embed_([abcd])\.(.*)', key)
    if match:
        return f'stages.{_CMT_STAGES.index(match[1])}.downsample.{match[2]}'
    match = re.fullmatch(r'relative_pos_([abcd])', key)
    if match:
        return f'stages.{_CMT_STAGES.index(match[1])}.relative_position_bias'
    match = re.match(r'blocks_([abcd])\.(\d+)\.(.*)', key)
    if match:
        rest = match[3]
        for old, new in _CMT_BLOCK_NAMES:
            if rest.startswith(old):
                rest = new + rest[len(old):]
                break
        return f'stages.{_CMT_STAGES.index(match[1])}.blocks.{match[2]}.{rest}'
    return key


def _convert_reference_cmt(state, path, img_size, num_heads):
    renamed, dropped = {}, []
    for key, value in state.items():
        name = cmt_reference_name(key)
        if name is None:
            dropped.append('encoder.' + key)
        else:
            renamed[name] = value
    _require(renamed, ('stem.0.weight', 'stages.0.relative_position_bias',
                       'stages.0.blocks.0.ffn.expand.0.weight'), path, 'CMT')
    num_stages = _count(renamed, r'stages\.(\d+)\.')
    dims = [_get(renamed, f'stages.{i}.downsample.proj.weight', path).shape[0]
            for i in range(num_stages)]
    biases = [_get(renamed, f'stages.{i}.relative_position_bias', path)
              for i in range(num_stages)]
    size = 4 * _square_side(biases[0].shape[1], 'stage-0 bias queries', path)
    _check_size(img_size, size, 'the relative position biases', path)
    hidden = [_get(renamed, f'stages.{i}.blocks.0.ffn.expand.0.weight', path).shape[0]
              for i in range(num_stages)]
    reductions = [renamed[key].shape[-1] if key in renamed else 1
                  for key in (f'stages.{i}.blocks.0.attn.reduce.0.weight'
                              for i in range(num_stages))]
    custom = dict(embed_dims=dims,
                  depths=[_count(renamed, rf'stages\.{i}\.blocks\.(\d+)\.')
                          for i in range(num_stages)],
                  num_heads=[bias.shape[0] for bias in biases],
                  stem_channels=renamed['stem.0.weight'].shape[0],
                  mlp_ratio=_ratio(hidden, dims, path),
                  reduction_ratios=reductions)
    model = _build_matching(dict(type='CMT', img_size=size), cmt_backbone.ARCH_SETTINGS, custom,
                            renamed, path)
    return model, renamed, dropped


_REFERENCE_CONVERTERS = {
    'vit': _convert_reference_vit,
    'swin': _convert_reference_swin,
    'pvtv2': _convert_reference_pvtv2,
    'cmt': _convert_reference_cmt,
}


def _build_matching(base: dict, published: dict, custom: dict, state, path,
                    try_published: bool = True) -> nn.Module:
    """The backbone (on the meta device) whose weights have exactly the shapes of ``state``:
    a published size when one matches (so the geometry names it), else the custom arch."""
    if try_published:
        for name, settings in published.items():
            if not _same_widths_and_depths(settings, custom):
                continue  # quick reject before building
            model = _build_on_meta(dict(base, arch=name))
            if model is not None and _shapes(model.state_dict()) == _shapes(state):
                return model
    if any(value is None for value in custom.values()):
        unknown = sorted(key for key, value in custom.items() if value is None)
        raise CheckpointError(f'{path}: the weights match no published {base["type"]} size and '
                              f'do not determine {unknown}; pass them (--num-heads)')
    return _build_on_meta(dict(base, arch=custom), strict=True)


# Integer settings that the weights fix exactly (ratios are compared through the shapes).
_SIZE_KEYS = ('embed_dim', 'embed_dims', 'depth', 'depths', 'stem_channels')


def _same_widths_and_depths(published: dict, custom: dict) -> bool:
    def plain(value):
        return list(value) if isinstance(value, (list, tuple)) else value

    return all(plain(published[key]) == plain(custom[key])
               for key in _SIZE_KEYS if key in published and key in custom)


def _build_on_meta(cfg: dict, strict: bool = False) -> Optional[nn.Module]:
    """Build a backbone without allocating its weights; None for an invalid published combo."""
    try:
        with torch.device('meta'):
            return MODELS.build(cfg)
    except (ValueError, TypeError, AssertionError) as error:
        if strict:
            raise CheckpointError(f'the weights describe a {cfg["type"]} that cannot be built '
                                  f'({cfg}): {error}') from None
        return None


def check_state_matches(state: Dict[str, torch.Tensor], model: nn.Module, path: str) -> None:
    """Raise one CheckpointError if ``state`` does not have exactly the model's keys and shapes."""
    expected = _shapes(model.state_dict())
    actual = _shapes(state)
    report = LoadProblems(
        unexpected=[f'{key} {actual[key]}' for key in sorted(set(actual) - set(expected))],
        missing=[f'{key} {expected[key]}' for key in sorted(set(expected) - set(actual))],
        mismatched=[f'{key}: checkpoint {actual[key]} vs model {expected[key]}'
                    for key in sorted(set(actual) & set(expected))
                    if actual[key] != expected[key]])
    if report:
        raise CheckpointError(report.message(path, type(model).__name__,
                                             'converted from the reference layout'))


# --------------------------------------------------------------------------------------------
# Transferring weights into a target model
# --------------------------------------------------------------------------------------------
@dataclass
class LoadProblems:
    """Everything that keeps a checkpoint from loading, reported together."""
    unexpected: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)

    def __bool__(self):
        return bool(self.unexpected or self.missing or self.mismatched)

    def message(self, path: str, target: str, how: str) -> str:
        lines = [f'{path} does not fit {target} ({how}):']
        for title, entries in (
                ('unexpected keys (in the checkpoint, not in the model)', self.unexpected),
                ('missing keys (in the model, not in the checkpoint)', self.missing),
                ('shape mismatches that no resize rule transfers', self.mismatched)):
            if entries:
                lines.append(f'  {title}: {len(entries)}')
                lines += [f'    {entry}' for entry in entries[:_MAX_LISTED]]
                if len(entries) > _MAX_LISTED:
                    lines.append(f'    ... and {len(entries) - _MAX_LISTED} more')
        return '\n'.join(lines)


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
            f'its top-level names are {_listing(_groups(source.state))}')

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
def _group(key: str) -> str:
    """``decoder_blocks.0.attn.qkv.weight`` -> ``decoder_blocks``; ``encoder.norm.weight`` ->
    ``encoder.norm``: the module a dropped reference key belongs to."""
    parts = key.split('.')
    return '.'.join(parts[:2]) if parts[0] == 'encoder' else parts[0]


def _submodule(model: nn.Module, name: str) -> Optional[nn.Module]:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(key, pattern) for pattern in patterns)


def _shapes(state) -> Dict[str, tuple]:
    return {key: tuple(value.shape) for key, value in state.items()}


def _groups(keys, count: bool = False) -> List[str]:
    """Top-level names of keys (``neck``, ``mask_token``), with tensor counts if asked."""
    counts: Dict[str, int] = {}
    for key in keys:
        group = key.split('.')[0]
        counts[group] = counts.get(group, 0) + 1
    return [f'{group} ({n})' if count else group for group, n in counts.items()]


def _listing(items: Sequence[str]) -> str:
    items = list(items)
    shown = ', '.join(items[:_MAX_LISTED])
    return shown + (f', ... ({len(items)} in all)' if len(items) > _MAX_LISTED else '')


def _require(state, keys, path, what):
    absent = [key for key in keys if key not in state]
    if absent:
        raise CheckpointError(f'{path}: not a {what} state dict, it lacks {absent}')


def _get(state, key, path):
    if key not in state:
        raise CheckpointError(f'{path}: expected key {key!r} is missing')
    return state[key]


def _count(state, pattern: str) -> int:
    """1 + the largest index captured by ``pattern`` at the start of any key."""
    indices = [int(match[1]) for match in map(re.compile(pattern).match, state) if match]
    return max(indices) + 1 if indices else 0


def _square_side(count: int, what: str, path) -> int:
    side = math.isqrt(int(count))
    if side * side != count:
        raise CheckpointError(f'{path}: {what} ({count}) are not a square grid')
    return side


def _ratio(hidden, dims, path) -> float:
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


def _one_value(values, what):
    if values is None:
        return None
    values = list(values)
    if len(set(values)) != 1:
        raise CheckpointError(f'{what} has one number of heads for every block, got {values}')
    return values[0]


def _check_size(given, inferred, source, path):
    if given is not None and given != inferred:
        raise CheckpointError(f'{path}: --img-size {given} contradicts {source}, which were '
                              f'built for {inferred} px')


def _size_list(size) -> List[int]:
    return [size, size] if isinstance(size, int) else list(size)
