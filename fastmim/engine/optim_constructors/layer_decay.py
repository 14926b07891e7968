"""Layer-wise learning-rate decay for fine-tuning pre-trained backbones (BEiT / MAE / SimMIM).

Every parameter gets a *layer id*: 0 for the input embedding, 1 ... L for the blocks in the order
the input meets them, and ``L + 1`` ("rest") for everything after the last block: the final norm,
and every parameter outside the backbone (classification head, necks, decode heads). Its learning
rate is ``lr * layer_decay_rate ** (L + 1 - layer_id)``: the head learns at the full rate and
every block closer to the input at a geometrically smaller one, so the generic low-level features
of pre-training move least. ``L + 1`` is MAE's ``num_layers`` (``len(blocks) + 1``), and SimMIM's
``num_layers - 1`` for Swin.

Layer ids per backbone (fastmim's backbones keep timm's parameter names):

* ``VisionTransformer``: ``patch_embed``, ``cls_token``, ``pos_embed``, ``norm_pre`` -> 0;
  ``blocks.i`` -> ``i + 1``; rest (``norm``, head) -> ``depth + 1`` (13 for ViT-B).
* ``SwinTransformer``: ``patch_embed`` -> 0; block ``j`` of stage ``s`` -> (blocks before ``s``)
  + ``j + 1``; rest -> ``sum(depths) + 1`` (25 for Swin-B). timm's ``layers.{s}.downsample``
  (patch merging) *opens* stage ``s``: it is the original Swin's ``layers.{s-1}.downsample`` that
  *closes* stage ``s - 1``, whose id is "blocks up to and including stage ``s - 1``" (SimMIM,
  FastMIM). So timm's ``layers.{s}.downsample`` gets ``sum(depths[:s])``, the id of the last block
  before it; for Swin-B: ``layers.1`` -> 2, ``layers.2`` -> 4, ``layers.3`` -> 22.
* ``PyramidVisionTransformerV2`` (timm): the same scheme as Swin. ``stages.{s}.downsample``
  (the overlapping patch embedding that opens stage ``s``) -> ``sum(depths[:s])``; the norm that
  closes stage ``s`` (``stages.{s}.norm``) -> ``sum(depths[:s + 1])``, with the stage's last block.
* ``CMT``: ``stem`` -> 0; ``stages.{s}.downsample`` -> ``sum(depths[:s])`` as above; the relative
  position bias that the blocks of stage ``s`` share -> the id of the stage's first block, its
  earliest user.
* ``TimmBackbone``: timm's own grouping of the full timm model (``model.group_matcher``, or
  ``timm.optim.auto_group_layers`` for models without one), as ``timm.optim.
  param_groups_layer_decay`` uses it; rest is the id timm gives the classifier (its largest).

Weight decay is off for biases, every 1-D parameter (all norm weights), and parameters whose own
name is in ``no_decay_names`` (position embeddings, class / mask tokens, relative position bias
tables): weight decay would pull them towards zero, which is no sensible prior for them.
"""
import inspect
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import timm
import torch
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from timm.models import group_parameters
from timm.optim import auto_group_layers
from torch import nn

from fastmim.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS

DEFAULT_NO_DECAY_NAMES = ('pos_embed', 'absolute_pos_embed', 'cls_token', 'mask_token',
                          'relative_position_bias_table', 'relative_position_bias')
PARAMWISE_KEYS = ('layer_decay_rate', 'no_decay_names', 'custom_keys')
CUSTOM_KEY_FIELDS = ('lr_mult', 'decay_mult')

LayerIds = Tuple[Dict[str, int], int]


def _ids_by_rule(module: nn.Module, layer_id: Callable[[str], int]) -> Dict[str, int]:
    return {name: layer_id(name) for name, _ in module.named_parameters()}


def vit_layer_ids(backbone: nn.Module) -> LayerIds:
    """Ids of a timm-named ViT: embedding 0, ``blocks.i`` -> ``i + 1``, rest ``depth + 1``."""
    rest = len(backbone.blocks) + 1
    embedding = ('patch_embed', 'cls_token', 'reg_token', 'pos_embed', 'norm_pre')

    def layer_id(name: str) -> int:
        top, _, remainder = name.partition('.')
        if top in embedding:
            return 0
        if top == 'blocks':
            return int(remainder.split('.')[0]) + 1
        return rest

    return _ids_by_rule(backbone, layer_id), rest


