"""Layer-wise learning-rate decay for fine-tuning pre-trained backbones (BEiT / MAE / SimMIM).

Every parameter gets a *layer id*: 0 for the input embedding, 1 ... L for the blocks in the order
the input meets them, and ``L + 1`` ("rest") for everything after the last block: the final norm,
and every parameter outside the backbone (classification head, necks, decode heads). Its learning
rate is ``lr * layer_decay_rate ** (L + 1 - layer_id)``: the head learns at the full rate and
every block closer to the input at a geometrically smaller one, so the generic low-level features
of pre-training move least. ``L + 1`` is MAE's ``num_layers`` (``len(blocks) + 1``), and SimMIM's
``num_layers - 1`` for Swin.

The ids come from the backbone itself (``layer_id(name)`` and ``num_layer_ids`` of the backbone
contract, :mod:`fastmim.models.utils.backbone_contract`): each backbone file documents its scheme (ViT:
embedding 0, ``blocks.i`` -> ``i + 1``; Swin: SimMIM's ids with Microsoft's patch merging
closing a stage; timm models: timm's own grouping). This constructor never looks at the type.

Weight decay is off for biases, every 1-D parameter (all norm weights), and the parameters the
backbone names in ``no_weight_decay_names()`` (position embeddings, class tokens,
relative-position tables; timm's own sets for timm models): weight decay would pull them towards
zero, which is no sensible prior for them. Like the layer ids, the set comes from the backbone.
"""
from typing import ContextManager, Dict, List, Optional, Set, Tuple

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import DefaultScope
from torch import nn

from fastmim.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIMIZERS
from .without_gradient import check_something_trains, log_without_gradient

PARAMWISE_KEYS = ('layer_decay_rate', 'no_decay_names', 'custom_keys')
CUSTOM_KEY_FIELDS = ('lr_mult', 'decay_mult')

LayerIds = Tuple[Dict[str, int], int]


def backbone_layer_ids(backbone: nn.Module) -> LayerIds:
    """``({parameter name: layer id}, rest id)`` from the backbone's own ``layer_id(name)``."""
    if not callable(getattr(backbone, 'layer_id', None)):
        raise TypeError(f'layer decay: backbone {type(backbone).__name__} has no layer_id(name) / '
                        f'num_layer_ids; a backbone gets layer decay by implementing them '
                        f'(the contract in fastmim.models.utils.backbone_contract)')
    ids = {name: backbone.layer_id(name) for name, _ in backbone.named_parameters()}
    return ids, backbone.num_layer_ids - 1


def model_layer_ids(model: nn.Module) -> LayerIds:
    """Ids for a whole model: its ``backbone`` (or the model itself when it is a backbone) gets
    the backbone's ids under the ``backbone.`` prefix; any other parameter (head, neck, decoder)
    is "rest" (absent from the returned mapping)."""
    backbone = getattr(model, 'backbone', None)
    if isinstance(backbone, nn.Module):
        ids, rest = backbone_layer_ids(backbone)
        return {f'backbone.{name}': layer_id for name, layer_id in ids.items()}, rest
    return backbone_layer_ids(model)


def declared_no_decay_names(module: nn.Module) -> Set[str]:
    """What ``module.no_weight_decay_names()`` says, in its own names; none where it has no
    such method."""
    declared = getattr(module, 'no_weight_decay_names', None)
    return set(declared()) if callable(declared) else set()


