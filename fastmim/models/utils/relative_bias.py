"""Relative-position-bias tables across window sizes: the generic kernels that Swin's
``(2Wh-1)(2Ww-1) x heads`` tables and BEiT-style ViT tables (the same offset rows plus class
rows) share. Each backbone keeps its own rules (which window a checkpoint was built for, which
rows it adds, which kernel); these only resample.

Two kernels: bicubic over the offset grid (differentiable, so a model can resize its tables at
run time for another input size), and the geometric spline resampling that the SimMIM / FastMIM
releases apply to checkpoints when they load them for fine-tuning.
"""
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .sizes import grid_pair


def resize_relative_position_bias_table(table: torch.Tensor, src_window: Sequence[int],
                                        dst_window: Sequence[int]) -> torch.Tensor:
    """Resample a relative-position-bias table from ``src_window`` to ``dst_window``.

    The table has one row per relative offset ``(dy, dx)``, ``dy`` in ``-(Wh-1)..Wh-1`` major,
    and one column per head: ``((2*Wh-1) * (2*Ww-1), heads)``. It is viewed as a
    ``(heads, 2*Wh-1, 2*Ww-1)`` image of offsets, interpolated bicubically
    (``align_corners=False``) to ``(2*Wh'-1, 2*Ww'-1)`` and flattened back the same way. The
    centre (offset 0) stays the centre; offsets are stretched by the window ratio, so a bias
    keeps applying to the same fraction of the window. (The releases resample checkpoints on
    a geometric grid instead: :func:`resample_relative_position_bias_table_geometric`.) Returns
    ``table`` itself when the windows are equal.
    """
    src, dst, src_side, dst_side = _table_sides(table, src_window, dst_window,
                                                'resize_relative_position_bias_table')
    if src == dst:
        return table
    heads = table.shape[1]
    grid = table.float().transpose(0, 1).reshape(1, heads, *src_side)
    grid = F.interpolate(grid, size=dst_side, mode='bicubic', align_corners=False)
    return grid.reshape(heads, -1).transpose(0, 1).contiguous().to(table.dtype)


def _table_sides(table: torch.Tensor, src_window: Sequence[int], dst_window: Sequence[int],
                 owner: str) -> Tuple[Tuple[int, int], ...]:
    """``(src, dst, src_side, dst_side)``: both windows as ``(h, w)`` and their tables'
    ``(2h-1, 2w-1)`` offset grids, the table's rows checked against the source window."""
    src = grid_pair(src_window, owner, 'src_window')
    dst = grid_pair(dst_window, owner, 'dst_window')
    src_side = (2 * src[0] - 1, 2 * src[1] - 1)
    dst_side = (2 * dst[0] - 1, 2 * dst[1] - 1)
    if table.dim() != 2 or table.shape[0] != src_side[0] * src_side[1]:
        raise ValueError(f'{owner}: a {src[0]}x{src[1]} window needs a '
                         f'({src_side[0] * src_side[1]}, heads) table, got shape '
                         f'{tuple(table.shape)}')
    return src, dst, src_side, dst_side


