"""Convert the reference release's checkpoints (ggjy/FastMIM.pytorch) to fastmim checkpoints.

The release saves MAE-style ``{'model': state_dict}`` files whose encoder uses another layout
per backbone: MAE's ViT (timm 0.3.2 names, which fastmim keeps), the original Microsoft Swin and
PVTv2 layouts and its own CMT names. Besides the pre-training files it publishes ImageNet
fine-tuned classifiers (ViT-B and Swin-B, also its downstream inits; PVTv2-B2 and CMT-S only as
such), whose encoder sits at the top level next to its classifier.

This module knows the release's files, not its architectures: each backbone class declares how
the release stores it (:class:`ReferenceLayout`: the keys that recognise its files, where the
encoder sits, what the classifier holds) and reads its own architecture from the weights
(``from_reference_encoder`` and ``from_reference_classifier`` of the backbone contract). The
backbones are found through the registry, so no backbone is named here.
:func:`convert_reference_checkpoint` returns a fastmim checkpoint (a pre-training one, or an
``ImageClassifier`` one for a fine-tuned file) with the ``meta['geometry']`` that
:func:`~.pretrained.load_pretrained` uses to resize the weights;
``tools/convert/from_reference.py`` writes it to a file.

The release's decoder (``decoder_embed``, ``decoder_blocks``, ``decoder_norm``,
``decoder_pred``) is fastmim's :class:`~fastmim.models.necks.MIMDecoder` (``neck.embed``,
``neck.blocks``, ``neck.norm``, ``neck.predict``) but for the order of the predicted values:
the release compares each token's prediction with its HOG cells laid out (channel, ky, kx)
(``forward_hog_loss``: ``permute(0, 2, 3, 1).unfold(1, k, k).unfold(2, k, k).flatten(2)``),
fastmim folds them as (ky, kx, channel) (``FastMIM.fold_tokens``), so the rows of
``decoder_pred`` are reordered.
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from fastmim.errors import CheckpointError
from fastmim.load_problems import listing, top_level_names
from fastmim.registry import MODELS

from .checkpoint_meta import recorded_input_size
from .shape_reading import build_on_meta, check_state_matches, count_indices, tensor_at

REFERENCE_RELEASE = 'ggjy/FastMIM.pytorch'
_CONVERTED = 'converted from the reference layout'


class ReferenceLayout(NamedTuple):
    """How the reference release stores one architecture; a backbone class declares it as its
    ``reference_layout``.

    The release's fine-tuned classifiers keep the encoder at the top level, its classifier
    after it (``classifier_keys``: their first names are the classifier's parts; ``head`` is
    always the final linear layer) and no final ``norm``.
    """
    name: str  # how users and converted files name it: ``from_reference.py --backbone``
    pretraining_marker: str  # a key that only this architecture's pre-training files have
    encoder_prefix: str  # where a pre-training file keeps the encoder ('' = the top level)
    finetuned_marker: str  # a key that only this architecture's fine-tuned files have
    classifier_keys: Tuple[str, ...]  # keys every fine-tuned file of it has
    heads_in_weights: bool = False  # the weights fix the heads: --num-heads must agree
    # The encoder's part (relative to the encoder, e.g. 'norm.') that the release's decoder
    # reads as its input norm and the fastmim backbone has no place for: the decoder's in_norm.
    decoder_input_norm: str = ''
    # The release's decoder attends over the class token too, which fastmim's decoder never
    # sees: its converted decoder is close to the release's, not exact.
    decoder_sees_class_token: bool = False

    @property
    def classifier_prefixes(self) -> Tuple[str, ...]:
        return tuple(sorted({key.split('.')[0] + '.' for key in self.classifier_keys}))


class ReferenceEncoder(NamedTuple):
    """What a backbone reads from a reference encoder (``from_reference_encoder``)."""
    model: nn.Module  # the backbone the weights describe, on the meta device
    state: Dict[str, torch.Tensor]  # the weights in its names
    dropped: List[str]  # keys of the file it has no place for (relative to the file)


class ReferenceClassifier(NamedTuple):
    """What a backbone reads from a fine-tuned reference file (``from_reference_classifier``).

    ``head_cfg`` is the fastmim head whose weights these are, the way a fine-tuning config
    states it but without ``num_classes`` and ``in_channels`` (read from the file and the
    backbone), e.g. ``dict(type='LinearClsHead', pre_norm='ln')``; its final linear layer is
    ``fc``, which takes the file's ``head``.
    """
    model: nn.Module  # the backbone, on the meta device
    state: Dict[str, torch.Tensor]  # the backbone's weights in its names
    head_state: Dict[str, torch.Tensor]  # the head's weights besides ``fc``, in its names
    head_cfg: dict  # the head these weights fit (see above)
    renamed: Dict[str, str]  # the file's classifier parts that moved, besides head -> head.fc


def reference_backbones() -> Dict[str, type]:
    """The registered backbone classes that declare a :class:`ReferenceLayout`, by its name."""
    MODELS.import_from_location()
    found = {}
    for module in MODELS.module_dict.values():
        layout = vars(module).get('reference_layout') if isinstance(module, type) else None
        if layout is not None:
            found[layout.name] = module
    return found


def refuse_an_unconverted_release_file(checkpoint, path: str, then: str) -> None:
    """Raise a :class:`CheckpointError` for a reference-release (MAE-style) file, its weights
    under ``model`` and no ``state_dict``, naming its converter: refused as any other file, it
    was called a pre-training checkpoint (tools/test.py) or a list of unexpected keys
    ``model``, ``epoch`` (``get_model``), which said nothing of the conversion. ``then`` says
    what to do with the converted file (``'test OUT'``)."""
    if not isinstance(checkpoint, dict) or 'state_dict' in checkpoint:
        return
    weights = checkpoint.get('model')
    if isinstance(weights, dict):
        raise CheckpointError(
            f"{path} holds its weights under 'model' ({len(weights)} entries, e.g. "
            f'{next(iter(weights), None)!r}), as the reference release (MAE style) saves them, '
            'not as tools/train.py does: convert it with tools/convert/from_reference.py '
            f'{path} OUT --backbone {{{",".join(sorted(reference_backbones()))}}} '
            f'(--trust-checkpoint for its pickled args), then {then}{_what_loads_it(weights)}')


def _what_loads_it(weights: dict) -> str:
    """Which configs load the converted file, for the refusal of an unconverted one."""
    if is_reference_pretraining(weights):
        return ('; OUT is a FastMIM pre-training checkpoint, encoder and decoder: the FastMIM '
                'config of its backbone (configs/fastmim/) loads it, fine-tuning configs its '
                'backbone')
    if is_reference_finetuned(weights):
        return ('; OUT is a classifier: the fine-tuning config of its backbone '
                '(configs/finetune/) loads it')
    return ''


def _layouts() -> List[ReferenceLayout]:
    return [backbone.reference_layout for backbone in reference_backbones().values()]


def is_reference_pretraining(state: Dict[str, torch.Tensor]) -> bool:
    """Whether a ``model`` state dict is a pre-training checkpoint of the reference release
    (an encoder of its layout and no classifier), rather than another release's classifier
    (MAE's ViT layout keeps the encoder at the top level, as DeiT's classifiers do). A
    classifier is any part that a layout names as its classifier's (ViT's and Swin's
    ``head`` and ``fc_norm``, CMT's ``_fc``, ``_bn`` and ``head``), asked of the layouts."""
    classifiers = tuple({prefix for layout in _layouts()
                         for prefix in layout.classifier_prefixes})
    return any(layout.pretraining_marker in state for layout in _layouts()) and \
        not any(key.startswith(classifiers) for key in state)


