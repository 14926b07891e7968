"""Load pre-trained weights into a backbone, resizing what depends on the input size.

FastMIM pre-trains at low resolution (128 px) and fine-tunes or transfers at another (224 px,
detection, segmentation), so a plain ``load_state_dict`` fails on the tensors tied to a token
grid or a window. :func:`load_pretrained` loads

- fastmim / mmengine checkpoints ``{'state_dict', 'meta'}``: pre-training ones hold
  ``backbone.*``, ``neck.*``, ``target_generator.*`` and ``mask_token``, and ``meta['geometry']``
  (written by ``CheckpointMetaHook`` from ``FastMIM.geometry()``) says which grid and windows the
  tensors were built for;
- timm-format state dicts (a plain name -> tensor mapping: ``tools/convert/to_timm.py`` output,
  timm classifier weights), the original Swin and PVTv2 layouts included (renamed by the
  backbone: Swin by its own rules, PVTv2 by timm's ``checkpoint_filter_fn``);
- reference-release checkpoints (ggjy/FastMIM.pytorch, MAE-style ``{'model': state_dict}``:
  pre-training files and the ImageNet fine-tuned classifiers that are its downstream inits),
  converted by :func:`~fastmim.models.utils.reference.convert_reference_checkpoint`;

and then asks every backbone of the target model (the modules that keep the backbone contract,
:mod:`fastmim.models.utils.backbone_contract`) to adapt its part: rename other layouts, resize what
depends on the input size (ViT's position embedding, Swin's relative-position tables, CMT's
attention bias), leave out what it rebuilds itself. This module only handles files: formats,
prefixes, and one :class:`~fastmim.errors.CheckpointError` that names the file and every
unexpected key, missing key and untransferable shape, instead of loading half a model. Weights
of a module the target switched off (``nn.Identity``: ViT fine-tuning with ``final_norm=False``
replaces the final norm by a ``fc_norm`` after pooling, as MAE does) are left out.
"""
import logging
import os
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

import torch
from mmengine.logging import print_log
from mmengine.model.weight_init import PretrainedInit, update_init_info
from mmengine.runner.checkpoint import (_load_checkpoint, _load_checkpoint_to_model,
                                        load_state_dict)
from torch import nn

from fastmim.errors import CheckpointError
from fastmim.load_problems import LoadProblems, listing, top_level_names
from fastmim.recipes import RECIPES
from fastmim.registry import DOWNSTREAM_SCOPES, MODELS, WEIGHT_INITIALIZERS

from .backbone_contract import BackboneContract
from .reference import convert_reference_checkpoint, is_reference_checkpoint

# Where a timm state dict of the ViT family keeps its classifier: the guess for a file read
# without a target model, whose backbones would say (``timm_classifier_prefixes``).
TIMM_CLASSIFIER_PREFIXES = ('head.', 'fc_norm.')
# Parts of a pre-training checkpoint that no downstream model has.
PRETRAINING_ONLY = ('neck.*', 'target_generator.*', 'mask_token')
# What marks a FastMIM pre-training checkpoint (its own or a converted reference one): the
# decoder and the mask token beside the backbone.
PRETRAINING_MARKS = ('neck.*', 'mask_token')


# --------------------------------------------------------------------------------------------
# Reading a checkpoint, whatever its format
# --------------------------------------------------------------------------------------------
@dataclass
class SourceWeights:
    """The weights of a checkpoint as fastmim names them, plus what is known of their geometry.

    ``state`` keys are as in a fastmim checkpoint (``backbone.*``, ``neck.*``, ...); ``geometry``
    is the backbone's ``geometry()`` at save time, or None when the file does not say;
    ``dropped`` the parts of the file that reading it left out (a reference file's decoder or
    CMT classifier), so that the summary names them with what was left out of ``state``.
    """
    state: Dict[str, torch.Tensor]
    geometry: Optional[dict]
    format: str
    dropped: List[str] = field(default_factory=list)


