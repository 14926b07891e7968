"""A cosine schedule whose end point follows the optimiser's lr, as MAE's ``min_lr`` does."""
from mmengine.optim import CosineAnnealingLR

from fastmim.registry import PARAM_SCHEDULERS


@PARAM_SCHEDULERS.register_module()
class CosineAnnealingToMinLR(CosineAnnealingLR):
    """mmengine's ``CosineAnnealingLR`` ending at MAE's ``min_lr``.

    ``eta_min`` is where the optimiser's configured ``lr`` ends; every parameter group ends at
    the same fraction of its own starting lr. Under layer-wise lr decay, where a group's lr is
    ``lr x lr_scale``, that is MAE's ``min_lr x lr_scale``.

    Why not mmengine's own keys: an absolute ``eta_min`` ends every layer-decayed group at the
    same lr, and ``eta_min_ratio`` written in a config as ``min_lr / lr`` goes stale when a
    recipe, ``--cfg-options`` or ``--auto-scale-lr`` changes ``lr``. Here the ratio is taken from
    the built optimiser (``optimizer.defaults['lr']``, the lr after auto-scaling), so recipes
    change ``lr`` only and ``min_lr`` stays absolute, as in MAE.
    """

    def __init__(self, optimizer, T_max=None, eta_min: float = 0., **kwargs):
        if 'eta_min_ratio' in kwargs:
            raise ValueError('CosineAnnealingToMinLR takes eta_min (the final lr of the '
                             "optimiser's lr) and derives the ratio itself; drop eta_min_ratio")
        lr = getattr(optimizer, 'optimizer', optimizer).defaults.get('lr')
        if not isinstance(lr, (int, float)) or lr <= 0:
            raise ValueError(f'CosineAnnealingToMinLR needs an optimiser built with a positive '
                             f'lr, got lr={lr!r}')
        super().__init__(optimizer, T_max=T_max, eta_min_ratio=eta_min / lr, **kwargs)
