"""Resolution transfer of ViT position embeddings and Swin relative-position-bias tables."""
import pytest
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import get_relative_position_index

from fastmim.models.utils.relative_bias import resize_relative_position_bias_table
from fastmim.models.backbones.vit import resize_pos_embed


def bicubic(grid_nchw, size):
    return F.interpolate(grid_nchw, size=size, mode='bicubic', align_corners=False)


def test_vit_pos_embed_8x8_to_14x14_is_bicubic_with_the_class_token_kept():
    torch.manual_seed(0)
    channels = 6
    pos_embed = torch.randn(1, 1 + 8 * 8, channels)

    resized = resize_pos_embed(pos_embed, (8, 8), (14, 14), num_prefix_tokens=1)

    grid = pos_embed[:, 1:].reshape(1, 8, 8, channels).permute(0, 3, 1, 2)
    expected_grid = bicubic(grid, (14, 14)).permute(0, 2, 3, 1).reshape(1, 14 * 14, channels)
    assert resized.shape == (1, 1 + 14 * 14, channels)
    assert torch.equal(resized[:, :1], pos_embed[:, :1])
    torch.testing.assert_close(resized[:, 1:], expected_grid, rtol=0, atol=1e-6)


def test_non_square_grids_keep_rows_and_columns_apart():
    # A table that varies only along the rows must still vary only along the rows.
    rows = torch.arange(4, dtype=torch.float32).view(4, 1).expand(4, 6)
    pos_embed = torch.cat([torch.full((1, 1, 1), 7.), rows.reshape(1, 24, 1)], dim=1)

    resized = resize_pos_embed(pos_embed, (4, 6), (7, 9))

    grid = resized[0, 1:, 0].reshape(7, 9)
    assert torch.allclose(grid, grid[:, :1].expand(7, 9))
    assert resized[0, 0, 0] == 7.


def test_same_grid_returns_the_embedding_unchanged():
    pos_embed = torch.randn(1, 17, 4)
    assert resize_pos_embed(pos_embed, 4, 4) is pos_embed


def test_token_count_that_does_not_match_the_grid_is_named():
    with pytest.raises(ValueError, match=r'65 tokens do not match 1 prefix token\(s\) \+ a 7x7'):
        resize_pos_embed(torch.zeros(1, 65, 4), (7, 7), (14, 14))


def test_swin_table_window_4_to_7_is_bicubic_over_the_offset_grid():
    torch.manual_seed(0)
    heads = 3
    table = torch.randn(7 * 7, heads)  # (2*4-1)^2 rows, one column per head

    resized = resize_relative_position_bias_table(table, 4, 7)

    grid = table.T.reshape(1, heads, 7, 7)
    expected = bicubic(grid, (13, 13)).reshape(heads, 13 * 13).T
    assert resized.shape == (169, heads)
    torch.testing.assert_close(resized, expected, rtol=0, atol=1e-6)
    # Offset (0, 0) is the centre of both grids and lands on a source sample: kept exactly.
    torch.testing.assert_close(resized[6 * 13 + 6], table[3 * 7 + 3], rtol=0, atol=1e-6)


def test_swin_table_layout_is_the_one_timm_indexes():
    """A bias that depends only on the vertical offset (dy) in timm's indexing still does after
    resizing, when looked up with timm's index for the new window."""
    old_index = get_relative_position_index(4, 4)
    dy = torch.arange(4).repeat_interleave(4)
    vertical_offset = (dy[:, None] - dy[None, :]).float()
    table = torch.zeros(49, 1)
    table[old_index.flatten(), 0] = vertical_offset.flatten()

    resized = resize_relative_position_bias_table(table, 4, 7)

    bias = resized[get_relative_position_index(7, 7).flatten(), 0].view(7, 7, 7, 7)
    # bias[qy, qx, ky, kx] must not change with the columns qx, kx.
    assert torch.allclose(bias, bias[:, :1, :, :1].expand(7, 7, 7, 7), atol=1e-5)
    assert bias[6, 0, 0, 0] > bias[3, 0, 0, 0] > bias[0, 0, 0, 0]


def test_table_rows_that_do_not_fit_the_window_are_named():
    with pytest.raises(ValueError, match=r'4x4 window needs a \(49, heads\) table.*\(169, 3\)'):
        resize_relative_position_bias_table(torch.zeros(169, 3), 4, 7)
