"""Weight decay for pre-training: mmengine's parameter-wise rules plus the exemptions the model
declares.

mmengine's ``DefaultOptimWrapperConstructor`` exempts norms, biases and 1-D parameters through
the config's ``norm_decay_mult`` / ``bias_decay_mult`` / ``flat_decay_mult``, and anything else
only through ``custom_keys``: fragments of parameter names, a central list that must know every
backbone's names. A backbone named otherwise would be decayed without a word (timm's Swin-V2 through
``TimmBackbone``: its ``attn.cpb_mlp`` and ``attn.logit_scale``). This constructor asks the
model instead, as fine-tuning's layer-decay constructor does: what its backbone names in
``no_weight_decay_names()`` (position embeddings, class tokens, relative-position tables) and
what the algorithm names of its own (FastMIM's mask token) get weight decay 0
(:func:`~fastmim.engine.optim_constructors.layer_decay.model_no_decay_names`).
"""
import logging
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Set

from mmengine.logging import MMLogger, print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from torch import nn

from fastmim.registry import OPTIM_WRAPPER_CONSTRUCTORS
from .layer_decay import in_fastmim_scope, model_no_decay_names


def declared_no_decay_parameters(model: nn.Module) -> Dict[str, nn.Parameter]:
    """``{name: parameter}`` of those :func:`model_no_decay_names` names, found by attribute
    path rather than in ``named_parameters()``: nested FSDP units put ``_fsdp_wrapped_module.``
    into those names but pass attribute look-ups on to the module they wrap. A name that is no
    parameter of the model (a table the architecture builds only at some sizes) names nothing."""
    parameters = {}
    for name in sorted(model_no_decay_names(model)):
        try:
            parameters[name] = model.get_parameter(name)
        except AttributeError:
            continue
    return parameters


def backbone_fixed_names(model: nn.Module) -> Set[str]:
    """Names in ``model`` of the parameters its backbone keeps fixed by design
    (``fixed_parameter_names()``), under the ``backbone.`` prefix; none where it says none."""
    backbone = getattr(model, 'backbone', None)
    fixed = getattr(backbone, 'fixed_parameter_names', None)
    return {f'backbone.{name}' for name in fixed()} if callable(fixed) else set()


@contextmanager
def skipped_without_warning(names: Set[str]) -> Iterator[None]:
    """Drop mmengine's ``'<name> is skipped since its requires_grad=False'`` warning for
    ``names``: a table the backbone fixes by design is no frozen parameter to warn of.
    Others frozen (a user's ``requires_grad_(False)``) are still warned about."""
    skipped = tuple(f'{name} is skipped since its requires_grad=False' for name in names)
    drop = logging.Filter()
    drop.filter = lambda record: str(record.msg) not in skipped
    logger = MMLogger.get_current_instance()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class DeclaredNoDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's constructor, whose ``paramwise_cfg`` works as there, with weight decay 0 for
    the parameters the model declares exempt (the module docstring). Config::

        optim_wrapper = dict(
            optimizer=dict(type='AdamW', lr=1.2e-3, weight_decay=0.05),
            constructor='DeclaredNoDecayOptimWrapperConstructor',
            paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0., flat_decay_mult=0.))

    The declared exemptions hold whatever ``paramwise_cfg`` says, an empty one included (then
    every other parameter keeps the optimiser's weight decay); ``custom_keys`` may exempt more.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        # mmengine gives the optimiser all parameters in one group, past add_params, when
        # paramwise_cfg is empty; one entry (mmengine's own default) sends every model through.
        self.paramwise_cfg.setdefault('bypass_duplicate', False)

    def __call__(self, model: nn.Module) -> OptimWrapper:
        with in_fastmim_scope():
            return super().__call__(model)

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   **kwargs) -> None:
        """mmengine's groups, one per parameter; then, once mmengine's recursion over the
        children has come back to the whole model (no prefix), weight decay 0 for the
        declared parameters."""
        if prefix:
            super().add_params(params, module, prefix, **kwargs)
            return
        fixed = backbone_fixed_names(module)
        with skipped_without_warning(fixed):
            super().add_params(params, module, prefix, **kwargs)
        if fixed:
            print_log(f'not trained, fixed by the backbone: {", ".join(sorted(fixed))}',
                      logger='current')
        declared = declared_no_decay_parameters(module)
        exempt = set(declared.values())
        for group in params:
            if any(param in exempt for param in group['params']):
                group['weight_decay'] = 0.
        print_log(f'no weight decay on what the model declares: {", ".join(declared)}',
                  logger='current')