def is_reference_finetuned(state: Dict[str, torch.Tensor]) -> bool:
    """Whether a ``model`` state dict is one of the release's ImageNet fine-tuned classifiers:
    an encoder of its layout with that backbone's classifier keys and no final ``norm`` (MAE's
    global-pool ViT files have this layout too and convert the same way). Other releases'
    ViT and Swin classifiers end in ``norm`` (Microsoft's Swin, DeiT) and stay timm format."""
    return 'norm.weight' not in state and any(
        layout.finetuned_marker in state and all(key in state for key in layout.classifier_keys)
        for layout in _layouts())


def is_reference_checkpoint(state: Dict[str, torch.Tensor]) -> bool:
    """Whether :func:`convert_reference_checkpoint` knows this ``model`` state dict."""
    return is_reference_pretraining(state) or is_reference_finetuned(state)


def detect_reference_backbone(state: Dict[str, torch.Tensor], path: str) -> str:
    """Which of the reference release's backbones a ``model`` state dict holds (its name)."""
    finetuned = is_reference_finetuned(state)
    markers = {layout.name: layout.finetuned_marker if finetuned else layout.pretraining_marker
               for layout in _layouts()}
    found = [name for name, marker in markers.items() if marker in state]
    if not state:
        raise CheckpointError(f"{path}: its 'model' holds no weights (an empty dict): nothing "
                              'to convert')
    if len(found) != 1:
        raise CheckpointError(
            f'{path}: cannot tell which reference backbone this is; expected exactly one of the '
            f'keys {sorted(set(markers.values()))}, found keys {listing(sorted(state))}')
    return found[0]