def model_no_decay_names(model: nn.Module) -> Set[str]:
    """Names in ``model`` of the parameters exempt from weight decay through
    ``no_weight_decay_names()``: those its backbone declares, under the ``backbone.`` prefix,
    and those the model declares of its own (an algorithm's tokens: FastMIM's mask token), or,
    when the model is a backbone, its own; none where nobody says."""
    backbone = getattr(model, 'backbone', None)
    names = declared_no_decay_names(model)
    if isinstance(backbone, nn.Module):
        names |= {f'backbone.{name}' for name in declared_no_decay_names(backbone)}
    return names


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
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Optimiser wrapper with layer-wise lr decay, for fine-tuning: mmengine's constructor,
    which builds the optimiser and its wrapper, with this class's parameter groups.

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
            replacing those the backbone names (:func:`model_no_decay_names`; biases and 1-D
            parameters are always exempt); ``custom_keys``:
            ``{substring: dict(lr_mult=..., decay_mult=...)}`` as in mmengine (the longest
            key found in a parameter's name wins, ties go to the alphabetically first),
            multiplying the layer-decayed lr and the weight decay.

    Each group carries ``layer_id``, ``lr_scale`` and ``custom_key``; a table of the groups is
    logged when the optimiser is built. Frozen parameters are left out, counted in one line.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        if not isinstance(optim_wrapper_cfg, dict) or not isinstance(
                optim_wrapper_cfg.get('optimizer'), dict):
            raise TypeError(f'LayerDecayOptimWrapperConstructor: optim_wrapper_cfg must be a dict '
                            f'with an "optimizer" dict, got {optim_wrapper_cfg!r}')
        optimizer_cfg = optim_wrapper_cfg['optimizer']
        if 'lr' not in optimizer_cfg:
            raise ValueError(f'LayerDecayOptimWrapperConstructor: optim_wrapper.optimizer needs '
                             f'"lr" (the rate of the last layer id), got {optimizer_cfg}')
        _check_registered(optimizer_cfg.get('type'))
        # Read before mmengine's __init__ sets it: checking the custom keys needs it, and this
        # class's checks come first, naming the key and the fix where mmengine's would not.
        self.base_wd = optimizer_cfg.get('weight_decay')

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
        no_decay_names = paramwise_cfg.get('no_decay_names')
        if no_decay_names is not None and (isinstance(no_decay_names, str) or not all(
                isinstance(name, str) for name in no_decay_names)):
            raise TypeError(f'LayerDecayOptimWrapperConstructor: paramwise_cfg.no_decay_names '
                            f'must be a list of parameter names, got {no_decay_names!r}')
        # None: the backbone's own names, known once the model is there.
        self.no_decay_names = None if no_decay_names is None else tuple(no_decay_names)
        self.custom_keys = self._checked_custom_keys(paramwise_cfg.get('custom_keys', {}))
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

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

    def names_without_decay(self, model: nn.Module) -> Set[str]:
        """Parameters of ``model`` exempt from weight decay by name (biases and 1-D parameters
        are exempt anyway): those its backbone names, or those the configured
        ``no_decay_names`` match."""
        if self.no_decay_names is None:
            return model_no_decay_names(model)
        return {name for name, _ in model.named_parameters()
                if any(name == key or name.endswith('.' + key) for key in self.no_decay_names)}

    def custom_key_of(self, name: str) -> Optional[str]:
        return next((key for key in self.custom_keys if key in name), None)

    def param_groups(self, model: nn.Module) -> List[dict]:
        """The optimiser's parameter groups, one per (layer id, decay or not, custom key)."""
        layer_ids, rest = model_layer_ids(model)
        exempt = self.names_without_decay(model)
        groups = {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            layer_id = layer_ids.get(name, rest)
            no_decay = param.ndim <= 1 or name.endswith('.bias') or name in exempt
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
        with in_fastmim_scope():
            return super().__call__(model)

    def add_params(self, params: List[dict], module: nn.Module, **kwargs) -> None:
        """The groups of :meth:`param_groups`, logged as a table after one line on the
        parameters left out; mmengine's ``__call__`` (which has unwrapped a DDP-style model)
        passes them to the optimiser. A model with nothing to train is refused first."""
        check_something_trains(module, type(self).__name__)
        groups = self.param_groups(module)
        log_without_gradient(module)
        num_ids = 1 + max(group['layer_id'] for group in groups)
        print_log(f'layer-wise lr decay {self.layer_decay_rate} (lr = {self.base_lr} x '
                  f'lr_scale; smallest scale {min(g["lr_scale"] for g in groups):.3g} over '
                  f'{num_ids} layer ids; the training log\'s lr is the first group\'s, '
                  f'its base_lr the last layer id\'s):\n{format_group_table(groups)}',
                  logger='current')
        params.extend(groups)


def in_fastmim_scope() -> ContextManager:
    """The fastmim scope where none is set, for a constructor's ``__call__``: mmengine builds
    through its root registries, which find fastmim's wrappers (``GuardedOptimWrapper``) only
    through a scope; a Runner always sets one, a script calling the constructor may not."""
    scope = None if DefaultScope.get_current_instance() else 'fastmim'
    return DefaultScope.overwrite_default_scope(scope)


def _check_registered(optimizer_type) -> None:
    """An optimiser type no registry knows is named here: mmengine's constructor would fail
    reading the signature of ``None``."""
    if isinstance(optimizer_type, str):
        with OPTIMIZERS.switch_scope_and_registry(None) as registry:
            if registry.get(optimizer_type) is None:
                raise KeyError(f'LayerDecayOptimWrapperConstructor: optimizer type '
                               f'{optimizer_type!r} is not registered')
