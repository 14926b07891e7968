"""Mean squared error over the masked target cells only."""
from torch import nn

from fastmim.registry import MODELS


@MODELS.register_module()
class MaskedMSELoss(nn.Module):
    """Per-cell MSE averaged over channels, then averaged over the masked cells.

    Every sample masks the same number of blocks, so this mean over all masked cells of the
    batch is also the mean of per-sample means: splitting a batch into accumulated micro-batches
    leaves the gradient unchanged. The error is computed in fp32 even when the prediction comes
    out of fp16 autocast.

    Args:
        loss_weight (float): Factor applied to the loss.
    """

    def __init__(self, loss_weight=1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, prediction, target, mask):
        """Args: prediction, target ``(B, C, h, w)``; mask ``(B, h, w)``, True/1 = masked.

        A mask with no masked cell gives 0 (there is nothing to reconstruct).
        """
        if prediction.shape != target.shape:
            raise ValueError(f'prediction shape {tuple(prediction.shape)} differs from target '
                             f'shape {tuple(target.shape)}')
        expected_mask = (target.shape[0], *target.shape[2:])
        if tuple(mask.shape) != expected_mask:
            raise ValueError(f'mask shape {tuple(mask.shape)} does not match the target cells '
                             f'{expected_mask}')
        cell_error = (prediction.float() - target.float()).pow(2).mean(dim=1)
        mask = mask.to(cell_error.dtype)
        return self.loss_weight * (cell_error * mask).sum() / mask.sum().clamp(min=1)