def convert_reference_checkpoint(checkpoint: dict,
                                 path: str = '<checkpoint>',
                                 backbone: Optional[str] = None,
                                 img_size: Optional[int] = None,
                                 num_heads: Optional[Sequence[int]] = None) -> dict:
    """A reference-release checkpoint ``{'model': state_dict}`` -> a fastmim checkpoint.

    The architecture is read from the weights (widths, depths, windows, heads where the weights
    determine them) and the converted weights are checked against the fastmim backbone it
    describes, built on the meta device. A pre-training file gives a pre-training checkpoint
    for the FastMIM config of its backbone, its decoder converted to fastmim's ``MIMDecoder``
    (:func:`_convert_reference_decoder`). A fine-tuned file gives an ``ImageClassifier``
    checkpoint (:func:`_convert_reference_classifier`).

    Args:
        checkpoint: the loaded file; its ``model`` entry is converted.
        path: the file name, for messages.
        backbone: the layout's name (``'vit'``, ``'swin'``, ``'pvtv2'``, ``'cmt'``); checked
            against the weights when given, detected otherwise.
        img_size: pre-training input size where the weights do not determine it (Swin without
            shifted-window masks, PVTv2). Default: the smallest size at which every Swin stage
            holds its window (128 for window 4); None for PVTv2, which has no size.
        num_heads: attention heads where the weights do not determine them (ViT: default
            ``embed_dim // 64``; PVTv2: default from the published size with these shapes).

    Returns:
        ``{'state_dict': {'backbone.*', 'neck.*', 'mask_token'}, 'meta': {'geometry': ...,
        ...}}`` (no ``neck.*`` where the decoder is dropped); for a fine-tuned file
        ``{'backbone.*', 'head.*'}`` and ``num_classes`` in the geometry, for one whose
        classifier no fastmim head takes ``{'backbone.*'}``.
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
    if checkpoint and all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        raise CheckpointError(f'{path} holds tensors at its top level '
                              f'({listing(sorted(map(str, checkpoint)))}), not a '
                              'reference-release checkpoint (weights under "model"): a plain '
                              'state dict, as timm saves one, converts with '
                              'tools/convert/from_timm.py')
    state = checkpoint.get('model')
    if not isinstance(state, dict):
        raise CheckpointError(f'{path}: a reference-release checkpoint holds its weights under '
                              f'"model"; found keys {listing(sorted(map(str, checkpoint)))}')
    kind = detect_reference_backbone(state, path)
    backbone_class = reference_backbones()[kind]
    layout = backbone_class.reference_layout
    finetuned = is_reference_finetuned(state)
    if backbone is not None and backbone != kind:
        marker = layout.finetuned_marker if finetuned else layout.pretraining_marker
        raise CheckpointError(f'{path}: --backbone {backbone} was given, but the weights are a '
                              f'reference {kind} (key {marker!r})')
    if finetuned:
        converted = _convert_reference_classifier(backbone_class, state, path, img_size,
                                                  num_heads)
        _check_given_heads(num_heads, converted['meta']['geometry']['backbone'], layout, path)
        return converted
    decoder = sorted(key for key in state if key.startswith('decoder_'))
    prefix = layout.encoder_prefix
    if not prefix:  # MAE's layout: the encoder at the top level
        encoder = {key: value for key, value in state.items()
                   if not key.startswith('decoder_') and key != 'mask_token'}
    else:
        stray = sorted(key for key in state
                       if not key.startswith((prefix, 'decoder_')) and key != 'mask_token')
        if stray:
            raise CheckpointError(f'{path}: reference {kind} keys outside "{prefix}" and the '
                                  f'decoder: {listing(stray)}')
        encoder = {key[len(prefix):]: value for key, value in state.items()
                   if key.startswith(prefix)}
    read = backbone_class.from_reference_encoder(encoder, path, img_size, num_heads)
    check_state_matches(read.state, read.model, path, _CONVERTED)
    geometry = read.model.geometry()
    _check_given_heads(num_heads, geometry, layout, path)
    state_dict = {'backbone.' + key: value for key, value in read.state.items()}
    if 'mask_token' in state:
        state_dict['mask_token'] = state['mask_token']
    input_norm = layout.decoder_input_norm
    neck, decoder_note = _convert_reference_decoder(
        {key: state[key] for key in decoder},
        {key: encoder[key] for key in read.dropped if input_norm and key.startswith(input_norm)},
        read.model.out_channels[-1], layout, path)
    if neck:
        state_dict.update({'neck.' + key: value for key, value in neck.items()})
        dropped = [prefix + key for key in read.dropped
                   if not (input_norm and key.startswith(input_norm))]
    else:
        dropped = decoder + [prefix + key for key in read.dropped]
    meta = dict(
        geometry=dict(backbone=geometry, input_size=recorded_input_size(img_size, geometry)),
        converted_from=dict(source=REFERENCE_RELEASE, backbone=kind, file=str(path),
                            dropped=sorted(top_level_names(dropped, within='encoder.')),
                            decoder=decoder_note))
    return dict(state_dict=state_dict, meta=meta)


# The release's HOG target: 9 orientation bins for each of the 3 colour channels.
RELEASE_TARGET_CHANNELS = 27


def _convert_reference_decoder(decoder: Dict[str, torch.Tensor],
                               input_norm: Dict[str, torch.Tensor], in_channels: int,
                               layout: ReferenceLayout, path) -> Tuple[dict, str]:
    """The release's decoder (its ``decoder_*`` keys) in the names of fastmim's ``MIMDecoder``,
    the rows of its prediction in fastmim's order (see the module docstring), and the encoder's
    ``input_norm`` (the layout's ``decoder_input_norm``) as its ``in_norm``, checked against the
    MIMDecoder they describe, built on the meta device; and a note on it for the report. Empty
    for a decoder fastmim has none like: without an input projection (the release's depth-0
    decoder) or predicting no HOG cells (its pixel target)."""
    if 'decoder_embed.weight' not in decoder:
        return {}, "dropped: it has no input projection (the release's depth-0 decoder)"
    rows = tensor_at(decoder, 'decoder_pred.weight', path).shape[0]
    side = round((rows / RELEASE_TARGET_CHANNELS) ** 0.5)
    if side * side * RELEASE_TARGET_CHANNELS != rows:
        return {}, (f'dropped: its {rows} outputs per token are not {RELEASE_TARGET_CHANNELS} '
                    'HOG channels of k x k cells (a pixel target?)')
    renamed = {}
    for key, value in decoder.items():
        for old, new in (('decoder_embed.', 'embed.'), ('decoder_blocks.', 'blocks.'),
                         ('decoder_norm.', 'norm.'), ('decoder_pred.', 'predict.')):
            if key.startswith(old):
                key = new + key[len(old):]
        renamed[key] = value
    for key, value in input_norm.items():
        renamed['in_norm.' + key[len(layout.decoder_input_norm):]] = value
    for key in ('predict.weight', 'predict.bias'):
        renamed[key] = _cells_last(tensor_at(renamed, key, path), side)
    embed_dim = tensor_at(renamed, 'embed.weight', path).shape[0]
    depth = count_indices(renamed, r'blocks\.(\d+)\.')
    hidden = tensor_at(renamed, 'blocks.0.mlp.fc1.weight', path).shape[0] if depth else embed_dim
    # Only the shapes are checked: the norms' eps, no weight, is the FastMIM config's to state.
    model = build_on_meta(dict(type='MIMDecoder', in_channels=in_channels, out_channels=rows,
                               embed_dim=embed_dim, depth=depth, mlp_ratio=hidden / embed_dim,
                               in_norm_eps=1e-6 if input_norm else None), strict=True)
    check_state_matches(renamed, model, path, _CONVERTED)
    if layout.decoder_sees_class_token:
        return renamed, ("converted, close to the release's, not exact: the release's decoder "
                         "attends over the class token too, which fastmim's decoder never sees")
    return renamed, "converted (the same predictions as the release's)"


def _cells_last(rows: torch.Tensor, side: int) -> torch.Tensor:
    """The prediction's rows (weight or bias) from the release's (channel, ky, kx) order to
    fastmim's (ky, kx, channel), for ``side x side`` cells per token."""
    grouped = rows.reshape(RELEASE_TARGET_CHANNELS, side, side, *rows.shape[1:])
    return grouped.permute(1, 2, 0, *range(3, grouped.dim())).reshape(rows.shape)


def _convert_reference_classifier(backbone_class, state, path, img_size, num_heads) -> dict:
    """A fine-tuned file of the release -> a fastmim ``ImageClassifier`` checkpoint, the layout
    ``configs/finetune/*_ft_100e.py`` evaluate: ``head`` becomes ``head.fc``, and the backbone
    says where its other classifier parts go and which head they fit
    (``from_reference_classifier``). Every tensor is checked against the backbone and the head
    it describes, built on the meta device. A backbone whose classifier no fastmim head takes
    gives its encoder only (:func:`_convert_reference_encoder_only`)."""
    layout = backbone_class.reference_layout
    classifier_prefixes = layout.classifier_prefixes
    encoder = {key: value for key, value in state.items()
               if not key.startswith(classifier_prefixes)}
    parts = {key: value for key, value in state.items()
             if key.startswith(classifier_prefixes) and not key.startswith('head.')}
    read = backbone_class.from_reference_classifier(encoder, parts, path, img_size, num_heads)
    if read is None:
        return _convert_reference_encoder_only(backbone_class, state, encoder, path, img_size)
    check_state_matches(read.state, read.model, path, _CONVERTED)
    head = {'fc.' + key[len('head.'):]: value for key, value in state.items()
            if key.startswith('head.')}
    head.update(read.head_state)
    num_classes = tensor_at(state, 'head.weight', path).shape[0]
    classifier_head = build_on_meta(
        dict(read.head_cfg, num_classes=num_classes, in_channels=read.model.out_channels[-1]),
        strict=True)
    check_state_matches(head, classifier_head, path, _CONVERTED)
    geometry = read.model.geometry()
    state_dict = {'backbone.' + key: value for key, value in read.state.items()}
    state_dict.update({'head.' + key: value for key, value in head.items()})
    meta = dict(
        geometry=dict(backbone=geometry, input_size=recorded_input_size(img_size, geometry),
                      num_classes=num_classes),
        converted_from=dict(source=REFERENCE_RELEASE, backbone=layout.name, file=str(path),
                            fine_tuned=True, renamed=dict(read.renamed, head='head.fc'),
                            dropped=[]))
    return dict(state_dict=state_dict, meta=meta)


def _convert_reference_encoder_only(backbone_class, state, encoder, path, img_size) -> dict:
    """A fine-tuned file whose classifier no fastmim head takes -> a backbone checkpoint
    (``backbone.*``, its geometry at the fine-tuning size), which fine-tuning and downstream
    configs initialise from; the classifier is dropped."""
    layout = backbone_class.reference_layout
    read = backbone_class.from_reference_encoder(encoder, path, img_size, None)
    check_state_matches(read.state, read.model, path, _CONVERTED)
    geometry = read.model.geometry()
    dropped = sorted(top_level_names(
        (key for key in state if key.startswith(layout.classifier_prefixes)), within='encoder.'))
    meta = dict(
        geometry=dict(backbone=geometry, input_size=recorded_input_size(img_size, geometry)),
        converted_from=dict(source=REFERENCE_RELEASE, backbone=layout.name, file=str(path),
                            fine_tuned=True, renamed={}, dropped=dropped))
    return dict(state_dict={'backbone.' + key: value for key, value in read.state.items()},
                meta=meta)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def _check_given_heads(num_heads, geometry: dict, layout: ReferenceLayout, path) -> None:
    """``--num-heads`` for a backbone whose weights fix the heads (Swin's and CMT's relative
    position biases have one column per head) must agree with them, or it would be ignored
    without a word."""
    if num_heads is None or not layout.heads_in_weights:
        return
    heads = list(geometry['num_heads'])
    if list(num_heads) != heads:
        free = sorted(other.name for other in _layouts() if not other.heads_in_weights)
        raise CheckpointError(f'{path}: --num-heads {" ".join(map(str, num_heads))} contradicts '
                              f'the {layout.name} weights, whose relative position biases have '
                              f'{heads} heads (leave --num-heads out: it is for the layouts '
                              f'whose weights do not fix the heads: {", ".join(free)})')
