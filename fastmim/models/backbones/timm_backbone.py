"""Any timm model as a backbone: its feature maps, or its own pooled image features.

ResNet, ConvNeXt and the other timm families become FastMIM backbones without code:

- ``features_only=True`` (default): timm's ``features_only`` interface extracts the stage
  outputs; this class returns them as NCHW tuples and reports their channels and strides. This
  is what pre-training, detection and segmentation need.
- ``features_only=False``: the whole timm model without its classifier (``num_classes=0``),
  so the output is timm's own pre-logits vector ``(B, num_features)``: the layers a family puts
  after its last stage (EfficientNet's ``conv_head`` + ``bn2``, ConvNeXt's head norm, ...) and
  its pooling are kept. This is what evaluating or fine-tuning a timm classifier's published
  weights needs; pooled vectors have no stride, so FastMIM pre-training refuses them.

Position-embedding models are better served by the dedicated classes (``VisionTransformer``,
``SwinTransformer``), which adapt to new input sizes.
"""
import difflib
import os.path as osp
from typing import (Callable, Dict, FrozenSet, List, NamedTuple, Optional, Sequence, Set,
                    Tuple, Union)

import timm
import torch
from mmengine.model import BaseModule
from timm.layers import PatchEmbed
from timm.models import group_parameters, parse_model_name
from timm.optim import auto_group_layers
from torch import nn

from fastmim.errors import CheckpointError
from fastmim.load_problems import listing
from fastmim.models.utils.backbone_contract import BackboneContract, StateDict
from fastmim.registry import MODELS
from .base import as_index_tuple, check_drop_path_rate, normalise_out_indices, plain_size