def geometric_offsets(src_side: int, dst_side: int) -> List[float]:
    """Where the ``src_side`` offsets of one table axis sit on an axis of ``dst_side`` offsets
    (both odd: ``2w - 1``) for :func:`resample_relative_position_bias_table_geometric`.

    Offset 0 and +-1 stay put; the gaps beyond grow (or shrink) by a common ratio ``q``, solved
    by bisection to 1e-6 as the releases do, so that the outermost source offset lands on the
    outermost target offset: near the centre the bias keeps its per-token meaning, and only the
    coarse far offsets are spread. The releases search ``q`` in (0.5, 2); the bracket widens
    upwards here where the root lies above (window 4 -> 12 needs q = 2.7, which they clip to 2
    and so leave the outer offsets constant), and gives the releases' ratio wherever it lies
    within. Below, ``q`` stops at 0.5 as theirs does (window 7 -> 2, which timm's Swin takes in
    its last stage at small inputs: the outer offsets crowd near the edge). A 3-offset axis
    (window 2) has no gap to grow: its offsets stay at -1, 0, 1.
    """
    steps, target = src_side // 2, dst_side // 2

    def reach(ratio: float) -> float:  # 1 + q + ... + q^(steps-1)
        return steps if ratio == 1.0 else (1.0 - ratio**steps) / (1.0 - ratio)

    ratio = 1.0  # one step (a 3-offset axis) leaves no gap for a ratio to grow
    if steps > 1:
        low, high = 0.5, 2.0
        while reach(high) <= target:
            high *= 2.0
        while high - low > 1e-6:
            ratio = (low + high) / 2.0
            low, high = (low, ratio) if reach(ratio) > target else (ratio, high)
    right, position = [], 1.0
    for index in range(steps):
        right.append(position)
        position += ratio**(index + 1)
    return [-offset for offset in reversed(right)] + [0.0] + right


def resample_relative_position_bias_table_geometric(table: torch.Tensor,
                                                    src_window: Sequence[int],
                                                    dst_window: Sequence[int]) -> torch.Tensor:
    """Resample a Swin-layout relative-position-bias table (rows as in
    :func:`resize_relative_position_bias_table`) from ``src_window`` to ``dst_window`` as the
    SimMIM and FastMIM releases do when they fine-tune a checkpoint at another window
    (their default ``--remap_mode simmim``).

    Each head's ``(2Wh-1, 2Ww-1)`` table is placed on :func:`geometric_offsets` and read by an
    interpolating tensor-product spline at the integer offsets of the target window: cubic,
    linear along an axis of 3 offsets (window 2), and the nearest end value beyond the outermost
    source offset. The releases called SciPy's ``interp2d``, removed in SciPy 1.14;
    ``RectBivariateSpline`` with ``s=0`` fits the same spline (SciPy's migration guide), and
    the tests hold it to values ``interp2d`` gave. Not differentiable: for checkpoints, not for
    run time. Returns ``table`` itself when the windows are equal.
    """
    owner = 'resample_relative_position_bias_table_geometric'
    src, dst, src_side, dst_side = _table_sides(table, src_window, dst_window, owner)
    if src == dst:
        return table
    if min(src) < 2:
        raise ValueError(f'{owner}: a {src[0]}x{src[1]} window has a single offset along an '
                         'axis, which no spline can be fitted to')
    if table.is_meta:  # shapes only (a model described on the meta device): nothing to read
        return table.new_empty((dst_side[0] * dst_side[1], table.shape[1]))
    # Imported here, where a checkpoint is resampled: at module level it added 0.27 s to every
    # start of a tool that imports the backbones.
    from scipy.interpolate import RectBivariateSpline

    rows = geometric_offsets(src_side[0], dst_side[0])
    columns = geometric_offsets(src_side[1], dst_side[1])
    row_degree, column_degree = (3 if side > 3 else 1 for side in src_side)
    targets = [np.arange(-(side // 2), side // 2 + 1, dtype=np.float64) for side in dst_side]
    values = table.detach().float().cpu().numpy().reshape(*src_side, -1)
    heads = [
        RectBivariateSpline(rows, columns, values[..., head], kx=row_degree, ky=column_degree,
                            s=0)(*targets).reshape(-1) for head in range(values.shape[-1])
    ]
    return torch.from_numpy(np.stack(heads, axis=1)).to(device=table.device, dtype=table.dtype)


def square_window(rows: int) -> Optional[Tuple[int, int]]:
    """The square window ``(w, w)`` whose table has ``rows = (2w - 1)^2`` rows, or None: what a
    checkpoint without geometry is taken to have been built for."""
    side = math.isqrt(rows)
    return ((side + 1) // 2, ) * 2 if side % 2 and side * side == rows else None
