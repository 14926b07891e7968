"""BEiT's relative position bias on timm's ViT blocks, for ``VisionTransformer(rel_pos_bias=True)``
(the reference's segmentation ViT, ``ViTBEiT`` of BEiT's code): the attention and block that
carry a table per block, and the table resize that serves inputs of another grid and
checkpoints of another grid alike (class rows kept, offset rows bicubic as Swin's table).
"""
from typing import Optional, Sequence, Tuple

import torch
from timm.models.beit import gen_relative_position_index
from timm.models.vision_transformer import Attention, Block
from torch import nn

from fastmim.models.utils.relative_bias import resize_relative_position_bias_table, square_window
from fastmim.models.utils.sizes import grid_pair

# BEiT's relative position bias: per block, one row per offset (dy, dx) between two patches of
# an (h, w) grid, (2h - 1) * (2w - 1) rows with dy major, then 3 rows for class -> patch,
# patch -> class and class -> class; one column per head.
NUM_CLASS_ROWS = 3


def relative_position_bias_rows(grid: Sequence[int]) -> int:
    """Rows of BEiT's relative-position-bias table for an ``(h, w)`` patch grid."""
    return (2 * grid[0] - 1) * (2 * grid[1] - 1) + NUM_CLASS_ROWS


def resize_beit_relative_position_bias_table(table: torch.Tensor, src_grid: Sequence[int],
                                             dst_grid: Sequence[int]) -> torch.Tensor:
    """BEiT's ``((2h-1)(2w-1) + 3, heads)`` table from an ``src_grid`` patch grid to
    ``dst_grid``: the offset rows resized bicubically over the ``(2h-1, 2w-1)`` offset grid as
    Swin's table is
    (:func:`~fastmim.models.utils.relative_bias.resize_relative_position_bias_table`), the 3
    class rows kept. The same operation serves loading and inputs of another grid, so a
    model loaded at size S equals the checkpoint's model run at size S. Returns ``table`` itself
    when the grids are equal."""
    src = grid_pair(src_grid, 'resize_beit_relative_position_bias_table', 'src_grid')
    dst = grid_pair(dst_grid, 'resize_beit_relative_position_bias_table', 'dst_grid')
    if table.dim() != 2 or table.shape[0] != relative_position_bias_rows(src):
        raise ValueError(f'resize_beit_relative_position_bias_table: a {src[0]}x{src[1]} grid '
                         f'needs a ({relative_position_bias_rows(src)}, heads) table, got shape '
                         f'{tuple(table.shape)}')
    if src == dst:
        return table
    offsets = resize_relative_position_bias_table(table[:-NUM_CLASS_ROWS], src, dst)
    return torch.cat([offsets, table[-NUM_CLASS_ROWS:]], dim=0)


def _table_source_grid(rows: int, geometry: Optional[dict]) -> Optional[Tuple[int, int]]:
    """The patch grid a checkpoint's BEiT table was built for (the grid of its position
    embedding): the geometry's when it agrees with the rows, else a square; None otherwise."""
    grid = (geometry or {}).get('pos_embed_grid')
    if grid and relative_position_bias_rows(grid) == rows:
        return tuple(grid)
    return square_window(max(rows - NUM_CLASS_ROWS, 0))


class RelativePositionBiasAttention(Attention):
    """timm's attention (same ``qkv`` / ``proj`` parameters) plus BEiT's relative-position-bias
    table ``relative_position_bias_table``, zero-initialised as in BEiT. The bias enters timm's
    attention as its additive ``attn_mask``; the caller asks for it with the token grid, which
    the flattened tokens alone do not tell.

    Args:
        dim, num_heads, **attention_kwargs: those of timm's ``Attention``.
        grid_size: the ``(h, w)`` patch grid the table is built for (the grid of the model's
            position embedding).
    """

    def __init__(self, dim: int, num_heads: int, grid_size: Sequence[int],
                 **attention_kwargs) -> None:
        super().__init__(dim, num_heads=num_heads, **attention_kwargs)
        self.grid_size = grid_pair(grid_size, 'RelativePositionBiasAttention', 'grid_size')
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros(relative_position_bias_rows(self.grid_size), num_heads))
        # Rebuilt from the grid, so not saved (BEiT's checkpoints carry a stale copy).
        self.register_buffer('relative_position_index',
                             gen_relative_position_index(self.grid_size), persistent=False)

    def relative_position_bias(self, grid: Sequence[int]) -> torch.Tensor:
        """``(heads, 1 + h*w, 1 + h*w)`` bias for an ``(h, w)`` token grid (class token first).
        Another grid than the table's gets the table resized
        (:func:`resize_beit_relative_position_bias_table`), like the position embedding."""
        grid = grid_pair(grid, 'RelativePositionBiasAttention', 'grid')
        table, index = self.relative_position_bias_table, self.relative_position_index
        if grid != self.grid_size:
            table = resize_beit_relative_position_bias_table(table, self.grid_size, grid)
            index = gen_relative_position_index(grid, device=table.device)
        tokens = 1 + grid[0] * grid[1]
        return table[index.view(-1)].view(tokens, tokens, -1).permute(2, 0, 1)


class RelativePositionBiasBlock(Block):
    """timm's block with :class:`RelativePositionBiasAttention`. timm builds a block's attention
    from a fixed argument list that has no grid, so the block rebuilds it with the same
    arguments (those timm's ``VisionTransformer`` passes) and the grid."""

    def __init__(self, grid_size: Sequence[int], *, dim: int, num_heads: int, qkv_bias: bool,
                 qk_norm: bool, scale_attn_norm: bool, proj_bias: bool, attn_drop: float,
                 proj_drop: float, norm_layer, attn_layer, device=None, dtype=None,
                 **block_kwargs) -> None:
        if attn_layer is not Attention:
            raise ValueError(f'VisionTransformer: rel_pos_bias=True adds the table to timm\'s '
                             f'standard attention; attn_layer={attn_layer!r} cannot be combined')
        attention_kwargs = dict(qkv_bias=qkv_bias, qk_norm=qk_norm, proj_bias=proj_bias,
                                attn_drop=attn_drop, proj_drop=proj_drop, norm_layer=norm_layer,
                                device=device, dtype=dtype)
        super().__init__(dim=dim, num_heads=num_heads, scale_attn_norm=scale_attn_norm,
                         attn_layer=attn_layer, **attention_kwargs, **block_kwargs)
        self.attn = RelativePositionBiasAttention(dim, num_heads, grid_size,
                                                  scale_norm=scale_attn_norm, **attention_kwargs)

def fit_relative_position_bias_table(model: nn.Module, table: torch.Tensor, block: int,
                                      geometry: Optional[dict]) -> torch.Tensor:
    """``table`` of block ``block`` resized to that block's grid; as it is when the block has no
    table, the heads differ or the source grid is unknown (the caller reports the shapes)."""
    own = getattr(model.blocks[block].attn, 'relative_position_bias_table', None) \
        if block < len(model.blocks) else None
    if own is None or table.shape == own.shape or table.dim() != 2 or \
            table.shape[1] != own.shape[1]:
        return table
    source = _table_source_grid(table.shape[0], geometry)
    if source is None:
        return table
    return resize_beit_relative_position_bias_table(table, source,
                                                    model.blocks[block].attn.grid_size)
