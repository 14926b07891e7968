"""Convert the reference release's checkpoints (ggjy/FastMIM.pytorch) to fastmim checkpoints.

The release saves MAE-style ``{'model': state_dict}`` files whose encoder uses another layout
per backbone: MAE's ViT (timm 0.3.2 names, which fastmim keeps), the original Microsoft Swin and
PVTv2 layouts and its own CMT names. Besides the pre-training files it publishes ImageNet
fine-tuned classifiers (ViT-B and Swin-B, also its downstream inits; PVTv2-B2 and CMT-S only as
such), whose encoder sits at the top level next to its classifier. This module knows the
release's files: how each encoder is recognised, where it sits in the file, what its classifier
parts mean, and how to read its architecture from the weights. The renaming of an encoder is
each backbone's own rule (``rename_foreign_keys`` of the backbone contract), and the backbone
classes are found through the registry, so no concrete backbone is imported here.
:func:`convert_reference_checkpoint` returns a fastmim checkpoint (a pre-training one, or an
``ImageClassifier`` one for a fine-tuned file) with the ``meta['geometry']`` that
:func:`~.pretrained.load_pretrained` uses to resize the weights;
``tools/convert/from_reference.py`` writes it to a file.
"""
import math
import re
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.registry import DefaultScope
from torch import nn

from fastmim.errors import CheckpointError
from fastmim.registry import MODELS

from .load_problems import LoadProblems, listing, shapes

# Classifier parts of a timm-format state dict: they sit after the backbone's features.
# (Here, not in .pretrained, because telling a reference file from a classifier needs it.)
TIMM_CLASSIFIER_PREFIXES = ('head.', 'fc_norm.')
REFERENCE_RELEASE = 'ggjy/FastMIM.pytorch'

# How each reference encoder is recognised: a key only its layout has.
_REFERENCE_MARKERS = {
    'vit': 'blocks.0.attn.qkv.weight',
    'swin': 'encoder.layers.0.blocks.0.attn.relative_position_bias_table',
    'pvtv2': 'encoder.patch_embed1.proj.weight',
    'cmt': 'encoder.stem_conv1.weight',
}


# The release's fine-tuned classifiers keep the encoder at the top level with its classifier after
# it, and no final ``norm``. ViT (models_vit.py) and Swin (mim_swin_finetune.py) end in
# ``fc_norm`` and ``head``; the same name means two things: the ViT pools the tokens and then
# normalises them (``fc_norm`` belongs to the classifier, as LinearClsHead's ``fc_norm``), while
# Swin normalises the tokens and then pools them (``fc_norm`` is Swin's own final ``norm``,
# renamed by the release). PVTv2 (mim_pvtv2_finetune.py) ends in its stage norms and ``head``
# (mean of the tokens after ``norm4``: fastmim's classifier). CMT (mim_cmt_finetune.py) ends
# in a 1x1 conv ``_fc`` (to 1280 channels), BatchNorm ``_bn``, swish, pooling and ``head``: a
# classifier fastmim has no module for, so only its encoder converts. The release publishes
# PVTv2-B2 and CMT-S as fine-tuned files only.
_FINETUNED_MARKERS = {
    'vit': 'blocks.0.attn.qkv.weight',
    'swin': 'layers.0.blocks.0.attn.relative_position_bias_table',
    'pvtv2': 'patch_embed1.proj.weight',
    'cmt': 'stem_conv1.weight',
}
_FINETUNED_CLASSIFIER_KEYS = {
    'vit': ('fc_norm.weight', 'head.weight'),
    'swin': ('fc_norm.weight', 'head.weight'),
    'pvtv2': ('head.weight', ),
    'cmt': ('_fc.weight', '_bn.weight', 'head.weight'),
}
# CMT's classifier parts, which no fastmim module takes.
_CMT_CLASSIFIER_PREFIXES = ('_fc.', '_bn.', 'head.')


def is_reference_pretraining(state: Dict[str, torch.Tensor]) -> bool:
    """Whether a ``model`` state dict is a pre-training checkpoint of the reference release
    (an encoder of its layout and no classifier), rather than another release's classifier."""
    return any(marker in state for marker in _REFERENCE_MARKERS.values()) and \
        not any(key.startswith(TIMM_CLASSIFIER_PREFIXES) for key in state)