@MODELS.register_module()
class TimmBackbone(BackboneContract, BaseModule):
    """Feature maps of ``timm.create_model(model_name, features_only=True, ...)``, or the pooled
    features of ``timm.create_model(model_name, num_classes=0, ...)``.

    Args:
        model_name: any name ``timm.list_models()`` knows, e.g. ``'resnet50'``.
        pretrained: load timm's published weights (needs the Hugging Face hub or its cache).
            Read weights-only, as every checkpoint (``fastmim.engine.checkpoint``):
            ``--trust-checkpoint`` with the downloaded file's path allows full unpickling.
        out_indices: indices into the model's ``feature_info`` (negative values count from the
            end); e.g. ResNet-50 has strides 2, 4, 8, 16, 32 at indices 0-4. One int is that one
            index, as in the other backbones (not timm's "the last n"). Only with
            ``features_only=True``.
        features_only: ``True``: a tuple of NCHW maps. ``False``: a 1-tuple holding timm's
            pooled pre-logits features ``(B, num_features)``, for ``ImageClassifier``.
        checkpoint_path: local weights of the full timm model (a classifier checkpoint);
            loaded by timm's pretrained path, so its ``checkpoint_filter_fn`` converts foreign
            formats and the classifier is dropped. Loaded weights-only, as ``pretrained``.
        with_cp: activation checkpointing through timm's ``set_grad_checkpointing`` (whenever
            gradients are on, the activations of the model's blocks are recomputed in the
            backward pass instead of kept: less memory, same results). Off by default.
        frozen_stages: freeze the stem (0) and the first n stages (n), as timm's coarse
            ``group_matcher`` groups the model (ResNet: ``conv1`` + ``bn1``, then ``layer1``
            ... ``layer4``, as mmdet's ResNet); every stage also freezes what follows the last
            one (a head norm). A module without parameters (a ViT's ``pos_drop``) goes with
            the stage it follows. -1 (default): nothing. Models without a ``group_matcher``
            take -1 only.
        init_cfg: mmengine init config.
        **kwargs: passed to ``timm.create_model`` (``drop_path_rate``, ``img_size``, ...).
    """

    # The model name sets the size (resnet18 / resnet50); the geometry records nothing finer.
    size_keys = ('model_name', )

    def __init__(self,
                 model_name: str,
                 pretrained: bool = False,
                 out_indices: Union[int, Sequence[int]] = (-1, ),
                 features_only: bool = True,
                 checkpoint_path: Optional[str] = None,
                 with_cp: bool = False,
                 frozen_stages: int = -1,
                 init_cfg: Optional[Union[dict, list]] = None,
                 **kwargs) -> None:
        super().__init__(init_cfg)
        check_timm_model_name(model_name, 'TimmBackbone: model_name', hub_names=True)
        if 'drop_path_rate' in kwargs:
            check_drop_path_rate(kwargs['drop_path_rate'], f'TimmBackbone({model_name!r})')
        out_indices = as_index_tuple(out_indices)
        create_kwargs = dict(kwargs)
        if features_only:
            create_kwargs.update(features_only=True, out_indices=out_indices)
        else:
            _check_pooled_arguments(model_name, out_indices, kwargs)
            create_kwargs['num_classes'] = 0
        if checkpoint_path is not None:
            if pretrained:
                raise ValueError(f'TimmBackbone({model_name!r}): give either pretrained=True or '
                                 f'checkpoint_path, not both')
            if not osp.isfile(checkpoint_path):
                raise FileNotFoundError(f'TimmBackbone({model_name!r}): checkpoint_path '
                                        f'{checkpoint_path!r} is not a file')
            create_kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=checkpoint_path))
        else:
            create_kwargs['pretrained'] = pretrained
        self.model = _create_model(model_name, create_kwargs)
        self.keeps_own_linear_init = bool(create_kwargs['pretrained'])
        if with_cp:
            self.model.set_grad_checkpointing(True)

        self.model_name = model_name
        self.features_only = features_only
        self.img_size = kwargs.get('img_size')
        if features_only:
            self.out_indices = list(self.model.feature_info.out_indices)
            self.out_channels = list(self.model.feature_info.channels())
            self._out_strides = list(self.model.feature_info.reduction())
        else:
            self.out_indices = []
            self.out_channels = [self.model.num_features]
            self._out_strides = None
        # A few families (Swin, ...) return channels-last maps; the contract is NCHW.
        self.channels_last = features_only and str(
            getattr(self.model, 'output_fmt', 'NCHW')).endswith('NHWC')
        self._reference: Optional[TimmReference] = None  # built when asked
        self._classifier_prefixes: Optional[Tuple[str, ...]] = None  # read when asked
        self._stages: Optional[TimmStages] = None  # read when asked
        self.fixed_input_size = _fixed_input_size(self.model)
        if frozen_stages != -1:  # (reading the stages builds timm's model on the meta device)
            self.freeze_stages(frozen_stages)

    @property
    def out_strides(self) -> List[int]:
        """Strides of the feature maps. Pooled features have none: asking for them (FastMIM
        pre-training, dense heads) raises an error that says which option to change."""
        if self._out_strides is None:
            raise ValueError(
                f'TimmBackbone({self.model_name!r}, features_only=False) returns pooled vectors '
                f'(B, {self.out_channels[0]}), which have no stride: FastMIM pre-training and '
                f'dense (detection / segmentation) heads need feature maps, '
                f'features_only=True')
        return self._out_strides

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self._check_input_size(tuple(x.shape[-2:]))
        features = self.model(x)
        if not self.features_only:
            return (features, )
        if self.channels_last:
            features = [feature.permute(0, 3, 1, 2).contiguous() for feature in features]
        return tuple(features)

    def _check_input_size(self, size: Tuple[int, int]) -> None:
        """A model built for one input size (see :func:`_fixed_input_size`) refuses any other
        in one line that names the argument to change; timm's own check is a bare
        ``AssertionError`` (a 224-px ViT fed FastMIM's 128-px crops)."""
        if self.fixed_input_size is None or size == self.fixed_input_size:
            return
        raise ValueError(
            f'TimmBackbone({self.model_name!r}) takes {self.fixed_input_size[0]}x'
            f'{self.fixed_input_size[1]} inputs only, got {size[0]}x{size[1]}: set '
            f'img_size={plain_size(size)} (model.backbone.img_size, passed to '
            f'timm.create_model) or dynamic_img_size=True')

    def geometry(self) -> Dict:
        """Plain-type description stored in checkpoints (``meta['geometry']``). Pooled
        backbones say ``features_only=False``; the key is absent for feature maps, the default,
        so checkpoints written before the option existed read the same."""
        geometry = dict(type='TimmBackbone', model_name=self.model_name)
        if self.features_only:
            geometry.update(out_indices=list(self.out_indices),
                            out_strides=list(self.out_strides))
        else:
            geometry.update(features_only=False, num_features=self.out_channels[0])
        if self.img_size is not None:
            geometry['img_size'] = (
                self.img_size if isinstance(self.img_size, int) else list(self.img_size))
        return geometry

    def adapt_state_dict(self, state: StateDict,
                         source_geometry: Optional[dict] = None) -> StateDict:
        """Weights in the names of the full timm model (``timm.create_model(name,
        num_classes=0)``'s, as ``tools/convert/to_timm.py`` writes them for this backbone)
        renamed to this backbone's: ``model.`` and the extractor's names
        (:func:`full_model_namer`). The full model's tensors that the extractor has no module
        for (a head norm after pooling, stages past the last ``out_indices``) are left out, as
        timm's own ``features_only`` loading drops them. Keys in this backbone's names, and keys
        the full model has not either (a classifier), pass unchanged: the caller names the
        latter."""
        own = self.state_dict()
        if all(key in own for key in state):
            return state
        body = self.timm_model(self.geometry(), num_classes=0)
        full_name = full_model_namer(body)
        own_by_full_name = {full_name(key[len('model.'):]): key for key in own}
        body_names = body.state_dict().keys()
        adapted = {}
        for key, value in state.items():
            if key in own or key not in body_names:
                adapted[key] = value
            elif key in own_by_full_name:
                adapted[own_by_full_name[key]] = value
        return adapted

    def timm_classifier_prefixes(self) -> Tuple[str, ...]:
        """The classifier of the wrapped timm model, as its ``pretrained_cfg`` names it (ResNet's
        ``fc``, EfficientNet's ``classifier``, a distilled DeiT's ``head`` and ``head_dist``):
        the family's name, which no class attribute can give for every timm model. Read from
        the full model built on the meta device (an extractor has no ``pretrained_cfg``). A
        norm after pooling (a ViT's ``fc_norm``) is no classifier part here: the pooled
        backbone (``num_classes=0``) keeps it, and :meth:`adapt_state_dict` leaves it out of
        an extractor. Read once: every checkpoint load asks, and the meta model costs up to
        0.2 s to build."""
        if self._classifier_prefixes is None:
            classifier = self.timm_model(self.geometry()).pretrained_cfg.get('classifier',
                                                                             'head')
            names = (classifier, ) if isinstance(classifier, str) else classifier
            self._classifier_prefixes = tuple(sorted({name.split('.')[0] + '.'
                                                      for name in names}))
        return self._classifier_prefixes

    def layer_id(self, name: str) -> int:
        """timm's own grouping of the full model (``group_matcher``, or ``auto_group_layers``
        for models without one), as ``timm.optim.param_groups_layer_decay`` uses it."""
        ids = self._timm_reference().layer_ids
        if name not in ids:
            raise ValueError(f'layer decay: {name!r} is not a parameter of '
                             f'TimmBackbone({self.model_name!r})')
        return ids[name]

    @property
    def num_layer_ids(self) -> int:
        return self._timm_reference().rest_id + 1

    def no_weight_decay_names(self) -> Set[str]:
        """The full timm model's ``no_weight_decay()`` in this backbone's names: timm's feature
        extractors do not pass that method on, so Swin-V2's logit scales or a ViT's position
        embedding would have been decayed."""
        return set(self._timm_reference().no_weight_decay)

    @property
    def num_stages(self) -> int:
        return self._timm_stages().num_stages

    def stage_of(self, name: str) -> Optional[int]:
        """A parameter's coarse timm group (:meth:`_timm_stages`); a module's, the one
        stage all its parameters are in (None where they span stages), or for a module without
        parameters the stage its place in the model gives it (:meth:`_stages_of_modules`)."""
        return self._timm_stages().of_name.get(name)

    def _timm_stages(self) -> 'TimmStages':
        """Stages of this backbone's parameters and modules, read from timm's coarse grouping
        of the full model (``group_matcher(coarse=True)``: the stem 0, then one group per
        stage, or per block for a ViT), mapped to this backbone's names as
        :meth:`_timm_reference` maps them. The stages end with the group of the full model's
        last feature level (``feature_info``); later groups (a final norm, the head) count as
        the last stage, frozen with every stage only. Computed once."""
        if self._stages is not None:
            return self._stages
        with torch.device('meta'):
            reference = timm.create_model(self.model_name, pretrained=False)
        if not hasattr(reference, 'group_matcher'):
            raise ValueError(f'TimmBackbone({self.model_name!r}): timm gives this model no '
                             f'group_matcher, which says what its stem and stages are; '
                             f'frozen_stages takes -1 only')
        groups = group_parameters(reference, reference.group_matcher(coarse=True), reverse=True)
        last_level = reference.feature_info[-1]['module'] + '.'
        num_stages = max(group for name, group in groups.items() if name.startswith(last_level))
        reference_name = full_model_namer(reference)
        of_parameter = {name: min(groups[reference_name(name[len('model.'):])], num_stages)
                        for name, _ in self.named_parameters()}
        self._stages = TimmStages(self._stages_of_modules(of_parameter), num_stages)
        return self._stages

    def _stages_of_modules(self, of_parameter: Dict[str, int]) -> Dict[str, int]:
        """``of_parameter`` with the stages of the modules: one with parameters takes the
        stage all of them are in (none where they span stages). One without (a ViT's
        ``pos_drop`` after the embedding, an identity ``norm_pre``, a ResNet's ``maxpool``) has
        no timm group, yet a dropout there must stop with the stage it follows: it takes its
        parent's stage, or, under a parent spanning stages, the stage of the last parameter
        registered before it (timm registers modules in the order its forward runs them);
        before any parameter, the stem's."""
        of_name = dict(of_parameter)
        preceding = 0
        for module_name, module in self.named_modules():
            prefix = f'{module_name}.' if module_name else ''
            stages = {of_parameter[prefix + name] for name, _ in module.named_parameters()}
            if len(stages) == 1:
                of_name[module_name] = stages.pop()
            elif not stages and module_name:
                of_name[module_name] = of_name.get(module_name.rpartition('.')[0], preceding)
            own = [of_parameter[prefix + name]
                   for name, _ in module.named_parameters(recurse=False)]
            preceding = own[-1] if own else preceding
        return of_name

    def _timm_reference(self) -> 'TimmReference':
        """What timm says of this extractor's parameters, read from the full timm model of the
        same name: layer ids, the rest id and the parameters exempt from weight decay.

        The feature extractor has lost the classifier and renamed some modules, so the full
        model is built on the meta device (no memory, no initialisation cost), grouped, and the
        extractor's names are mapped back to its names: ``FeatureGetterNet`` (ViT, ...) keeps
        the model as ``model.``, ``FeatureListNet`` flattens ``stages.0`` into ``stages_0``
        (``flatten_sequential``). The rest id is the one timm gives the classifier (its
        largest). Computed once.
        """
        if self._reference is not None:
            return self._reference
        with torch.device('meta'):
            reference = timm.create_model(self.model_name, pretrained=False)
        if hasattr(reference, 'group_matcher'):
            reference_ids = group_parameters(
                reference, reference.group_matcher(coarse=False), reverse=True)
        else:
            reference_ids = auto_group_layers(reference)
        no_weight_decay = set(reference.no_weight_decay()) if hasattr(
            reference, 'no_weight_decay') else set()
        reference_name = full_model_namer(reference)
        ids, exempt = {}, set()
        for name, _ in self.model.named_parameters():
            full_name = reference_name(name)
            if full_name not in reference_ids:
                raise ValueError(
                    f'layer decay: TimmBackbone({self.model_name!r}) parameter '
                    f'{"model." + name!r} (timm name {full_name!r}) is not a parameter of '
                    f'timm.create_model({self.model_name!r}) with default arguments, whose '
                    f'grouping gives the ids')
            ids[f'model.{name}'] = reference_ids[full_name]
            if full_name in no_weight_decay:
                exempt.add(f'model.{name}')
        self._reference = TimmReference(ids, max(reference_ids.values()), frozenset(exempt))
        return self._reference

    @classmethod
    def timm_model(cls, geometry: dict, **kwargs) -> nn.Module:
        """The full timm model the checkpoint's extractor was built from (meta device);
        ``kwargs`` go to ``timm.create_model``."""
        if 'img_size' in geometry:
            kwargs['img_size'] = geometry['img_size']
        with torch.device('meta'):
            return timm.create_model(geometry['model_name'], pretrained=False, **kwargs)

    @classmethod
    def timm_state_dict(cls, state: StateDict, geometry: dict,
                        path: str) -> Tuple[StateDict, List[str]]:
        """The weights under the names of the full timm model (:func:`full_model_namer`,
        after the ``model.`` this class keeps timm's model under): written under the
        extractor's names, no timm model loaded them. A key that does not come out as a name
        of the full model is named instead of written."""
        reference = cls.timm_model(geometry)
        names, full_name = reference.state_dict(), full_model_namer(reference)
        renamed, unknown = {}, []
        for key, value in state.items():
            name = full_name(key[len('model.'):]) if key.startswith('model.') else None
            if name in names:
                renamed[name] = value
            else:
                unknown.append(f'backbone.{key}')
        if unknown:
            model_name = geometry['model_name']
            raise CheckpointError(f'{path}: TimmBackbone({model_name!r}) tensors without a '
                                  f'counterpart in timm.create_model({model_name!r}): '
                                  f'{listing(unknown)}; nothing was written')
        return renamed, []


