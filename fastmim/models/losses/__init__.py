from .classification import SoftTargetCrossEntropy
from .masked_mse import MaskedMSELoss

__all__ = ['MaskedMSELoss', 'SoftTargetCrossEntropy']
