"""Resolution transfer of ViT position embeddings and Swin relative-position-bias tables."""
import pytest
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import get_relative_position_index

from fastmim.models.utils.relative_bias import (
    geometric_offsets, resample_relative_position_bias_table_geometric,
    resize_relative_position_bias_table)
from fastmim.models.backbones.plain_vit import resize_pos_embed


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


def closed_form_table(side, heads=2):
    """A smooth, asymmetric table with no random draw: the one the values below were computed
    for."""
    rows, columns = torch.meshgrid(torch.arange(side), torch.arange(side), indexing='ij')
    return torch.stack([torch.sin(0.9 * rows + head) + 0.3 * torch.cos(1.3 * columns - head)
                        + 0.05 * rows * columns for head in range(heads)],
                       dim=-1).reshape(side * side, heads).float()


# The releases' resampling run by SciPy 1.13.1's interp2d (removed in SciPy 1.14), the
# positions bisected as they do, on ``closed_form_table``: window -> {row: (head 0, head 1)},
# and the sum and sum of squares of the whole table.
INTERP2D = {
    (4, 7): ({0: (0.300000, 1.003562), 84: (0.659600, -0.371124), 16: (0.123626, 1.059596),
              168: (1.043422, 2.177368), 67: (1.369271, 0.668163)}, 200.385209, 270.840110),
    (2, 4): ({0: (0.300000, 1.003562), 24: (0.913577, 1.282901), 10: (0.080250, 1.128072),
              48: (0.916781, 0.526228), 37: (1.273848, 0.497079)}, 68.853334, 67.082020),
    (7, 5): ({0: (0.300001, 1.003563), 40: (1.043422, 2.177368), 12: (1.762356, 0.921067),
              80: (5.920809, 6.372528), 47: (1.397528, 1.958061)}, 287.611373, 957.266337),
}


@pytest.mark.parametrize('windows', INTERP2D)
def test_swin_table_is_resampled_as_the_releases_interp2d_did(windows):
    """Swin tables follow the releases' default ``remap_mode='simmim'``: window 4 -> 7 (the
    published fine-tuning), a window of 2 (linear), and a smaller window."""
    rows, total, squares = INTERP2D[windows]
    resized = resample_relative_position_bias_table_geometric(
        closed_form_table(2 * windows[0] - 1), *windows).double()
    assert resized.shape == ((2 * windows[1] - 1)**2, 2)
    for row, values in rows.items():
        torch.testing.assert_close(resized[row], torch.tensor(values, dtype=torch.double),
                                   rtol=0, atol=2e-6)
    assert resized.sum().item() == pytest.approx(total, abs=1e-4)
    assert resized.square().sum().item() == pytest.approx(squares, abs=1e-4)


