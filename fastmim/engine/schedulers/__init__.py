from .cosine_to_min_lr import CosineAnnealingToMinLR

__all__ = ['CosineAnnealingToMinLR']