def read_checkpoint(checkpoint, path: str, prefix: str = 'backbone.',
                    classifier_prefixes: Sequence[str] = TIMM_CLASSIFIER_PREFIXES
                    ) -> SourceWeights:
    """Recognise the format of a loaded checkpoint and return its weights in fastmim naming.

    A timm-format state dict holds one backbone's weights without a prefix: they are put under
    ``prefix``, except the classifier (keys under ``classifier_prefixes``), which is left
    outside it. Where the classifier lies depends on the timm family (ResNet's ``fc``, ViT's
    ``head`` and ``fc_norm``): :func:`load_pretrained` asks the target's backbones
    (:func:`classifier_prefixes`); without a target, the ViT family's names are assumed.
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'{path} holds a {type(checkpoint).__name__}, not a dict of weights')
    if isinstance(checkpoint.get('state_dict'), dict):
        geometry = (checkpoint.get('meta') or {}).get('geometry')
        return SourceWeights(dict(checkpoint['state_dict']), backbone_geometry(geometry), 'fastmim')
    if isinstance(checkpoint.get('model'), dict):
        if is_reference_checkpoint(checkpoint['model']):
            converted = convert_reference_checkpoint(checkpoint, path)
            dropped = converted['meta']['converted_from']['dropped']
            return SourceWeights(converted['state_dict'],
                                 converted['meta']['geometry']['backbone'], 'reference',
                                 _keys_in_groups(checkpoint['model'], dropped))
        # Other releases (MAE, DeiT, Swin classifiers) keep a plain state dict under 'model'.
        checkpoint = checkpoint['model']
    if checkpoint and all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        if prefix and any(key.startswith(prefix) for key in checkpoint):
            return SourceWeights(dict(checkpoint), None, 'state_dict')
        # Other layouts of the backbone (original Swin, PVTv2) are renamed by the backbone.
        return SourceWeights(
            {key if key.startswith(tuple(classifier_prefixes)) else prefix + key: value
             for key, value in checkpoint.items()}, None, 'timm')
    raise CheckpointError(
        f'{path}: not a checkpoint format fastmim knows: expected a dict with "state_dict" '
        f'(fastmim / mmengine), "model" (reference release) or a name -> tensor mapping (timm); '
        f'found keys {listing(sorted(map(str, checkpoint)))}')


def _keys_in_groups(state: Dict[str, torch.Tensor], groups: Sequence[str]) -> List[str]:
    """The keys of ``state`` in the modules ``groups`` names (``decoder_blocks``, ``_fc``), so
    that the summary counts the tensors left out, as it does for every other part."""
    return sorted(key for key in state
                  if any(key == group or key.startswith(group + '.') for group in groups))


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

    Each backbone of the model adapts its part (:func:`adapt_for_backbones`); then equal shapes
    load, a key the model does not have is unexpected unless its module was switched off
    (``nn.Identity``), and a shape still different is a mismatch no backbone rule transfers.
    Missing keys are not judged here (see :func:`load_pretrained`).
    """
    adapted, rebuilt = adapt_for_backbones(state, model, geometry)
    target = model.state_dict()
    result = TransferredState({}, {}, rebuilt, LoadProblems())
    for key, value in adapted.items():
        if key not in target:
            if isinstance(_submodule(model, key.rpartition('.')[0]), nn.Identity):
                result.switched_off.append(key)
            else:
                result.problems.unexpected.append(f'{key} {tuple(value.shape)}')
            continue
        wanted = tuple(target[key].shape)
        if tuple(value.shape) != wanted:
            owner = _owning_backbone(model, key)
            result.problems.mismatched.append(
                f'{key}: checkpoint {tuple(value.shape)} vs model {wanted} (no rule of '
                f'{type(owner).__name__ if owner else type(model).__name__} transfers it)')
            result.mismatched_keys.append(key)
            continue
        result.state[key] = value
        if key in state and tuple(state[key].shape) != wanted:
            result.resized[key] = (tuple(state[key].shape), wanted)
    return result


