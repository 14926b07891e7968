"""Resolution transfer of learned position tensors between pre-training and fine-tuning.

FastMIM pre-trains at 128 px and fine-tunes at 224 px, so the tensors that are tied to a token
grid or a window must be resampled when a checkpoint is loaded:

- ViT's absolute position embedding: 8x8 patch grid -> 14x14 (class token kept as it is);
- Swin's relative-position-bias tables: window 4 -> 7, i.e. (2*4-1)^2 = 49 -> (2*7-1)^2 = 169
  rows per block.

Both are resampled bicubically with ``align_corners=False`` and no anti-aliasing: for the
position embedding this is exactly what :class:`fastmim.models.backbones.VisionTransformer` does
at run time for other input sizes, so a model loaded at size S equals the pre-trained model run
at size S. The reference release resamples Swin tables with SciPy's ``interp2d`` on a geometric
grid, which SciPy >= 1.14 no longer has; plain bicubic interpolation of the table is the common
alternative.

CMT's attention bias has its own resize, :func:`fastmim.models.backbones.cmt.
resize_relative_position_bias`.
"""
from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed

Size = Union[int, Sequence[int]]


def _pair(size: Size, name: str) -> Tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f'{name} must be a positive int or an (h, w) pair, got {size!r}')
    return pair


def resize_pos_embed(pos_embed: torch.Tensor,
                     src_grid: Size,
                     dst_grid: Size,
                     num_prefix_tokens: int = 1) -> torch.Tensor:
    """Resample a ``(1, prefix + h*w, C)`` position embedding from ``src_grid`` to ``dst_grid``.

    The prefix (class token) entries are kept unchanged; the ``h x w`` grid is interpolated
    bicubically (``align_corners=False``, no anti-aliasing), computed in fp32 and returned in the
    input dtype. Returns ``pos_embed`` itself when the grids are equal.
    """
    src = _pair(src_grid, 'src_grid')
    dst = _pair(dst_grid, 'dst_grid')
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f'resize_pos_embed: expected a (1, tokens, channels) position embedding, '
                         f'got shape {tuple(pos_embed.shape)}')
    if pos_embed.shape[1] != num_prefix_tokens + src[0] * src[1]:
        raise ValueError(f'resize_pos_embed: {pos_embed.shape[1]} tokens do not match '
                         f'{num_prefix_tokens} prefix token(s) + a {src[0]}x{src[1]} grid')
    if src == dst:
        return pos_embed
    return resample_abs_pos_embed(pos_embed, new_size=dst, old_size=src,
                                  num_prefix_tokens=num_prefix_tokens, antialias=False)


def resize_relative_position_bias_table(table: torch.Tensor, src_window: Size,
                                        dst_window: Size) -> torch.Tensor:
    """Resample a Swin relative-position-bias table from ``src_window`` to ``dst_window``.

    The table has one row per relative offset ``(dy, dx)``, ``dy`` in ``-(Wh-1)..Wh-1`` major,
    and one column per head: ``((2*Wh-1) * (2*Ww-1), heads)``. It is viewed as a
    ``(heads, 2*Wh-1, 2*Ww-1)`` image of offsets, interpolated bicubically
    (``align_corners=False``) to ``(2*Wh'-1, 2*Ww'-1)`` and flattened back the same way. The
    centre (offset 0) stays the centre; offsets are stretched by the window ratio, so a bias
    keeps applying to the same fraction of the window. Returns ``table`` itself when the windows
    are equal.
    """
    src = _pair(src_window, 'src_window')
    dst = _pair(dst_window, 'dst_window')
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