def hierarchical_layer_ids(backbone: nn.Module, stages_name: str,
                           stem_names: Sequence[str]) -> LayerIds:
    """Ids of a staged backbone whose stage ``s`` is ``<stages_name>.{s}`` with ``blocks``.

    Block ``j`` of stage ``s`` -> ``sum(depths[:s]) + j + 1``. Within a stage, what runs before
    the blocks (``downsample``) shares the id of the last block before it, what closes the stage
    (``norm``) the id of the stage's last block, and a tensor every block of the stage reads
    (CMT's ``relative_position_bias``) the id of its first block. See the module docstring.
    """
    stages = getattr(backbone, stages_name)
    depths = [len(stage.blocks) for stage in stages]
    starts = [sum(depths[:index]) for index in range(len(depths))]
    rest = sum(depths) + 1
    kind = type(backbone).__name__

    def layer_id(name: str) -> int:
        parts = name.split('.')
        if parts[0] in stem_names:
            return 0
        if parts[0] != stages_name:
            return rest
        stage, member = int(parts[1]), parts[2]
        if member == 'blocks':
            return starts[stage] + int(parts[3]) + 1
        if member == 'downsample':
            return starts[stage]
        if member == 'norm':
            return starts[stage] + depths[stage]
        if member == 'relative_position_bias':
            return starts[stage] + 1
        raise ValueError(f'layer decay: {kind} parameter {name!r} is in stage {stage} but is '
                         f'none of blocks / downsample / norm / relative_position_bias, so it has '
                         f'no layer id')

    return _ids_by_rule(backbone, layer_id), rest


def timm_layer_ids(backbone: nn.Module) -> LayerIds:
    """Ids of a ``TimmBackbone`` from timm's grouping of the full model of the same name.

    The feature extractor has lost the classifier and renamed some modules, so the full model is
    built on the meta device (no memory, no initialisation cost), grouped the way
    ``timm.optim.param_groups_layer_decay`` groups it, and the extractor's names are mapped back
    to its names: ``FeatureGetterNet`` (ViT, ...) keeps the model as ``model.``,
    ``FeatureListNet`` flattens ``stages.0`` into ``stages_0`` (``flatten_sequential``).
    """
    with torch.device('meta'):
        reference = timm.create_model(backbone.model_name, pretrained=False)
    if hasattr(reference, 'group_matcher'):
        reference_ids = group_parameters(
            reference, reference.group_matcher(coarse=False), reverse=True)
    else:
        reference_ids = auto_group_layers(reference)
    children = dict(reference.named_children())
    flattened = {
        f'{name}_{child}': f'{name}.{child}'
        for name, module in children.items() if isinstance(module, nn.Sequential)
        for child, _ in module.named_children()
    }

    def reference_name(name: str) -> str:
        top, _, remainder = name.partition('.')
        if top == 'model' and top not in children:
            return remainder
        if top in flattened and top not in children:
            return f'{flattened[top]}.{remainder}'
        return name

    ids = {}
    for name, _ in backbone.model.named_parameters():
        full_name = reference_name(name)
        if full_name not in reference_ids:
            raise ValueError(
                f'layer decay: TimmBackbone({backbone.model_name!r}) parameter {"model." + name!r} '
                f'(timm name {full_name!r}) is not a parameter of timm.create_model('
                f'{backbone.model_name!r}) with default arguments, whose grouping gives the ids')
        ids[f'model.{name}'] = reference_ids[full_name]
    return ids, max(reference_ids.values())


def backbone_layer_ids(backbone: nn.Module) -> LayerIds:
    """``({parameter name: layer id}, rest id)`` for one of fastmim's backbones."""
    # Imported here: the engine must not import every model at start-up (and models may one day
    # import engine utilities).
    from fastmim.models.backbones import (CMT, PyramidVisionTransformerV2, SwinTransformer,
                                          TimmBackbone, VisionTransformer)
    if isinstance(backbone, VisionTransformer):
        return vit_layer_ids(backbone)
    if isinstance(backbone, SwinTransformer):
        return hierarchical_layer_ids(backbone, 'layers', ('patch_embed', 'absolute_pos_embed'))
    if isinstance(backbone, PyramidVisionTransformerV2):
        return hierarchical_layer_ids(backbone, 'stages', ('patch_embed', ))
    if isinstance(backbone, CMT):
        return hierarchical_layer_ids(backbone, 'stages', ('stem', ))
    if isinstance(backbone, TimmBackbone):
        return timm_layer_ids(backbone)
    raise TypeError(f'layer decay: no layer ids for backbone type {type(backbone).__name__}; '
                    f'supported: VisionTransformer, SwinTransformer, PyramidVisionTransformerV2, '
                    f'CMT, TimmBackbone (fastmim.models.backbones)')


