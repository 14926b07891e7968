"""Parameters without gradient, as every fastmim optimiser constructor reports them.

A frozen parameter (``requires_grad=False``: a backbone's ``frozen_stages``, a classifier's
``frozen_backbone``, a table the backbone fixes by design) has no place in the optimiser.
mmengine's ``DefaultOptimWrapperConstructor`` warns once per such parameter (150+ lines for a
frozen ViT-B, burying the rest of the log), the layer-decay constructor left them out without a
word: both now say it in one line, counted. And a model with nothing left to train is refused
naming the setting that froze it, before torch's bare "optimizer got an empty parameter list".
"""
import logging
from contextlib import contextmanager
from typing import Iterator, List, Set

from mmengine.logging import MMLogger, print_log
from torch import nn

# The end of mmengine's per-parameter warning (DefaultOptimWrapperConstructor.add_params).
SKIPPED_WARNING_END = ' is skipped since its requires_grad=False'


def backbone_fixed_names(model: nn.Module) -> Set[str]:
    """Names in ``model`` of the parameters its backbone keeps fixed by design
    (``fixed_parameter_names()``), under the ``backbone.`` prefix; none where it says none."""
    backbone = getattr(model, 'backbone', None)
    fixed = getattr(backbone, 'fixed_parameter_names', None)
    return {f'backbone.{name}' for name in fixed()} if callable(fixed) else set()


def freezing_settings(model: nn.Module) -> List[str]:
    """The settings of ``model`` and its modules that freeze parameters, as config keys with
    their values (``model.backbone.frozen_stages=4``, ``model.frozen_backbone=True``): the
    backbone contract's ``frozen_stages`` (mmdet's backbones share the name) and the
    classifier's ``frozen_backbone``."""
    settings = []
    for path, module in model.named_modules():
        key = f'model.{path}.' if path else 'model.'
        stages = getattr(module, 'frozen_stages', -1)
        if isinstance(stages, int) and not isinstance(stages, bool) and stages >= 0:
            settings.append(f'{key}frozen_stages={stages}')
        if getattr(module, 'frozen_backbone', False) is True:
            settings.append(f'{key}frozen_backbone=True')
    return settings


def check_something_trains(model: nn.Module, constructor: str) -> None:
    """Refuse a model without any parameter that has a gradient, naming what froze it."""
    if any(param.requires_grad for param in model.parameters()):
        return
    settings = freezing_settings(model)
    cause = (f'frozen by {", ".join(settings)}: freeze less (a smaller frozen_stages, '
             f'frozen_backbone=False)' if settings else
             'no frozen_stages or frozen_backbone is set, so code froze them '
             '(requires_grad_(False))')
    raise ValueError(f'{constructor}: no parameter of the model has a gradient, so the '
                     f'optimiser has nothing to train; {cause}')


def log_without_gradient(model: nn.Module) -> None:
    """One line for the parameters the backbone fixes by design (by name: they are few and
    deliberate), one for every other parameter without gradient (counted)."""
    fixed = backbone_fixed_names(model)
    frozen = [param for name, param in model.named_parameters()
              if not param.requires_grad and name not in fixed]
    if fixed:
        print_log(f'not trained, fixed by the backbone: {", ".join(sorted(fixed))}',
                  logger='current')
    if frozen:
        print_log(f'left out of the optimiser, without gradient (requires_grad=False): '
                  f'{len(frozen)} parameters, {sum(p.numel() for p in frozen):,} elements',
                  logger='current')


@contextmanager
def no_warning_per_skipped_parameter() -> Iterator[None]:
    """Drop mmengine's ``'<name> is skipped since its requires_grad=False'`` warnings while
    mmengine's ``add_params`` runs: :func:`log_without_gradient` says the same in one line."""
    drop = logging.Filter()
    drop.filter = lambda record: not str(record.msg).endswith(SKIPPED_WARNING_END)
    logger = MMLogger.get_current_instance()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)