def adapt_for_backbones(state: Dict[str, torch.Tensor], model: nn.Module,
                        geometry: Optional[dict] = None
                        ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """``state`` with each backbone's part passed through its ``adapt_state_dict``, and the
    keys the backbones left out because they rebuild them (sorted)."""
    adapted, rebuilt = dict(state), []
    for name, backbone in _backbones(model):
        prefix = f'{name}.' if name else ''
        own = {key[len(prefix):]: adapted.pop(key) for key in list(adapted)
               if key.startswith(prefix)}
        result = backbone.adapt_state_dict(own, geometry)
        kept = backbone.state_dict()
        rebuilt += [prefix + key for key in own.keys() - result.keys() if key in kept]
        adapted.update({prefix + key: value for key, value in result.items()})
    return adapted, sorted(rebuilt)


def _backbones(model: nn.Module) -> Iterator[Tuple[str, BackboneContract]]:
    """The outermost modules of ``model`` that keep the backbone contract (the model itself
    when it is a backbone); ``named_modules`` yields parents before their children."""
    found: List[str] = []
    for name, module in model.named_modules():
        if isinstance(module, BackboneContract) and not any(
                outer == '' or name.startswith(f'{outer}.') for outer in found):
            found.append(name)
            yield name, module


def classifier_prefixes(model: nn.Module) -> Tuple[str, ...]:
    """Where a timm state dict of ``model``'s backbones keeps the classifier (each backbone's
    ``timm_classifier_prefixes()``); the ViT family's names for a model without a backbone."""
    prefixes = {name for _, backbone in _backbones(model)
                for name in backbone.timm_classifier_prefixes()}
    return tuple(sorted(prefixes)) or TIMM_CLASSIFIER_PREFIXES


def checkpoint_optional_keys(model: nn.Module) -> Set[str]:
    """The keys of ``model`` (relative to it) that its backbones declare a checkpoint may lack
    (``checkpoint_optional_names()``: layers for dense prediction, options other settings leave
    off), each under its backbone's name in the model."""
    return {f'{name}.{key}' if name else key for name, backbone in _backbones(model)
            for key in backbone.checkpoint_optional_names()}


def _owning_backbone(model: nn.Module, key: str) -> Optional[nn.Module]:
    return next((backbone for name, backbone in _backbones(model)
                 if not name or key.startswith(f'{name}.')), None)


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
            ``final_norm=False``). In a detection or segmentation run, a pre-training file
            is also warned about (:func:`_warn_pretraining_file_downstream`).
        allow_missing: glob patterns (e.g. ``'head.*'``, ``'fc_norm.*'``) of model keys that
            the checkpoint may lack: new layers that keep their initialisation. Besides
            these, it may lack what the model's backbones declare optional
            (``checkpoint_optional_names()``: layers for dense prediction, options other
            settings leave off); the summary names every key kept initialised.
        map_location: passed to the loader.
        logger: where the INFO summary goes (mmengine ``print_log`` logger).

    Raises:
        CheckpointError: the file cannot be read, or it does not fit the model: one message
            naming the file and every unexpected key, missing key and untransferable shape.
    """
    checkpoint = _load_checkpoint(checkpoint_path, map_location=map_location)
    source = read_checkpoint(checkpoint, checkpoint_path, prefix,
                             classifier_prefixes(model_or_backbone))
    selected, left_out = {}, list(source.dropped)
    for key, value in source.state.items():
        if not key.startswith(prefix) or _matches(key, PRETRAINING_ONLY):
            left_out.append(key)
        else:
            selected[key[len(prefix):]] = value
    target_name = type(model_or_backbone).__name__
    if not selected:
        raise CheckpointError(
            f'{checkpoint_path} has no weights under the prefix {prefix!r} for {target_name}; '
            f'its top-level names are {listing(top_level_names(source.state))}')

    transferred = transfer_state(selected, model_or_backbone, source.geometry)
    missing, missing_keys, missing_allowed = [], [], []
    provided = set(transferred.state) | set(transferred.rebuilt) | set(transferred.mismatched_keys)
    optional = checkpoint_optional_keys(model_or_backbone)
    for key, value in model_or_backbone.state_dict().items():
        if key in provided:
            continue
        if key in optional or _matches(key, allow_missing):
            missing_allowed.append(key)
        else:
            missing.append(f'{key} {tuple(value.shape)}')
            missing_keys.append(key)
    transferred.problems.missing = missing
    if transferred.problems:
        how = f'prefix {prefix!r}, allow_missing={tuple(allow_missing)}'
        raise CheckpointError(
            _missing_keys_explained(checkpoint_path, source, model_or_backbone,
                                    transferred.problems, missing_keys)
            or _other_architecture(checkpoint_path, source.geometry, model_or_backbone,
                                transferred.problems)
            or '\n'.join(filter(None, (
                transferred.problems.message(checkpoint_path, target_name, how),
                _indented(size_difference(source.geometry, model_or_backbone))))))

    model_or_backbone.load_state_dict(transferred.state, strict=False)
    summary = LoadSummary(sorted(transferred.state), transferred.resized, transferred.rebuilt,
                          sorted(left_out + [prefix + key for key in transferred.switched_off]),
                          missing_allowed)
    print_log(_summary_line(checkpoint_path, target_name, source.format, summary, prefix,
                            _backbone_prefix(model_or_backbone)),
              logger=logger, level=logging.INFO)
    _warn_pretraining_file_downstream(checkpoint_path, source.state, model_or_backbone, logger)
    return summary


def _warn_pretraining_file_downstream(path, state: Dict[str, torch.Tensor], target: nn.Module,
                                      logger) -> None:
    """One warning where a detection or segmentation run (its default scope is mmdet's or
    mmseg's) initialises a backbone from a pre-training checkpoint: it loads (the decoder and
    mask token are left out), but the published downstream recipes start from the ImageNet
    fine-tuned checkpoint, and their numbers assume it. It names the published fine-tuning
    config of the backbone's type (:data:`fastmim.recipes.RECIPES`) where there is one."""
    from mmengine.registry import DefaultScope
    scope = DefaultScope.get_current_instance()
    if scope is None or scope.scope_name not in DOWNSTREAM_SCOPES:
        return
    if not all(any(_matches(key, (mark, )) for key in state) for mark in PRETRAINING_MARKS):
        return
    geometry = getattr(target, 'geometry', None)
    kind = geometry().get('type') if callable(geometry) else None
    config = RECIPES.get(kind, {}).get('finetune', 'the configs/finetune/ config of its backbone')
    print_log(f'{path} is a FastMIM pre-training checkpoint (it has neck and mask_token): the '
              f'published {scope.scope_name} recipes start from the ImageNet fine-tuned '
              f'checkpoint, and their numbers assume it; fine-tune it first ({config}) and give '
              f'that checkpoint', logger=logger, level=logging.WARNING)