def is_reference_finetuned(state: Dict[str, torch.Tensor]) -> bool:
    """Whether a ``model`` state dict is one of the release's ImageNet fine-tuned classifiers:
    an encoder of its layout with that backbone's classifier keys and no final ``norm`` (MAE's
    global-pool ViT files have this layout too and convert the same way). Other releases'
    ViT and Swin classifiers end in ``norm`` (Microsoft's Swin, DeiT) and stay timm format."""
    return 'norm.weight' not in state and any(
        marker in state and all(key in state for key in _FINETUNED_CLASSIFIER_KEYS[kind])
        for kind, marker in _FINETUNED_MARKERS.items())


def is_reference_checkpoint(state: Dict[str, torch.Tensor]) -> bool:
    """Whether :func:`convert_reference_checkpoint` knows this ``model`` state dict."""
    return is_reference_pretraining(state) or is_reference_finetuned(state)


def detect_reference_backbone(state: Dict[str, torch.Tensor], path: str) -> str:
    """Which of the reference release's backbones a ``model`` state dict holds."""
    markers = _FINETUNED_MARKERS if is_reference_finetuned(state) else _REFERENCE_MARKERS
    found = [kind for kind, marker in markers.items() if marker in state]
    if len(found) != 1:
        raise CheckpointError(
            f'{path}: cannot tell which reference backbone this is; expected exactly one of the '
            f'keys {sorted(markers.values())}, found keys {listing(sorted(state))}')
    return found[0]


def convert_reference_checkpoint(checkpoint: dict,
                                 path: str = '<checkpoint>',
                                 backbone: Optional[str] = None,
                                 img_size: Optional[int] = None,
                                 num_heads: Optional[Sequence[int]] = None) -> dict:
    """A reference-release checkpoint ``{'model': state_dict}`` -> a fastmim checkpoint.

    The architecture is read from the weights (widths, depths, windows, heads where the weights
    determine them) and the converted weights are checked against the fastmim backbone it
    describes, built on the meta device. A pre-training file gives a pre-training checkpoint:
    the decoder (``decoder_*``) is dropped, as fastmim's decoder is another module and
    fine-tuning discards it. A fine-tuned file gives an ``ImageClassifier`` checkpoint
    (:func:`_convert_reference_classifier`).

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
        ``{'state_dict': {'backbone.*', 'mask_token'}, 'meta': {'geometry': ..., ...}}``; for a
        fine-tuned file ``{'backbone.*', 'head.*'}`` and ``num_classes`` in the geometry, for
        a fine-tuned CMT ``{'backbone.*'}`` (its classifier dropped).
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'{path} holds a {type(checkpoint).__name__}, not a '
                              'reference-release checkpoint (a dict with the weights under '
                              '"model")')
    if isinstance(checkpoint.get('state_dict'), dict) and 'model' not in checkpoint:
        raise CheckpointError(f'{path} is a fastmim / mmengine checkpoint ("state_dict"), not a '
                              'reference-release file ("model"): fastmim\'s own checkpoints (a '
                              'converted file included) need no conversion; give them to '
                              'FastMIMPretrained, load_pretrained or tools/test.py as they are')
    state = checkpoint.get('model')
    if not isinstance(state, dict):
        raise CheckpointError(f'{path}: a reference-release checkpoint holds its weights under '
                              f'"model"; found keys {listing(sorted(map(str, checkpoint)))}')
    kind = detect_reference_backbone(state, path)
    finetuned = is_reference_finetuned(state)
    if backbone is not None and backbone != kind:
        marker = (_FINETUNED_MARKERS if finetuned else _REFERENCE_MARKERS)[kind]
        raise CheckpointError(f'{path}: --backbone {backbone} was given, but the weights are a '
                              f'reference {kind} (key {marker!r})')
    if finetuned:
        converted = _convert_reference_classifier(kind, state, path, img_size, num_heads)
        _check_given_heads(num_heads, converted['meta']['geometry']['backbone'], kind, path)
        return converted
    decoder = sorted(key for key in state if key.startswith('decoder_'))
    if kind == 'vit':  # MAE layout: the encoder at the top level
        encoder = {key: value for key, value in state.items()
                   if not key.startswith('decoder_') and key != 'mask_token'}
    else:
        stray = sorted(key for key in state
                       if not key.startswith(('encoder.', 'decoder_')) and key != 'mask_token')
        if stray:
            raise CheckpointError(f'{path}: reference {kind} keys outside "encoder." and the '
                                  f'decoder: {listing(stray)}')
        encoder = {key[len('encoder.'):]: value for key, value in state.items()
                   if key.startswith('encoder.')}
    model, backbone_state, dropped = _REFERENCE_CONVERTERS[kind](encoder, path, img_size,
                                                                 num_heads)
    check_state_matches(backbone_state, model, path)
    geometry = model.geometry()
    _check_given_heads(num_heads, geometry, kind, path)
    state_dict = {'backbone.' + key: value for key, value in backbone_state.items()}
    if 'mask_token' in state:
        state_dict['mask_token'] = state['mask_token']
    meta = dict(
        geometry=dict(backbone=geometry, input_size=_input_size(img_size, geometry)),
        converted_from=dict(source=REFERENCE_RELEASE, backbone=kind, file=str(path),
                            dropped=sorted({_group(key) for key in decoder + dropped})))
    return dict(state_dict=state_dict, meta=meta)


def _convert_reference_vit(state, path, img_size, num_heads):
    """MAE-style ViT: timm 0.3.2 names, which current timm (and fastmim) still use. The release
    keeps its fixed sin-cos table in ``pos_embed``, as fastmim's sincos mode does."""
    model = _vit_reference_model(state, path, img_size, num_heads, pos_embed_type='sincos')
    return model, dict(state), []


