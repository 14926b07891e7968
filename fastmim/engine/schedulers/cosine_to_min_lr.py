"""A cosine schedule whose end point follows the optimiser's lr, as MAE's ``min_lr`` does."""
from mmengine.optim import CosineAnnealingLR

from fastmim.registry import PARAM_SCHEDULERS


def full_rate_lr(optimizer) -> float:
    """The starting lr of a group that learns at the full rate: the largest ``initial_lr /
    lr_scale`` over the groups (``lr_scale``: the layer-decay constructor's, 1 elsewhere).

    Read from the groups, not from ``optimizer.defaults['lr']``: mmengine's ``Runner.scale_lr``
    (``--auto-scale-lr``) rescales every group's lr after the optimiser is built and leaves the
    defaults as configured. A custom key with ``lr_mult > 1`` would count as the full rate.
    """
    return max(group.get('initial_lr', group['lr']) / group.get('lr_scale', 1.)
               for group in optimizer.param_groups)


@PARAM_SCHEDULERS.register_module()
class CosineAnnealingToMinLR(CosineAnnealingLR):
    """mmengine's ``CosineAnnealingLR`` ending at MAE's ``min_lr``.

    ``eta_min`` is where the full-rate lr (the configured ``lr``, after ``--auto-scale-lr``)
    ends; every parameter group ends at the same fraction of its own starting lr. Under
    layer-wise lr decay, where a group's lr is ``lr x lr_scale``, that is MAE's
    ``min_lr x lr_scale``.

    Why not mmengine's own keys: an absolute ``eta_min`` ends every layer-decayed group at the
    same lr, and ``eta_min_ratio`` written in a config as ``min_lr / lr`` goes stale when a
    recipe, ``--cfg-options`` or ``--auto-scale-lr`` changes ``lr``. Here the ratio is taken from
    the built optimiser's groups (:func:`full_rate_lr`), so recipes change ``lr`` only and
    ``min_lr`` stays absolute, as in MAE.
    """

    def __init__(self, optimizer, T_max=None, eta_min: float = 0., **kwargs):
        if 'eta_min_ratio' in kwargs:
            raise ValueError('CosineAnnealingToMinLR takes eta_min (the final lr of the '
                             "optimiser's lr) and derives the ratio itself; drop eta_min_ratio")
        lr = full_rate_lr(getattr(optimizer, 'optimizer', optimizer))
        if lr <= 0:
            raise ValueError(f'CosineAnnealingToMinLR needs an optimiser built with a positive '
                             f'lr, got lr={lr!r}')
        super().__init__(optimizer, T_max=T_max, eta_min_ratio=eta_min / lr, **kwargs)