def _missing_keys_explained(path, source: SourceWeights, model: nn.Module,
                            problems: LoadProblems, missing_keys: List[str]) -> Optional[str]:
    """The error for a file that only lacks keys of one backbone, when that backbone recognises
    the file's layout (``explain_missing_keys``: a fine-tuned ViT given to a kNN or
    linear-probe config, which keep the final norm): what the file is and the setting that
    loads it, in one line. None when anything else is wrong or the backbone does not say."""
    if problems.unexpected or problems.mismatched or not missing_keys:
        return None
    for name, backbone in _backbones(model):
        within = f'{name}.' if name else ''
        if all(key.startswith(within) for key in missing_keys):
            reason = backbone.explain_missing_keys(
                {key[len(within):] for key in missing_keys},
                [*source.state, *source.dropped])
            return f'{path} does not fit {type(model).__name__}: {reason}' if reason else None
    return None


def _other_architecture(path, geometry: Optional[dict], model: nn.Module,
                        problems: LoadProblems) -> Optional[str]:
    """The error for a file of another architecture (a ViT checkpoint given to a Swin config),
    when the file's geometry says which: naming both says what is wrong, where a list of every
    key of two unrelated models would not. None when the architectures agree or are unknown."""
    source = (geometry or {}).get('type')
    targets = sorted({backbone.geometry().get('type') for _, backbone in _backbones(model)})
    if source is None or not targets or source in targets:
        return None
    wanted = ' / '.join(targets)
    model_name = type(model).__name__
    has = (f'the model is a {wanted}' if targets == [model_name] else
           f'the model ({model_name}) has a {wanted} backbone')
    return (f'{path} holds a {source} backbone ({_sized_by(geometry)}), but {has}: '
            f'give it a {wanted} checkpoint ({len(problems.unexpected)} tensors of the file '
            f'have no place in the model, {len(problems.missing)} of its tensors are missing, '
            f'{len(problems.mismatched)} differ in shape)')


def size_difference(geometry: Optional[dict], model: nn.Module) -> Optional[str]:
    """What tells a file of the same backbone type in another size (a ViT-S checkpoint given
    to a ViT-B config) from the model: which sizes differ and the file's arch, which a list of
    shapes leaves the reader to work out. The backbone names the entries that set its size
    (``size_keys``). None when the geometry does not say. :func:`load_pretrained` ends its
    error with it; ``fastmim.apis.get_model`` leads with it."""
    source = geometry or {}
    for _, backbone in _backbones(model):
        target = backbone.geometry()
        if target.get('type') != source.get('type'):
            continue
        compared = sizes_compared(source, target, backbone.size_keys, "the model's")
        if compared:
            return f"{compared}: give the model the file's {_sized_by(source)}"
    return None


