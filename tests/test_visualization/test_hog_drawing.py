"""HOG glyphs point the right way, panels have the right content, images round-trip to uint8."""
import numpy as np
import pytest
import torch
from skimage.feature import hog as skimage_hog

from fastmim.models.targets import HOGGenerator, PixelTarget
from fastmim.visualization import (IMAGENET_MEAN, IMAGENET_STD, denormalize, draw_hog_glyphs,
                                   make_reconstruction_panel, pixels_from_patch_map)
from fastmim.visualization.hog_drawing import PANEL_GAP, TITLE_HEIGHT, VISIBLE_DIMMING

CELL = 8  # HOG cell size in image pixels
CELL_PX = 16  # drawn size of a cell


def line_angle(grey):
    """Direction of the brightness-weighted principal axis, degrees in [0, 180): 0 horizontal,
    45 rising to the right ('/'), 90 vertical, 135 falling to the right ('\\')."""
    rows, cols = np.nonzero(grey)
    weights = grey[rows, cols].astype(np.float64)
    rows = rows - np.average(rows, weights=weights)
    cols = cols - np.average(cols, weights=weights)
    covariance = np.cov(np.stack([rows, cols]), aweights=weights)
    v_row, v_col = np.linalg.eigh(covariance)[1][:, -1]
    return np.degrees(np.arctan2(-v_row, v_col)) % 180


def angle_error(a, b):
    difference = abs(a - b) % 180
    return min(difference, 180 - difference)


# Synthetic images of 8 x 8 cells of 8 * scale pixels.
def bright_square(scale=1):
    image = np.zeros((64 * scale, 64 * scale), np.float32)
    image[20 * scale:44 * scale, 20 * scale:44 * scale] = 2.
    return image


def rising_step(scale=1):
    rows, cols = np.mgrid[:64 * scale, :64 * scale]
    return (rows + cols >= 40 * scale).astype(np.float32) * 2  # edge through cell (2, 2)


def falling_step(scale=1):
    rows, cols = np.mgrid[:64 * scale, :64 * scale]
    return (cols >= rows).astype(np.float32) * 2  # edge through the diagonal cells


# (image, cell whose only structure is the edge, direction of that edge in degrees)
EDGES = {
    'vertical': (bright_square, (3, 2), 90),  # left side of the square
    'horizontal': (bright_square, (2, 3), 0),  # top side of the square
    'rising diagonal': (rising_step, (2, 2), 45),
    'falling diagonal': (falling_step, (3, 3), 135),
}


def fastmim_hog(image):
    """FastMIM's HOG of a grey image given to all three channels: (27, h, w)."""
    return HOGGenerator()(torch.from_numpy(image)[None, None].repeat(1, 3, 1, 1))[0]


def cell_of(picture, cell, size):
    row, col = cell
    return picture[row * size:(row + 1) * size, col * size:(col + 1) * size]


@pytest.mark.parametrize('edge', EDGES)
def test_glyph_is_drawn_along_the_edge(edge):
    make_image, cell, edge_angle = EDGES[edge]
    glyphs = draw_hog_glyphs(fastmim_hog(make_image()), cell_px=CELL_PX)

    # Half of a 20-degree bin is the most a bin centre can be off.
    assert angle_error(line_angle(cell_of(glyphs, cell, CELL_PX)[..., 0]), edge_angle) <= 11


@pytest.mark.parametrize('edge', EDGES)
def test_scikit_image_draws_the_same_direction(edge):
    """The reference picture: scikit-image's HOG visualisation draws edges too."""
    make_image, cell, edge_angle = EDGES[edge]
    # Twice the size, so that scikit-image draws lines as long as ours (15 px).
    _, picture = skimage_hog(make_image(scale=2), orientations=9,
                             pixels_per_cell=(2 * CELL, 2 * CELL), cells_per_block=(1, 1),
                             visualize=True)
    ours = draw_hog_glyphs(fastmim_hog(make_image()), cell_px=CELL_PX)

    theirs_angle = line_angle(cell_of(picture, cell, 2 * CELL))
    ours_angle = line_angle(cell_of(ours, cell, CELL_PX)[..., 0])
    # scikit-image truncates line ends to integers: up to 5 degrees more than a half bin.
    assert angle_error(theirs_angle, edge_angle) <= 15
    assert angle_error(ours_angle, theirs_angle) <= 25


def test_flat_cells_draw_nothing_and_edges_draw_something():
    glyphs = draw_hog_glyphs(fastmim_hog(bright_square()), cell_px=CELL_PX)
    assert cell_of(glyphs, (0, 0), CELL_PX).max() == 0  # outside the square
    assert cell_of(glyphs, (3, 3), CELL_PX).max() == 0  # inside the square
    assert cell_of(glyphs, (3, 2), CELL_PX).max() == 255  # the strongest edge sets the scale


