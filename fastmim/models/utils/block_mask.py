"""Random block masks for masked image modeling.

FastMIM masks in pixel space with square blocks whose size is independent of the backbone's
token grid (16 px for ViT/16, 32 px for the stride-32 hierarchical backbones). The loss is
computed per target cell, so a block mask only has to be expanded to the cell (or pixel) grid.
"""
import torch

from fastmim.checks import check_positive_int
from fastmim.mask_blocks import blocks_do_not_tile, no_block_visible, visible_blocks


# Where a training input's size is set: what a size error tells to change.
INPUT_SIZE_SETTING = "the pipeline's RandomResizedCrop size"


class BlockMaskGenerator:
    """Draws, per sample, exactly ``int(N * (1 - mask_ratio))`` visible blocks out of ``N``,
    the product taken up to float error: where it falls a hair below a whole number (``N`` = 25,
    ratio 0.8: 4.999...) the whole number is kept, where the reference release's ``int`` keeps
    one block fewer. The published configs' grids and ratios never meet such a product.

    The visible blocks are the first ones of a random permutation (``argsort`` of
    ``torch.rand``), so every subset of that size is equally likely. The noise comes from torch's
    global generator on the batch's device: mmengine's ``randomness.seed`` makes the masks
    reproducible, and no host-device copy is needed.

    Args:
        mask_ratio (float): Fraction of blocks to mask, in ``[0, 1)``.
        block_size (int): Side of a square block in pixels.
    """

    def __init__(self, mask_ratio=0.75, block_size=32):
        if not 0 <= mask_ratio < 1:
            raise ValueError(f'mask_ratio must be in [0, 1), got {mask_ratio}')
        self.mask_ratio = mask_ratio
        self.block_size = check_positive_int('BlockMaskGenerator', 'block_size', block_size)

    def grid_size(self, height, width, size_setting=INPUT_SIZE_SETTING):
        """Number of blocks along (height, width). The blocks must tile the input
        (:func:`~fastmim.mask_blocks.blocks_do_not_tile`), a ratio above 0 must mask at least
        one of them (a tiny ratio keeps ``floor(N * (1 - ratio))`` = N blocks visible, and the
        masked loss would be 0), and at least one must stay visible (a ratio above
        ``1 - 1/N`` keeps none, the case ``mask_ratio=1`` is refused for:
        :func:`~fastmim.mask_blocks.no_block_visible`); config loading asks both where the
        config gives the sizes. The checks read only the shape (no device sync).
        ``size_setting`` is what the error tells to change (where the size comes from)."""
        size = self.block_size
        untiled = blocks_do_not_tile(height, width, size, size_setting)
        if untiled:
            raise ValueError(untiled)
        grid_h, grid_w = height // size, width // size
        num_blocks = grid_h * grid_w
        if self.mask_ratio > 0 and self.num_visible(num_blocks) == num_blocks:
            raise ValueError(f'mask_ratio={self.mask_ratio} masks none of the {num_blocks} '
                             f'blocks of a {height}x{width} input (block_size {size}): the '
                             f'masked loss would be 0; raise mask_ratio')
        none_visible = no_block_visible(self.mask_ratio, height, width, size)
        if none_visible:
            raise ValueError(f'mask_ratio={self.mask_ratio} {none_visible}')
        return grid_h, grid_w

    def num_visible(self, num_blocks):
        """``floor(N * (1 - mask_ratio))``, tolerant of float error (``1 - 0.9`` is 0.0999...)."""
        return visible_blocks(num_blocks, self.mask_ratio)

    def __call__(self, batch_size, height, width, device=None):
        """Returns a bool mask ``(batch_size, height / block, width / block)``, True = masked."""
        grid_h, grid_w = self.grid_size(height, width)
        num_blocks = grid_h * grid_w
        order = torch.rand(batch_size, num_blocks, device=device).argsort(dim=1)
        mask = torch.ones(batch_size, num_blocks, dtype=torch.bool, device=device)
        # 0, not False: torch.jit's tracer (mmengine's FLOP counter, tools/analysis/get_flops.py)
        # has no scatter_ overload for a bool value and fails on an internal assertion.
        mask.scatter_(1, order[:, :self.num_visible(num_blocks)], 0)
        return mask.view(batch_size, grid_h, grid_w)

    def __repr__(self):
        return (f'{type(self).__name__}(mask_ratio={self.mask_ratio}, '
                f'block_size={self.block_size})')


def expand_block_mask(mask, factor):
    """Repeats every entry of a ``(B, h, w)`` mask into a ``factor x factor`` square.

    Turns a block mask into a mask over target cells (``factor = block_size // cell_size``) or
    pixels (``factor = block_size``).
    """
    if mask.dim() != 3:
        raise ValueError(f'expected a (B, h, w) mask, got shape {tuple(mask.shape)}')
    check_positive_int('expand_block_mask', 'factor', factor)
    return mask.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)