def sizes_compared(source: dict, target: dict, size_keys: Sequence[str],
                   target_name: str) -> Optional[str]:
    """``the file's VisionTransformer has embed_dim 192, <target_name> embed_dim 768``: the
    entries of ``size_keys`` (the backbone's) in which the file's geometry ``source`` and
    ``target`` differ, or None when none does."""
    differ = [key for key in size_keys
              if key in source and key in target and source[key] != target[key]]
    if not differ:
        return None
    return (f"the file's {source['type']} has "
            f"{', '.join(f'{key} {source[key]}' for key in differ)}, {target_name} "
            f"{', '.join(f'{key} {target[key]}' for key in differ)}")


def _indented(line: Optional[str]) -> Optional[str]:
    """``line`` as a closing line under a message's heading."""
    return f'  {line}' if line else None


def _sized_by(geometry: dict) -> str:
    """What sets the size of a file's backbone, for a message: its ``arch`` where it has one,
    else the entries its backbone class names as its size (a timm model's ``model_name``)."""
    if geometry.get('arch') is not None:
        return f"arch {geometry['arch']!r}"
    backbone_class = MODELS.get(geometry['type']) if geometry.get('type') else None
    entries = [key for key in getattr(backbone_class, 'size_keys', ()) if key in geometry]
    return ', '.join(f'{key} {geometry[key]!r}' for key in entries) or 'size not recorded'


def _backbone_prefix(model: nn.Module) -> str:
    """``'backbone.'`` (its name in ``model`` and a dot) for a model that holds a backbone; ``''``
    for a backbone itself."""
    return next((f'{name}.' for name, _ in _backbones(model) if name), '')


def _summary_line(path, target, source_format, summary: LoadSummary, prefix: str = '',
                  backbone_prefix: str = '') -> str:
    """One line of what was loaded. The parts of the backbone kept initialised are named one
    level inside it (``backbone.out_norms``): 'kept initialised backbone' would read as the
    whole backbone."""
    parts = [f'loaded {len(summary.loaded)} tensors of {path} ({source_format} format) '
             f'into {target}']
    if summary.resized:
        resized = [f'{key} {old}->{new}' for key, (old, new) in summary.resized.items()]
        parts.append('resized ' + ', '.join(resized[:3]) +
                     (f' and {len(resized) - 3} more' if len(resized) > 3 else ''))
    if summary.rebuilt:
        parts.append('kept the model\'s own ' + ', '.join(summary.rebuilt))
    if summary.left_out:
        parts.append('left out ' + ', '.join(top_level_names(summary.left_out, within=prefix,
                                                              count=True)))
    if summary.missing_allowed:
        parts.append('kept initialised ' + ', '.join(top_level_names(
            summary.missing_allowed, within=backbone_prefix, count=True)))
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
        self.checkpoint = checkpoint_path(checkpoint, 'FastMIMPretrained')
        self.prefix = prefix
        self.allow_missing = tuple(allow_missing)
        self.map_location = map_location

    def __call__(self, module: nn.Module) -> None:
        load_pretrained(module, self.checkpoint, prefix=self.prefix,
                        allow_missing=self.allow_missing, map_location=self.map_location)
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=f'FastMIMPretrained: loaded {self.prefix!r} '
                             f'from {self.checkpoint}')