def full_model_namer(reference: nn.Module) -> Callable[[str], str]:
    """A name inside timm's ``features_only`` extractor of ``reference``'s architecture -> the
    name in the full model ``reference``: ``FeatureGetterNet`` (ViT, ...) keeps the model as
    ``model.``, ``FeatureListNet`` flattens the first level of ``nn.Sequential`` children
    (``stages.0`` -> ``stages_0``). Names of the pooled backbone (the full model) stay."""
    children = dict(reference.named_children())
    flattened = {
        f'{name}_{child}': f'{name}.{child}'
        for name, module in children.items() if isinstance(module, nn.Sequential)
        for child, _ in module.named_children()
    }

    def full_name(name: str) -> str:
        top, _, remainder = name.partition('.')
        if top == 'model' and top not in children:
            return remainder
        if top in flattened and top not in children:
            return f'{flattened[top]}.{remainder}'
        return name

    return full_name


class TimmStages(NamedTuple):
    """Stages (for ``frozen_stages``) of a :class:`TimmBackbone`'s parameters and modules."""
    of_name: Dict[str, int]
    num_stages: int


class TimmReference(NamedTuple):
    """What the full timm model says of a :class:`TimmBackbone`'s parameters (its names)."""
    layer_ids: Dict[str, int]
    rest_id: int
    no_weight_decay: FrozenSet[str]


