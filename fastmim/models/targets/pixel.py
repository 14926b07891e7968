"""Raw-pixel target (the ``l2`` ablation), with MAE's per-patch standardisation."""
import torch
from torch import nn

from fastmim.checks import check_positive_int
from fastmim.registry import MODELS
from ._cells import cell_grid


@MODELS.register_module()
class PixelTarget(nn.Module):
    """The normalised image itself, one vector per non-overlapping ``patch_size`` patch.

    Each patch's ``3 * patch_size ** 2`` values are laid out ``(dy, dx, rgb)``, row-major, as
    MAE's ``patchify`` does: channel ``(dy * patch_size + dx) * 3 + rgb``.

    With ``norm_pix`` every patch vector is standardised as in MAE's ``norm_pix_loss``:
    ``(t - mean) / sqrt(var + 1e-6)``, mean and variance over the patch's values, and the
    variance **unbiased** (divided by ``n - 1``), because MAE uses ``Tensor.var`` with its
    default correction. Matching MAE keeps losses comparable with published pixel baselines.

    The output is ``(B, 3 * patch_size ** 2, H / patch_size, W / patch_size)``, in fp32 whatever
    the input dtype or autocast state, with no graph.

    Args:
        patch_size (int): Side of a square patch in pixels. Defaults to 16.
        norm_pix (bool): Standardise each patch. Defaults to True.
    """

    def __init__(self, patch_size=16, norm_pix=True):
        super().__init__()
        self.cell_size = check_positive_int('PixelTarget', 'patch_size', patch_size)
        self.norm_pix = norm_pix
        self.channels = 3 * patch_size ** 2

    def extra_repr(self):
        return f'patch_size={self.cell_size}, norm_pix={self.norm_pix}'

    @torch.no_grad()
    def forward(self, images):
        """(B, 3, H, W) normalised images -> (B, 3 * p * p, H / p, W / p) fp32 patch vectors."""
        patches_h, patches_w = cell_grid(images, self.cell_size, 'PixelTarget', 'patch_size')
        p = self.cell_size
        with torch.autocast(device_type=images.device.type, enabled=False):
            patches = images.float().unflatten(2, (patches_h, p)).unflatten(4, (patches_w, p))
            # (B, rgb, h, dy, w, dx) -> (B, dy, dx, rgb, h, w) -> (B, p * p * 3, h, w)
            patches = patches.permute(0, 3, 5, 1, 2, 4).flatten(1, 3)
            if self.norm_pix:
                mean = patches.mean(dim=1, keepdim=True)
                var = patches.var(dim=1, keepdim=True, correction=1)
                patches = (patches - mean) / (var + 1e-6).sqrt()
            return patches.contiguous()