def model_layer_ids(model: nn.Module) -> LayerIds:
    """Ids for a whole model: its ``backbone`` (or the model itself when it is a backbone) gets
    the backbone's ids under the ``backbone.`` prefix; any other parameter (head, neck, decoder)
    is "rest" (absent from the returned mapping)."""
    backbone = getattr(model, 'backbone', None)
    if isinstance(backbone, nn.Module):
        ids, rest = backbone_layer_ids(backbone)
        return {f'backbone.{name}': layer_id for name, layer_id in ids.items()}, rest
    return backbone_layer_ids(model)


def format_group_table(param_groups: List[dict]) -> str:
    """One row per parameter group: layer id, lr scale, lr, weight decay, tensors, elements."""
    rows = [f'{"layer":>5} {"lr_scale":>9} {"lr":>10} {"wd":>7} {"tensors":>7} {"elements":>11}'
            f'  custom_key']
    for group in param_groups:
        weight_decay = group.get('weight_decay', 'default')
        rows.append(f'{group["layer_id"]:>5} {group["lr_scale"]:>9.4g} {group["lr"]:>10.3e} '
                    f'{weight_decay:>7} {len(group["params"]):>7} '
                    f'{sum(p.numel() for p in group["params"]):>11,}  '
                    f'{group["custom_key"] or ""}')
    return '\n'.join(rows)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor:
    """Optimiser wrapper with layer-wise lr decay, for fine-tuning (mmengine constructor API).

    Config (``optim_wrapper`` of an mmengine config)::

        optim_wrapper = dict(
            type='OptimWrapper',
            optimizer=dict(type='AdamW', lr=2.4e-3, betas=(0.9, 0.999), weight_decay=0.05),
            constructor='LayerDecayOptimWrapperConstructor',  # 'fastmim.' prefix outside
            paramwise_cfg=dict(layer_decay_rate=0.7))        # the fastmim scope

    Args:
        optim_wrapper_cfg: the wrapper config without ``constructor`` / ``paramwise_cfg``; its
            ``optimizer`` must give ``lr``.
        paramwise_cfg: ``layer_decay_rate`` (required, in (0, 1]; 0.70 ViT-B and 0.80 Swin-B
            in FastMIM's fine-tuning recipes); ``no_decay_names``: parameter names (a full
            name or a dotted suffix of it, e.g. ``'pos_embed'``) exempt from weight decay,
            replacing the default :data:`DEFAULT_NO_DECAY_NAMES` (biases and 1-D parameters are
            always exempt); ``custom_keys``: ``{substring: dict(lr_mult=..., decay_mult=...)}``
            as in mmengine (the longest key found in a parameter's name wins, ties go to the
            alphabetically first), multiplying the layer-decayed lr and the weight decay.

    Each group carries ``layer_id``, ``lr_scale`` and ``custom_key``; a table of the groups is
    logged when the optimiser is built. Frozen parameters are left out.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        if not isinstance(optim_wrapper_cfg, dict) or not isinstance(
                optim_wrapper_cfg.get('optimizer'), dict):
            raise TypeError(f'LayerDecayOptimWrapperConstructor: optim_wrapper_cfg must be a dict '
                            f'with an "optimizer" dict, got {optim_wrapper_cfg!r}')
        self.optim_wrapper_cfg = dict(optim_wrapper_cfg)
        self.optimizer_cfg = dict(self.optim_wrapper_cfg.pop('optimizer'))
        if 'lr' not in self.optimizer_cfg:
            raise ValueError(f'LayerDecayOptimWrapperConstructor: optim_wrapper.optimizer needs '
                             f'"lr" (the rate of the last layer id), got {self.optimizer_cfg}')
        self.base_lr = self.optimizer_cfg['lr']
        self.base_wd = self.optimizer_cfg.get('weight_decay')

        paramwise_cfg = dict(paramwise_cfg or {})
        unknown = sorted(set(paramwise_cfg) - set(PARAMWISE_KEYS))
        if unknown:
            raise ValueError(f'LayerDecayOptimWrapperConstructor: paramwise_cfg keys {unknown} '
                             f'are not supported; expected keys {PARAMWISE_KEYS}')
        rate = paramwise_cfg.get('layer_decay_rate')
        if not isinstance(rate, (int, float)) or not 0 < rate <= 1:
            raise ValueError(f'LayerDecayOptimWrapperConstructor: paramwise_cfg.layer_decay_rate '
                             f'must be a number in (0, 1] (e.g. 0.7 for ViT-B), got {rate!r}')
        self.layer_decay_rate = float(rate)
        no_decay_names = paramwise_cfg.get('no_decay_names', DEFAULT_NO_DECAY_NAMES)
        if isinstance(no_decay_names, str) or not all(
                isinstance(name, str) for name in no_decay_names):
            raise TypeError(f'LayerDecayOptimWrapperConstructor: paramwise_cfg.no_decay_names '
                            f'must be a list of parameter names, got {no_decay_names!r}')
        self.no_decay_names = tuple(no_decay_names)
        self.custom_keys = self._checked_custom_keys(paramwise_cfg.get('custom_keys', {}))

    def _checked_custom_keys(self, custom_keys: dict) -> Dict[str, dict]:
        if not isinstance(custom_keys, dict):
            raise TypeError(f'LayerDecayOptimWrapperConstructor: paramwise_cfg.custom_keys must '
                            f'be a dict, got {custom_keys!r}')
        for key, fields in custom_keys.items():
            if not isinstance(fields, dict) or set(fields) - set(CUSTOM_KEY_FIELDS):
                raise ValueError(f'LayerDecayOptimWrapperConstructor: custom_keys[{key!r}] must '
                                 f'be a dict with keys among {CUSTOM_KEY_FIELDS}, got {fields!r}')
            if 'decay_mult' in fields and self.base_wd is None:
                raise ValueError(f'LayerDecayOptimWrapperConstructor: custom_keys[{key!r}] sets '
                                 f'decay_mult but optim_wrapper.optimizer has no weight_decay')
        # Longest first, alphabetical among equal lengths: mmengine's precedence.
        return {key: custom_keys[key] for key in sorted(sorted(custom_keys), key=len, reverse=True)}

    def is_no_decay(self, name: str, param: nn.Parameter) -> bool:
        """Biases, 1-D parameters (norms) and ``no_decay_names`` get no weight decay."""
        return (param.ndim <= 1 or name.endswith('.bias')
                or any(name == key or name.endswith('.' + key) for key in self.no_decay_names))

    def custom_key_of(self, name: str) -> Optional[str]:
        return next((key for key in self.custom_keys if key in name), None)

    def param_groups(self, model: nn.Module) -> List[dict]:
        """The optimiser's parameter groups, one per (layer id, decay or not, custom key)."""
        layer_ids, rest = model_layer_ids(model)
        groups = {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            layer_id = layer_ids.get(name, rest)
            no_decay = self.is_no_decay(name, param)
            custom_key = self.custom_key_of(name)
            key = (layer_id, no_decay, custom_key or '')
            if key not in groups:
                groups[key] = self._new_group(layer_id, rest, no_decay, custom_key)
            groups[key]['params'].append(param)
        return [groups[key] for key in sorted(groups)]

    def _new_group(self, layer_id: int, rest: int, no_decay: bool,
                   custom_key: Optional[str]) -> dict:
        multipliers = self.custom_keys.get(custom_key, {})
        lr_scale = self.layer_decay_rate**(rest - layer_id)
        group = dict(params=[], layer_id=layer_id, lr_scale=lr_scale, custom_key=custom_key,
                     lr=self.base_lr * lr_scale * multipliers.get('lr_mult', 1.))
        if no_decay:
            group['weight_decay'] = 0.
        elif self.base_wd is not None:
            group['weight_decay'] = self.base_wd * multipliers.get('decay_mult', 1.)
        return group

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if hasattr(model, 'module'):  # a DDP-style wrapper
            model = model.module
        groups = self.param_groups(model)
        num_ids = 1 + max(group['layer_id'] for group in groups)
        print_log(f'layer-wise lr decay {self.layer_decay_rate} (lr = {self.base_lr} x '
                  f'lr_scale; smallest scale {min(g["lr_scale"] for g in groups):.3g} over '
                  f'{num_ids} layer ids):\n{format_group_table(groups)}', logger='current')

        optimizer_cfg = dict(self.optimizer_cfg)
        optimizer_cfg[self._params_argument(optimizer_cfg['type'])] = groups
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        wrapper_cfg = dict(self.optim_wrapper_cfg)
        wrapper_cfg.setdefault('type', 'OptimWrapper')
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))

    @staticmethod
    def _params_argument(optimizer_type) -> str:
        """Name of the optimiser's first argument (``params`` for torch's), as mmengine does."""
        optimizer_cls = optimizer_type
        if isinstance(optimizer_type, str):
            with OPTIMIZERS.switch_scope_and_registry(None) as registry:
                optimizer_cls = registry.get(optimizer_type)
            if optimizer_cls is None:
                raise KeyError(f'LayerDecayOptimWrapperConstructor: optimizer type '
                               f'{optimizer_type!r} is not registered')
        return next(iter(inspect.signature(optimizer_cls).parameters))