def _fixed_input_size(model: nn.Module) -> Optional[Tuple[int, int]]:
    """The one input size ``model`` takes, when its input is embedded by timm's
    ``PatchEmbed`` with a strict ``img_size`` (ViT, DeiT, Swin, ... built for 224 px unless
    told otherwise); None for models that take any size (CNNs, ``dynamic_img_size=True``)."""
    embed = next((module for module in model.modules() if isinstance(module, PatchEmbed)), None)
    if embed is None or embed.img_size is None or not embed.strict_img_size:
        return None
    return tuple(embed.img_size)


def check_timm_model_name(model_name: str, named_as: str, hub_names: bool = False) -> None:
    """Refuse a name timm does not know with the closest names it does know (timm itself raises
    a bare ``RuntimeError`` deep in its factory). ``named_as`` says where the name was given
    (``'--arch'``, ``'TimmBackbone: model_name'``). ``hub_names``: hub and local-folder names
    (``hf-hub:...``) are left to timm, which resolves them by downloading or reading their
    config."""
    if timm.is_model(model_name) or (hub_names and parse_model_name(model_name)[0]):
        return
    close = difflib.get_close_matches(model_name, timm.list_models(), n=3)
    hint = f'did you mean {" or ".join(map(repr, close))}? ' if close else ''
    raise ValueError(f'{named_as} {model_name!r} is not a timm model; {hint}'
                     f'(timm.list_models() lists them)')


