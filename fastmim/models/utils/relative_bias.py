"""Relative-position-bias tables across window sizes: the generic kernels that Swin's
``(2Wh-1)(2Ww-1) x heads`` tables and BEiT-style ViT tables (the same offset rows plus class
rows) share. Each backbone keeps its own rules (which window a checkpoint was built for, which
rows it adds); these only resample.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from fastmim.models.backbones.base import grid_pair


def resize_relative_position_bias_table(table: torch.Tensor, src_window: Sequence[int],
                                        dst_window: Sequence[int]) -> torch.Tensor:
    """Resample a relative-position-bias table from ``src_window`` to ``dst_window``.

    The table has one row per relative offset ``(dy, dx)``, ``dy`` in ``-(Wh-1)..Wh-1`` major,
    and one column per head: ``((2*Wh-1) * (2*Ww-1), heads)``. It is viewed as a
    ``(heads, 2*Wh-1, 2*Ww-1)`` image of offsets, interpolated bicubically
    (``align_corners=False``) to ``(2*Wh'-1, 2*Ww'-1)`` and flattened back the same way. The
    centre (offset 0) stays the centre; offsets are stretched by the window ratio, so a bias
    keeps applying to the same fraction of the window. (The reference release resamples on a
    geometric grid with SciPy's ``interp2d``, which SciPy >= 1.14 no longer has; plain bicubic
    is the common alternative.) Returns ``table`` itself when the windows are equal.
    """
    src = grid_pair(src_window, 'resize_relative_position_bias_table', 'src_window')
    dst = grid_pair(dst_window, 'resize_relative_position_bias_table', 'dst_window')
    src_side = (2 * src[0] - 1, 2 * src[1] - 1)
    dst_side = (2 * dst[0] - 1, 2 * dst[1] - 1)
    if table.dim() != 2 or table.shape[0] != src_side[0] * src_side[1]:
        raise ValueError(f'resize_relative_position_bias_table: a {src[0]}x{src[1]} window needs a '
                         f'({src_side[0] * src_side[1]}, heads) table, got shape '
                         f'{tuple(table.shape)}')
    if src == dst:
        return table
    heads = table.shape[1]
    grid = table.float().transpose(0, 1).reshape(1, heads, *src_side)
    grid = F.interpolate(grid, size=dst_side, mode='bicubic', align_corners=False)
    return grid.reshape(heads, -1).transpose(0, 1).contiguous().to(table.dtype)


def square_window(rows: int) -> Optional[Tuple[int, int]]:
    """The square window ``(w, w)`` whose table has ``rows = (2w - 1)^2`` rows, or None: what a
    checkpoint without geometry is taken to have been built for."""
    side = math.isqrt(rows)
    return ((side + 1) // 2, ) * 2 if side % 2 and side * side == rows else None