@WEIGHT_INITIALIZERS.register_module(name='Pretrained')
class CheckedPretrainedInit(PretrainedInit):
    """mmengine's ``Pretrained`` in the fastmim scope, refusing a checkpoint that gives the
    module none of its weights.

    mmengine loads non-strictly and only logs what did not match, so ``Pretrained`` without
    ``prefix='backbone.'`` on a fastmim checkpoint (whose backbone keys are ``backbone.*``), or
    on a reference-release file (``{'model': ...}``), loads nothing into a backbone and training
    goes on from random weights. A partial load is left as mmengine does it; the keys are
    compared after the backbones' own renaming (:func:`adapt_for_backbones`), as loading sees
    them. The name stays ``'Pretrained'``: mmengine's ``init_weights`` runs it after the
    children's initialisation only under that name.

    The file is read once, by mmengine's ``_load_checkpoint`` (so by the weights-only loader
    fastmim registers for local paths), and both the check and the load use what it returned.
    Loading then runs mmengine's own functions: ``_load_checkpoint_to_model`` without a prefix,
    ``load_state_dict`` with one. mmengine's prefix selection exists only inside
    ``_load_checkpoint_with_prefix``, which reads the file itself, so :meth:`_under_prefix`
    repeats its three lines. ``__call__`` restates the parent's rather than calling it after
    the check: the parent's reads the file again, and stops on an assertion (gone under
    ``python -O``) where the file has nothing under the prefix, which the check names instead.
    """

    def __init__(self, checkpoint: str, prefix: Optional[str] = None, map_location='cpu'):
        super().__init__(checkpoint_path(checkpoint, 'Pretrained'), prefix, map_location)

    def __call__(self, module: nn.Module) -> None:
        checkpoint = _load_checkpoint(self.checkpoint, map_location=self.map_location)
        if not isinstance(checkpoint, dict):
            raise CheckpointError(f'{self.checkpoint} holds a {type(checkpoint).__name__}, not a '
                                  f'dict of weights')
        weights = checkpoint['state_dict'] if 'state_dict' in checkpoint else checkpoint
        if self.prefix is None:
            # The keys load_checkpoint's default revise_keys gives: a DDP 'module.' removed.
            self._check_some_weights_fit(
                {str(key).removeprefix('module.'): value for key, value in weights.items()},
                weights, module)
            print_log(f'load model from: {self.checkpoint}', logger='current')
            _load_checkpoint_to_model(module, checkpoint, strict=False, logger='current')
        else:
            selected = self._under_prefix(weights)
            self._check_some_weights_fit(selected, weights, module)
            print_log(f'load {self.prefix} in model from: {self.checkpoint}', logger='current')
            load_state_dict(module, selected, strict=False, logger='current')
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=self._get_init_info())

    def _under_prefix(self, weights: dict) -> dict:
        """The weights under ``prefix`` (a dot added when it has none), the prefix removed:
        what ``_load_checkpoint_with_prefix`` returns."""
        prefix = self.prefix if self.prefix.endswith('.') else self.prefix + '.'
        return {key[len(prefix):]: value for key, value in weights.items()
                if key.startswith(prefix)}

    def _check_some_weights_fit(self, selected: dict, weights: dict, module: nn.Module) -> None:
        """Raise :class:`CheckpointError` unless a tensor of ``selected`` (the keys loading
        will see) names a weight of ``module``; the message lists the top-level names of the
        file's ``weights``."""
        tensors = {key: value for key, value in selected.items()
                   if isinstance(value, torch.Tensor)}
        adapted, _ = adapt_for_backbones(tensors, module)
        if adapted.keys() & module.state_dict().keys():
            return
        raise CheckpointError(
            f"{self.checkpoint}: type='Pretrained' (prefix {self.prefix!r}) finds none of the "
            f'weights of {type(module).__name__} in it (its top-level names: '
            f"{listing(top_level_names(weights))}); {self._prefix_fix()}, or use "
            "type='FastMIMPretrained', which also reads the reference release and timm files "
            'and refuses partial loads')

    def _prefix_fix(self) -> str:
        """The prefix that finds the weights: ``backbone.`` for a fastmim checkpoint, or, where
        that is the one given, none for a file whose keys have no prefix (a timm state dict)."""
        if (self.prefix or '').rstrip('.') == 'backbone':
            return 'for a file whose keys have no prefix (a timm state dict) leave prefix out'
        return "for the backbone of a fastmim checkpoint give prefix='backbone.'"


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def checkpoint_path(checkpoint, initializer: str) -> str:
    """``checkpoint`` as a path string; ``None`` or ``''`` (a config's way of saying "no
    pre-training") would fail inside mmengine's loader with a ``TypeError`` traceback or a
    "not found" naming nothing."""
    if not isinstance(checkpoint, (str, os.PathLike)) or not str(checkpoint):
        raise ValueError(f'{initializer}: checkpoint must be the path of a checkpoint file, got '
                         f'{checkpoint!r}; init_cfg=None (e.g. --cfg-options '
                         f'model.backbone.init_cfg=None) starts from random weights instead')
    return str(checkpoint)


def _submodule(model: nn.Module, name: str) -> Optional[nn.Module]:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(key, pattern) for pattern in patterns)