def _create_model(model_name: str, create_kwargs: dict) -> nn.Module:
    """``timm.create_model``, with ``out_indices`` beyond the feature levels named as the other
    backbones name them: timm indexes its ``feature_info`` with them unchecked (a bare
    ``IndexError`` from deep inside timm)."""
    try:
        return timm.create_model(model_name, **create_kwargs)
    except IndexError:
        if create_kwargs.get('features_only'):
            _check_out_indices(model_name, create_kwargs)
        raise


def _check_out_indices(model_name: str, create_kwargs: dict) -> None:
    """Refuse ``out_indices`` outside the feature levels of the full model, built on the meta
    device (no memory, no initialisation) with the same architecture arguments."""
    model_kwargs = {key: value for key, value in create_kwargs.items()
                    if key not in ('features_only', 'out_indices', 'pretrained',
                                   'pretrained_cfg_overlay')}
    with torch.device('meta'):
        levels = len(timm.create_model(model_name, **model_kwargs).feature_info)
    normalise_out_indices(f'TimmBackbone({model_name!r})', create_kwargs['out_indices'], levels,
                          'feature levels')


def _check_pooled_arguments(model_name: str, out_indices: Sequence[int], kwargs: dict) -> None:
    """Arguments that only make sense for feature maps, or that ``features_only=False`` sets
    itself, are errors rather than silently ignored."""
    if tuple(out_indices) != (-1, ):
        raise ValueError(f'TimmBackbone({model_name!r}, features_only=False) returns one pooled '
                         f'vector per image; out_indices={tuple(out_indices)} selects feature '
                         f'maps, which needs features_only=True')
    if 'num_classes' in kwargs:
        raise ValueError(f'TimmBackbone({model_name!r}, features_only=False) builds the model '
                         f'without its classifier (num_classes=0); the classifier is the head '
                         f'of ImageClassifier, got num_classes={kwargs["num_classes"]!r}')
