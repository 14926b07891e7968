"""Drawing what FastMIM learns: HOG glyphs and reconstruction panels."""
from .hog_drawing import (IMAGENET_MEAN, IMAGENET_STD, bin_edge_directions, denormalize,
                          draw_hog_glyphs, draw_reconstructions, make_reconstruction_panel,
                          panel_options, pixels_from_patch_map)

__all__ = [
    'IMAGENET_MEAN', 'IMAGENET_STD', 'bin_edge_directions', 'denormalize', 'draw_hog_glyphs',
    'draw_reconstructions', 'make_reconstruction_panel', 'panel_options',
    'pixels_from_patch_map'
]