def _vit_reference_model(state, path, img_size, num_heads, **settings):
    """The fastmim ViT (meta device) that a MAE-style ViT state dict describes; ``settings``
    are the ViT arguments the weights cannot tell (position-embedding type, final norm)."""
    _require(state, ('cls_token', 'pos_embed', 'patch_embed.proj.weight',
                     'blocks.0.mlp.fc1.weight'), path, 'ViT')
    embed_dim = state['cls_token'].shape[-1]
    patch_size = state['patch_embed.proj.weight'].shape[-1]
    grid = _square_side(state['pos_embed'].shape[1] - 1, 'pos_embed patch tokens', path)
    _check_size(img_size, grid * patch_size, 'the position embedding', path)
    hidden = state['blocks.0.mlp.fc1.weight'].shape[0]
    base = dict(type='VisionTransformer', img_size=grid * patch_size, patch_size=patch_size,
                mlp_ratio=_ratio(hidden, [embed_dim], path),
                qkv_bias='blocks.0.attn.qkv.bias' in state, **settings)
    custom = dict(embed_dim=embed_dim, depth=_count(state, r'blocks\.(\d+)\.'),
                  num_heads=_one_value(num_heads, 'ViT'))
    # The weights do not fix a ViT's heads: a size no published arch has gets 64-wide ones.
    return _build_matching(base, custom, state, path, try_published=num_heads is None,
                           guesses=dict(num_heads=max(1, embed_dim // 64)))


def _swin_reference_model(state, path, img_size):
    """The fastmim Swin (meta device) that an original-layout Swin state dict describes, and
    the state dict in timm's layout (Swin's own rename rule)."""
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
    renamed = MODELS.get('SwinTransformer').rename_foreign_keys(state)
    return _build_matching(base, custom, renamed, path), renamed


def _convert_reference_swin(state, path, img_size, num_heads):
    """Original Microsoft Swin, as the release pre-trains it."""
    model, renamed = _swin_reference_model(state, path, img_size)
    return model, renamed, []


def _convert_reference_pvtv2(state, path, img_size, num_heads):
    """Original PVTv2 (``patch_embed1``, ``block1.0``, ``norm1``)."""
    state = MODELS.get('PyramidVisionTransformerV2').rename_foreign_keys(state)
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
    model = _build_matching(dict(type='PyramidVisionTransformerV2'), custom, state, path,
                            try_published=num_heads is None)
    return model, state, []


def _convert_reference_cmt(state, path, img_size, num_heads):
    """The release's own CMT names; its final ``norm`` has no counterpart in fastmim's CMT."""
    renamed = MODELS.get('CMT').rename_foreign_keys(state)
    dropped = ['encoder.' + key for key in state if key.startswith('norm.')]
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
    model = _build_matching(dict(type='CMT', img_size=size), custom, renamed, path)
    return model, renamed, dropped


def _convert_reference_classifier(kind, state, path, img_size, num_heads) -> dict:
    """A fine-tuned file of the release -> a fastmim ``ImageClassifier`` checkpoint, the layout
    ``configs/finetune/{vit_b,swin_b,pvtv2_b2}_ft_100e.py`` evaluate: ``head`` becomes
    ``head.fc``; ViT's ``fc_norm`` (after pooling) becomes the head's ``head.fc_norm`` for a
    backbone with ``final_norm=False``, Swin's ``fc_norm`` (before pooling) becomes the
    backbone's ``norm`` for a head without one (``pre_norm=None``); PVTv2 pools its last stage
    norm, as fastmim's classifier does. Every tensor is checked against the backbone and the
    ``LinearClsHead`` it describes, built on the meta device. A CMT file gives its encoder
    only (:func:`_convert_reference_cmt_encoder`)."""
    if kind == 'cmt':
        return _convert_reference_cmt_encoder(state, path, img_size)
    encoder = {key: value for key, value in state.items()
               if not key.startswith(TIMM_CLASSIFIER_PREFIXES)}
    fc_norm = {key[len('fc_norm.'):]: value for key, value in state.items()
               if key.startswith('fc_norm.')}
    head = {'fc.' + key[len('head.'):]: value for key, value in state.items()
            if key.startswith('head.')}
    if kind == 'vit':
        model = _vit_reference_model(encoder, path, img_size, num_heads,
                                     pos_embed_type='learned', final_norm=False)
        backbone_state, pre_norm = encoder, 'ln'
        head.update({'fc_norm.' + key: value for key, value in fc_norm.items()})
        renamed = {'fc_norm': 'head.fc_norm', 'head': 'head.fc'}
    elif kind == 'swin':
        encoder.update({'norm.' + key: value for key, value in fc_norm.items()})
        model, backbone_state = _swin_reference_model(encoder, path, img_size)
        pre_norm = None
        renamed = {'fc_norm': 'backbone.norm', 'head': 'head.fc'}
    else:
        model, backbone_state, _ = _convert_reference_pvtv2(encoder, path, img_size, num_heads)
        pre_norm = None
        renamed = {'head': 'head.fc'}
    check_state_matches(backbone_state, model, path)
    num_classes = _get(state, 'head.weight', path).shape[0]
    classifier_head = _build_on_meta(
        dict(type='LinearClsHead', num_classes=num_classes, in_channels=model.out_channels[-1],
             pre_norm=pre_norm), strict=True)
    check_state_matches(head, classifier_head, path)
    geometry = model.geometry()
    state_dict = {'backbone.' + key: value for key, value in backbone_state.items()}
    state_dict.update({'head.' + key: value for key, value in head.items()})
    meta = dict(
        geometry=dict(backbone=geometry, input_size=_input_size(img_size, geometry),
                      num_classes=num_classes),
        converted_from=dict(source=REFERENCE_RELEASE, backbone=kind, file=str(path),
                            fine_tuned=True, renamed=renamed, dropped=[]))
    return dict(state_dict=state_dict, meta=meta)


def _convert_reference_cmt_encoder(state, path, img_size) -> dict:
    """The release's fine-tuned CMT -> a fastmim CMT backbone checkpoint (``backbone.*``, its
    geometry at the fine-tuning size), which fine-tuning and downstream configs initialise
    from. Its classifier (1x1 conv ``_fc``, BatchNorm ``_bn``, swish, pooling, ``head``) is
    dropped: fastmim's CMT classifier pools, then normalises (``LinearClsHead(pre_norm='ln')``),
    and has no module for those weights."""
    encoder = {key: value for key, value in state.items()
               if not key.startswith(_CMT_CLASSIFIER_PREFIXES)}
    model, backbone_state, _ = _convert_reference_cmt(encoder, path, img_size, None)
    check_state_matches(backbone_state, model, path)
    geometry = model.geometry()
    dropped = sorted({_group(key) for key in state if key.startswith(_CMT_CLASSIFIER_PREFIXES)})
    meta = dict(
        geometry=dict(backbone=geometry, input_size=_input_size(img_size, geometry)),
        converted_from=dict(source=REFERENCE_RELEASE, backbone='cmt', file=str(path),
                            fine_tuned=True, renamed={}, dropped=dropped))
    return dict(state_dict={'backbone.' + key: value for key, value in backbone_state.items()},
                meta=meta)


_REFERENCE_CONVERTERS = {
    'vit': _convert_reference_vit,
    'swin': _convert_reference_swin,
    'pvtv2': _convert_reference_pvtv2,
    'cmt': _convert_reference_cmt,
}


def _build_matching(base: dict, custom: dict, state, path, try_published: bool = True,
                    guesses: Optional[dict] = None) -> nn.Module:
    """The backbone (on the meta device) whose weights have exactly the shapes of ``state``:
    a published size when one matches (so the geometry names it), else the custom arch, whose
    entries the weights leave ``None`` come from ``guesses``."""
    if try_published:
        backbone_class = MODELS.get(base['type'])
        for name, settings in backbone_class.published_archs.items():
            if not _same_size(settings, custom, backbone_class.size_keys):
                continue  # quick reject before building
            model = _build_on_meta(dict(base, arch=name))
            if model is not None and shapes(model.state_dict()) == shapes(state):
                return model
    custom = {key: (guesses or {}).get(key) if value is None else value
              for key, value in custom.items()}
    if any(value is None for value in custom.values()):
        unknown = sorted(key for key, value in custom.items() if value is None)
        raise CheckpointError(f'{path}: the weights match no published {base["type"]} size and '
                              f'do not determine {unknown}; pass them (--num-heads)')
    return _build_on_meta(dict(base, arch=custom), strict=True)


def _same_size(published: dict, custom: dict, size_keys: Sequence[str]) -> bool:
    """Whether a published arch can be the one the weights describe: the entries that set the
    backbone's size (its ``size_keys``) agree wherever the weights determine them (a ``None``
    in ``custom``, PVTv2's heads, is left to the shape comparison). Ratios and other settings
    are compared through the shapes of the built model."""
    def plain(value):
        return list(value) if isinstance(value, (list, tuple)) else value

    return all(plain(published[key]) == plain(custom[key]) for key in size_keys
               if key in published and custom.get(key) is not None)


def _build_on_meta(cfg: dict, strict: bool = False) -> Optional[nn.Module]:
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


def check_state_matches(state: Dict[str, torch.Tensor], model: nn.Module, path: str) -> None:
    """Raise one CheckpointError if ``state`` does not have exactly the model's keys and shapes."""
    report = LoadProblems.compare(dict(sorted(shapes(state).items())),
                                  dict(sorted(shapes(model.state_dict()).items())))
    if report:
        raise CheckpointError(report.message(path, type(model).__name__,
                                             'converted from the reference layout'))


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def _group(key: str) -> str:
    """``decoder_blocks.0.attn.qkv.weight`` -> ``decoder_blocks``; ``encoder.norm.weight`` ->
    ``encoder.norm``: the module a dropped reference key belongs to."""
    parts = key.split('.')
    return '.'.join(parts[:2]) if parts[0] == 'encoder' else parts[0]


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


def _check_given_heads(num_heads, geometry: dict, kind: str, path) -> None:
    """``--num-heads`` for a Swin or CMT, whose weights fix the heads (one bias column per
    head), must agree with them: it was ignored without a word."""
    if num_heads is None or kind not in ('swin', 'cmt'):
        return
    heads = list(geometry['num_heads'])
    if list(num_heads) != heads:
        raise CheckpointError(f'{path}: --num-heads {" ".join(map(str, num_heads))} contradicts '
                              f'the {kind} weights, whose relative position biases have '
                              f'{heads} heads (leave --num-heads out: it is for ViT and PVTv2)')


def _check_size(given, inferred, source, path):
    if given is not None and given != inferred:
        raise CheckpointError(f'{path}: --img-size {given} contradicts {source}, which were '
                              f'built for {inferred} px')


def _input_size(img_size, geometry: dict) -> Optional[List[int]]:
    """The input size a converted file records: the given one, else the backbone's own (ViT,
    Swin, CMT); None for PVTv2, whose weights do not depend on it."""
    size = img_size or geometry.get('img_size')
    return None if size is None else _size_list(size)


def _size_list(size) -> List[int]:
    return [size, size] if isinstance(size, int) else list(size)