@pytest.mark.parametrize('windows', [(4, 7), (2, 4), (7, 5), (5, 8), (7, 2)])
def test_swin_table_matches_an_independent_spline_on_random_tables(windows,
                                                                   release_table_resampling):
    """The two spline codes agree to about 1e-4 on random tables (whose splines overshoot to
    +-12 between the sparse outer offsets); a wrong grid or a transposed table is off by 1."""
    torch.manual_seed(0)
    table = torch.randn((2 * windows[0] - 1)**2, 3)
    resized = resample_relative_position_bias_table_geometric(table, *windows)
    torch.testing.assert_close(resized, release_table_resampling(table, *windows), rtol=0,
                               atol=2e-4)
    # Offset (0, 0) is the centre of both grids and stays a sample of the source: kept.
    centre_row = (2 * windows[1] - 1)**2 // 2
    assert resized[centre_row].tolist() == table[table.shape[0] // 2].tolist()


def test_a_meta_table_gets_the_new_shape():
    table = torch.empty(49, 3, device='meta')
    resized = resample_relative_position_bias_table_geometric(table, 4, 7)
    assert resized.is_meta and resized.shape == (169, 3)


def test_growth_beyond_the_releases_bracket_still_reaches_the_outer_offsets():
    """Window 4 -> 12 needs a ratio of 2.7; the releases clip it to 2, and their outermost
    source offset stops at 7 of 11. Here it lands on 11, and within their bracket the ratio
    is theirs."""
    assert geometric_offsets(7, 23)[-1] == pytest.approx(11, abs=1e-4)
    assert geometric_offsets(7, 13) == pytest.approx([-6, -2.791288, -1, 0, 1, 2.791288, 6],
                                                     abs=1e-5)
    assert geometric_offsets(3, 7) == [-1, 0, 1]  # a window of 2 has no gap to grow
    # Shrinking below the bracket stops at the releases' ratio of 0.5 (it raised: a 224-px
    # Swin's window 7 did not load into a 64-px one, whose last stage has window 2).
    assert geometric_offsets(13, 3)[7:] == pytest.approx([1, 1.5, 1.75, 1.875, 1.9375, 1.96875],
                                                         abs=1e-5)


def test_swin_table_bicubic_kernel_is_bicubic_over_the_offset_grid():
    """The differentiable kernel (for run-time resizing; ViT's tables use it)."""
    torch.manual_seed(0)
    heads = 3
    table = torch.randn(7 * 7, heads)  # (2*4-1)^2 rows, one column per head

    resized = resize_relative_position_bias_table(table, 4, 7)

    grid = table.T.reshape(1, heads, 7, 7)
    expected = bicubic(grid, (13, 13)).reshape(heads, 13 * 13).T
    assert resized.shape == (169, heads)
    torch.testing.assert_close(resized, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize('resize', [resample_relative_position_bias_table_geometric,
                                    resize_relative_position_bias_table])
def test_swin_table_layout_is_the_one_timm_indexes(resize):
    """A bias that depends only on the vertical offset (dy) in timm's indexing still does after
    resizing, when looked up with timm's index for the new window."""
    old_index = get_relative_position_index(4, 4)
    dy = torch.arange(4).repeat_interleave(4)
    vertical_offset = (dy[:, None] - dy[None, :]).float()
    table = torch.zeros(49, 1)
    table[old_index.flatten(), 0] = vertical_offset.flatten()

    resized = resize(table, 4, 7)

    bias = resized[get_relative_position_index(7, 7).flatten(), 0].view(7, 7, 7, 7)
    # bias[qy, qx, ky, kx] must not change with the columns qx, kx.
    assert torch.allclose(bias, bias[:, :1, :, :1].expand(7, 7, 7, 7), atol=1e-5)
    assert bias[6, 0, 0, 0] > bias[3, 0, 0, 0] > bias[0, 0, 0, 0]


@pytest.mark.parametrize('resize', [resample_relative_position_bias_table_geometric,
                                    resize_relative_position_bias_table])
def test_table_rows_that_do_not_fit_the_window_are_named(resize):
    with pytest.raises(ValueError, match=r'4x4 window needs a \(49, heads\) table.*\(169, 3\)'):
        resize(torch.zeros(169, 3), 4, 7)


def test_a_swin_loads_into_one_whose_last_stage_has_window_2():
    """At 64 px timm's Swin shrinks the windows to its stages (7, 7, 4, 2): the window-7
    tables of a 224-px model must resample to window 2 (the geometric ratio raised there)."""
    from fastmim.models.backbones import SwinTransformer

    arch = dict(embed_dim=8, depths=(1, 1, 1, 2), num_heads=(1, 1, 1, 1))
    source = SwinTransformer(arch=arch, img_size=224, window_size=7)
    target = SwinTransformer(arch=arch, img_size=64, window_size=7)
    target.load_state_dict(source.state_dict())
    assert tuple(target.layers[3].blocks[0].attn.window_size) == (2, 2)
    assert target.layers[3].blocks[0].attn.relative_position_bias_table.shape == (9, 1)
