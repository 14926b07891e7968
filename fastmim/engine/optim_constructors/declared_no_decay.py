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
from typing import Dict, List, Optional

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from torch import nn

from fastmim.registry import OPTIM_WRAPPER_CONSTRUCTORS
from .layer_decay import in_fastmim_scope, model_no_decay_names
from .without_gradient import (check_something_trains, log_without_gradient,
                               no_warning_per_skipped_parameter)


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
        """mmengine's groups, one per parameter, without its warning per frozen parameter;
        then, once mmengine's recursion over the children has come back to the whole model (no
        prefix), one line on the parameters left out and weight decay 0 for the declared
        parameters. A model with nothing to train is refused first."""
        if prefix:
            super().add_params(params, module, prefix, **kwargs)
            return
        check_something_trains(module, type(self).__name__)
        with no_warning_per_skipped_parameter():
            super().add_params(params, module, prefix, **kwargs)
        log_without_gradient(module)
        declared = declared_no_decay_parameters(module)
        exempt = set(declared.values())
        for group in params:
            if any(param in exempt for param in group['params']):
                group['weight_decay'] = 0.
        print_log(f'no weight decay on what the model declares: {", ".join(declared)}',
                  logger='current')