def test_brightness_is_the_bin_value_averaged_over_colours():
    hog_map = np.zeros((27, 1, 2), np.float32)
    hog_map[[3, 12, 21], 0, 0] = 0.5  # bin 3 in R, G and B
    hog_map[3, 0, 1] = 0.6  # bin 3 in R only: average 0.2

    glyphs = draw_hog_glyphs(hog_map, cell_px=CELL_PX, vmax=1.)

    assert cell_of(glyphs, (0, 0), CELL_PX).max() == round(0.5 * 255)
    assert cell_of(glyphs, (0, 1), CELL_PX).max() == round(0.2 * 255)
    assert np.array_equal(glyphs[..., 0], glyphs[..., 2])  # grey


def test_negative_values_draw_black():
    hog_map = -np.ones((27, 2, 2), np.float32)
    assert draw_hog_glyphs(hog_map, vmax=1.).max() == 0


def test_glyph_picture_shape_and_errors():
    glyphs = draw_hog_glyphs(torch.rand(27, 3, 5), cell_px=12)
    assert glyphs.shape == (36, 60, 3) and glyphs.dtype == np.uint8
    with pytest.raises(ValueError, match=r'3 \* nbins = 27.*\(26, 3, 5\)'):
        draw_hog_glyphs(torch.rand(26, 3, 5))
    with pytest.raises(ValueError, match='cell_px'):
        draw_hog_glyphs(torch.rand(27, 3, 5), cell_px=2)


def test_denormalize_inverts_imagenet_normalisation():
    pixels = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    normalised = (pixels.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD
    chw = torch.from_numpy(normalised).permute(0, 3, 1, 2)

    assert np.array_equal(denormalize(chw), pixels)
    assert np.array_equal(denormalize(chw[1].numpy()), pixels[1])
    with pytest.raises(ValueError, match='shape'):
        denormalize(torch.zeros(4, 5, 7))


@pytest.mark.parametrize('norm_pix', [True, False])
def test_pixel_patch_map_returns_to_the_image(norm_pix):
    image = torch.randn(3, 32, 48)
    patch_map = PixelTarget(patch_size=8, norm_pix=norm_pix)(image[None])[0]
    assert torch.allclose(torch.from_numpy(pixels_from_patch_map(patch_map, image, norm_pix)),
                          image, atol=1e-4)


def column(panel, index, size):
    left = index * (size + PANEL_GAP)
    return panel[TITLE_HEIGHT:, left:left + size]


def test_hog_panel_shows_the_prediction_on_masked_cells_only():
    image = torch.from_numpy(bright_square()[None].repeat(3, 0))[:, 16:48, 16:48]
    target = fastmim_hog(image[0].numpy().copy())
    cell_mask = torch.zeros(4, 4, dtype=torch.bool)
    cell_mask[:2] = True  # top half masked

    panel = make_reconstruction_panel(image, image, target, target, cell_mask, cell_px=CELL_PX)

    size = 4 * CELL_PX
    assert panel.dtype == np.uint8
    assert panel.shape == (TITLE_HEIGHT + size, 4 * size + 3 * PANEL_GAP, 3)
    drawn_target, drawn_prediction = column(panel, 2, size), column(panel, 3, size)
    half = size // 2
    assert drawn_target.max() == 255
    assert np.array_equal(drawn_prediction[:half], drawn_target[:half])
    assert np.array_equal(drawn_prediction[half:],
                          np.round(drawn_target[half:] * VISIBLE_DIMMING).astype(np.uint8))


def test_pixel_panel_reconstructs_masked_patches_in_colour():
    pixels = np.random.default_rng(1).integers(0, 256, (32, 32, 3)).astype(np.float32)
    image = torch.from_numpy((pixels - IMAGENET_MEAN) / IMAGENET_STD).permute(2, 0, 1)
    perfect = PixelTarget(patch_size=16, norm_pix=True)(image[None])[0]
    pixel_mask = torch.zeros(1, 32, 32)
    pixel_mask[:, :, 16:] = 1  # right half masked

    panel = make_reconstruction_panel(image, image, perfect, perfect, pixel_mask,
                                      target_type='pixel')

    assert panel.shape == (TITLE_HEIGHT + 32, 3 * 32 + 2 * PANEL_GAP, 3)
    shown_input, prediction = column(panel, 0, 32), column(panel, 2, 32)
    assert np.abs(prediction[:, 16:].astype(int) - pixels[:, 16:]).max() <= 1
    assert np.array_equal(shown_input, np.round(pixels).astype(np.uint8))
    assert prediction[:, :16].max() <= round(255 * VISIBLE_DIMMING)


def test_panel_rejects_mismatched_inputs():
    image = torch.zeros(3, 32, 32)
    with pytest.raises(ValueError, match='differ in shape'):
        make_reconstruction_panel(image, image, torch.zeros(27, 4, 4), torch.zeros(27, 2, 2),
                                  torch.zeros(4, 4))
    with pytest.raises(ValueError, match='mask of shape'):
        make_reconstruction_panel(image, image, torch.zeros(27, 4, 4), torch.zeros(27, 4, 4),
                                  torch.zeros(3, 3))
    with pytest.raises(ValueError, match='target_type'):
        make_reconstruction_panel(image, image, torch.zeros(27, 4, 4), torch.zeros(27, 4, 4),
                                  torch.zeros(4, 4), target_type='depth')
