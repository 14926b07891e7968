"""Pictures of what FastMIM predicts: HOG glyphs, images back to uint8, reconstruction panels.

Orientation convention
----------------------
FastMIM's HOG (``fastmim.models.targets.HOGGenerator``) bins the angle ``theta = atan2(gx, gy)``
of a Sobel gradient, where ``gx`` is the derivative along the columns and ``gy`` along the rows
(both with the reference's sign, which does not matter for unsigned orientation). So ``theta``
is measured **from the row (downward) axis towards the column (rightward) axis**, and the
gradient of bin ``b`` points along ``(drow, dcol) = (cos t, sin t)`` with the bin centre
``t = (b + 1/2) * pi / nbins``.

Like scikit-image's HOG picture, a glyph draws the **edge**, i.e. the direction perpendicular to
the gradient: ``(drow, dcol) = (-sin t, cos t)``. A vertical edge (intensity changes along the
columns: ``gy = 0``, ``theta = 90 deg``, bin 4 of 9) is drawn as a vertical line, a horizontal
edge (``theta = 0``, bin 0, centre 10 deg) as a line 10 degrees off horizontal: the bins are
20 degrees wide and a horizontal edge sits on the boundary of bin 0, so its bin centre is
necessarily 10 degrees away.

Panels
------
:func:`make_reconstruction_panel` puts side by side the input, the masked input, the HOG target
and the HOG prediction. The prediction is drawn on the **masked** cells, the only ones the loss
trains; the visible cells show the target dimmed, so that the picture reads as "what the model
filled in" while keeping the context. Target and prediction glyphs share one brightness scale
(the target's maximum), so a washed-out prediction looks washed out. For a pixel target the
prediction is un-normalised with each patch's mean and standard deviation taken from the input
image (exactly how MAE pictures its ``norm_pix_loss`` reconstructions), which gives natural
colours; the target itself is the input image and is not drawn a second time.
"""
import contextlib

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from fastmim.constants import IMAGENET_MEAN, IMAGENET_STD

# Brightness of the target drawn in the visible cells of a prediction panel.
VISIBLE_DIMMING = 0.3
PANEL_GAP = 4
TITLE_HEIGHT = 16
BACKGROUND = (32, 32, 32)


def _as_numpy(array):
    if isinstance(array, torch.Tensor):
        return array.detach().to('cpu', torch.float32).numpy()
    return np.asarray(array, dtype=np.float32)


def bin_edge_directions(nbins=9):
    """Unit ``(drow, dcol)`` of the edge drawn for each bin, shape ``(nbins, 2)``.

    The gradient of bin ``b`` is ``(cos t, sin t)`` with ``t`` the bin centre (see the module
    docstring); the edge is that vector turned by 90 degrees.
    """
    centres = (np.arange(nbins) + 0.5) * np.pi / nbins
    return np.stack([-np.sin(centres), np.cos(centres)], axis=1)


def _glyph_stencils(nbins, cell_px):
    """One anti-aliased line per bin through the cell centre: ``(nbins, cell_px, cell_px)``.

    A pixel's intensity is ``1 - distance`` to the line (0 beyond one pixel), within
    ``cell_px // 2 - 1`` of the centre along the line, so neighbouring glyphs never touch.
    """
    centre = cell_px // 2
    radius = cell_px // 2 - 1
    rows, cols = np.mgrid[:cell_px, :cell_px] - centre
    directions = bin_edge_directions(nbins)[:, :, None, None]
    along = rows * directions[:, 0] + cols * directions[:, 1]
    across = rows * directions[:, 1] - cols * directions[:, 0]
    return np.clip(1 - np.abs(across), 0, 1) * (np.abs(along) <= radius)


def _orientation_strengths(hog_map, nbins):
    """``(3 * nbins, h, w)`` HOG map -> ``(h, w, nbins)`` averaged over the colour channels."""
    hog_map = _as_numpy(hog_map)
    if hog_map.ndim != 3 or hog_map.shape[0] != 3 * nbins:
        raise ValueError(f'expected a HOG map of shape (3 * nbins = {3 * nbins}, h, w) with '
                         f'channel rgb * nbins + bin, got {hog_map.shape}')
    return hog_map.reshape(3, nbins, *hog_map.shape[1:]).mean(axis=0).transpose(1, 2, 0)


def _scaled(strengths, vmax):
    """Negative values (possible in a prediction) as 0; ``vmax`` (default: the max) as 1."""
    strengths = np.clip(strengths, 0, None)
    vmax = strengths.max() if vmax is None else vmax
    if vmax <= 0:
        return np.zeros_like(strengths)
    return np.clip(strengths / vmax, 0, 1)


# A glyph needs 4 pixels for a line through its centre.
MIN_CELL_PX = 4


def _check_cell_px(cell_px):
    if not isinstance(cell_px, int) or cell_px < MIN_CELL_PX:
        raise ValueError(f'cell_px must be an int >= {MIN_CELL_PX}, got {cell_px!r}')


def draw_hog_glyphs(hog_map, cell_px=16, nbins=9, vmax=None):
    """Draws a HOG map as orientation glyphs, white on black.

    Every cell becomes a ``cell_px`` square with one line per bin through its centre, along the
    edge direction of the bin (see the module docstring) and as bright as the bin's value
    averaged over the three colour channels. Overlapping lines keep the brighter one.

    Args:
        hog_map (Tensor | ndarray): ``(3 * nbins, h, w)``, channel ``rgb * nbins + bin``.
        cell_px (int): Side of a drawn cell in pixels.
        nbins (int): Orientation bins per colour channel.
        vmax (float, optional): Value drawn at full brightness; defaults to the map's maximum.
            Pass the target's maximum to draw a prediction on the same scale.

    Returns:
        ndarray: ``(h * cell_px, w * cell_px, 3)`` uint8 RGB.
    """
    _check_cell_px(cell_px)
    strengths = _scaled(_orientation_strengths(hog_map, nbins), vmax)
    cells = (strengths[..., None, None] * _glyph_stencils(nbins, cell_px)).max(axis=2)
    height, width = strengths.shape[:2]
    grey = cells.transpose(0, 2, 1, 3).reshape(height * cell_px, width * cell_px)
    return np.repeat(np.round(grey * 255).astype(np.uint8)[..., None], 3, axis=2)


def denormalize(images, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Normalised ``(3, H, W)`` / ``(B, 3, H, W)`` images -> uint8 ``(H, W, 3)`` / ``(B, H, W, 3)``.

    ``mean`` and ``std`` are per RGB channel on the 0-255 scale (the data preprocessor's).
    """
    images = _as_numpy(images)
    if images.ndim not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f'expected images of shape (3, H, W) or (B, 3, H, W), got {images.shape}')
    mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    pixels = np.clip(np.round(images * std + mean), 0, 255).astype(np.uint8)
    return np.moveaxis(pixels, -3, -1)


def pixels_from_patch_map(patch_map, image=None, norm_pix=True):
    """A pixel target's (or prediction's) patch map back to a normalised image ``(3, H, W)``.

    ``patch_map`` is ``(3 * p * p, h, w)`` with channel ``(dy * p + dx) * 3 + rgb`` (MAE's
    ``patchify`` layout, that of ``PixelTarget``). With ``norm_pix`` each patch is
    un-standardised with the mean and unbiased variance of the same patch of ``image``, as
    ``PixelTarget`` standardised it: ``x * sqrt(var + 1e-6) + mean``.
    """
    patch_map = _as_numpy(patch_map)
    channels, grid_h, grid_w = patch_map.shape
    patch = int(round((channels / 3) ** 0.5))
    if 3 * patch * patch != channels:
        raise ValueError(f'a pixel patch map has 3 * p * p channels, got {channels}')
    pixels = patch_map.reshape(patch, patch, 3, grid_h, grid_w).transpose(2, 3, 0, 4, 1)
    if norm_pix:
        if image is None:
            raise ValueError('norm_pix needs the input image to un-normalise each patch')
        patches = _as_numpy(image).reshape(3, grid_h, patch, grid_w, patch)
        mean = patches.mean(axis=(0, 2, 4))[None, :, None, :, None]
        var = patches.var(axis=(0, 2, 4), ddof=1)[None, :, None, :, None]
        pixels = pixels * np.sqrt(var + 1e-6) + mean
    return pixels.reshape(3, grid_h * patch, grid_w * patch)


def _cell_mask(mask, grid_size):
    """A cell-level ``(h, w)`` bool mask from a cell-level or pixel-level mask (1 = masked)."""
    mask = _as_numpy(mask) > 0.5
    while mask.ndim > 2 and mask.shape[0] == 1:
        mask = mask[0]
    grid_h, grid_w = grid_size
    if mask.shape == (grid_h, grid_w):
        return mask
    if mask.ndim == 2 and mask.shape[0] % grid_h == 0 and mask.shape[1] % grid_w == 0:
        cell_h, cell_w = mask.shape[0] // grid_h, mask.shape[1] // grid_w
        return mask.reshape(grid_h, cell_h, grid_w, cell_w).any(axis=(1, 3))
    raise ValueError(f'mask of shape {mask.shape} matches neither the {grid_h}x{grid_w} cell '
                     'grid nor a multiple of it')


def _only_masked(prediction, context, cell_mask):
    """Prediction on the masked cells, ``context`` dimmed on the visible ones (uint8 HWC)."""
    cell_px = prediction.shape[0] // cell_mask.shape[0]
    masked = cell_mask.repeat(cell_px, axis=0).repeat(cell_px, axis=1)[..., None]
    dimmed = np.round(context * VISIBLE_DIMMING).astype(np.uint8)
    return np.where(masked, prediction, dimmed)


def _titled_row(panels):
    """``[(title, uint8 HWC)]`` -> one image, panels resized (nearest) to the largest one."""
    height = max(image.shape[0] for _, image in panels)
    width = max(image.shape[1] for _, image in panels)
    row = Image.new('RGB', (len(panels) * (width + PANEL_GAP) - PANEL_GAP,
                            height + TITLE_HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(row)
    font = ImageFont.load_default()
    for index, (title, image) in enumerate(panels):
        left = index * (width + PANEL_GAP)
        tile = Image.fromarray(image).resize((width, height), Image.NEAREST)
        row.paste(tile, (left, TITLE_HEIGHT))
        draw.text((left + 2, 1), title, fill=(255, 255, 255), font=font)
    return np.asarray(row)


def make_reconstruction_panel(image, masked_image, target_map, pred_map, mask, target_type='hog',
                              nbins=9, norm_pix=True, cell_px=16, mean=IMAGENET_MEAN,
                              std=IMAGENET_STD):
    """One titled uint8 RGB picture of a reconstruction.

    HOG target: ``input | masked input | HOG target | HOG prediction``; pixel target:
    ``input | masked input | prediction``. In the prediction panel the masked cells show the
    prediction and the visible ones the target, dimmed (see the module docstring).

    Args:
        image, masked_image: Normalised ``(3, H, W)`` images (what the model saw).
        target_map, pred_map: ``(channels, h, w)`` maps on the target's cell grid.
        mask: 1/True = masked, at cell level ``(h, w)`` or pixel level ``(H, W)``, with or
            without a leading 1.
        target_type (str): ``'hog'`` or ``'pixel'``.
        nbins (int): HOG bins per colour channel.
        norm_pix (bool): The pixel target was standardised per patch.
        cell_px (int): Drawn size of one HOG cell; every panel is scaled to the glyphs' size.
        mean, std: The normalisation of ``image``, per RGB channel on the 0-255 scale.
    """
    target_map, pred_map = _as_numpy(target_map), _as_numpy(pred_map)
    if target_map.shape != pred_map.shape:
        raise ValueError(f'target map {target_map.shape} and prediction map {pred_map.shape} '
                         'differ in shape')
    cell_mask = _cell_mask(mask, target_map.shape[1:])
    panels = [('input', denormalize(image, mean, std)),
              ('masked input', denormalize(masked_image, mean, std))]
    if target_type == 'hog':
        vmax = _orientation_strengths(target_map, nbins).max()
        target = draw_hog_glyphs(target_map, cell_px, nbins)
        prediction = draw_hog_glyphs(pred_map, cell_px, nbins, vmax=vmax)
        panels += [('HOG target', target),
                   ('HOG prediction', _only_masked(prediction, target, cell_mask))]
    elif target_type == 'pixel':
        prediction = denormalize(pixels_from_patch_map(pred_map, image, norm_pix), mean, std)
        panels.append(('prediction', _only_masked(prediction, panels[0][1], cell_mask)))
    else:
        raise ValueError(f"target_type must be 'hog' or 'pixel', got {target_type!r}")
    return _titled_row(panels)


def panel_options(model):
    """The :func:`make_reconstruction_panel` keywords that describe ``model``'s target and
    normalisation, read from its ``target_generator`` and ``data_preprocessor``."""
    target = model.target_generator
    if hasattr(target, 'nbins'):
        options = dict(target_type='hog', nbins=target.nbins)
    elif hasattr(target, 'norm_pix'):
        options = dict(target_type='pixel', norm_pix=target.norm_pix)
    else:
        raise TypeError(f'cannot draw the target {type(target).__name__}: expected a HOG target '
                        '(with nbins) or a pixel target (with norm_pix)')
    preprocessor = model.data_preprocessor
    if getattr(preprocessor, '_enable_normalize', False):
        options.update(mean=preprocessor.mean.flatten().tolist(),
                       std=preprocessor.std.flatten().tolist())
    else:
        options.update(mean=(0., 0., 0.), std=(1., 1., 1.))
    return options


@contextlib.contextmanager
def _seeded_rng(seed, device):
    """Draw with a fixed seed on ``device`` and restore its random state afterwards.

    The mask is then the same at every visualisation, and training's random streams do not move.
    Only the CPU generator and the one of ``device`` are touched: forking every CUDA device
    would create a context on GPUs this process does not use.
    """
    cuda_index = None
    if device.type == 'cuda':
        cuda_index = device.index if device.index is not None else torch.cuda.current_device()
    with torch.random.fork_rng(devices=[] if cuda_index is None else [cuda_index],
                               device_type='cuda'):
        torch.random.default_generator.manual_seed(seed)
        if cuda_index is not None:
            with torch.cuda.device(cuda_index):
                torch.cuda.manual_seed(seed)
        yield


def draw_reconstructions(model, inputs, seed=0, cell_px=16):
    """Runs ``model.reconstruct`` on normalised ``inputs`` and draws one panel per image.

    The model runs in eval mode without gradients and with a fixed mask seed; its training mode
    and the global random state are restored afterwards.

    Returns:
        list[ndarray]: uint8 RGB panels, one per image of ``inputs``.
    """
    if not hasattr(model, 'reconstruct'):
        raise TypeError(f'{type(model).__name__} has no reconstruct(): only a FastMIM '
                        'pre-training model can be visualised')
    options = panel_options(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _seeded_rng(seed, inputs.device):
            outputs = model.reconstruct(inputs)
    finally:
        model.train(was_training)
    return [
        make_reconstruction_panel(image, masked_image, target, prediction, mask,
                                  cell_px=cell_px, **options)
        for image, masked_image, target, prediction, mask in zip(
            inputs, outputs['masked_image'], outputs['target'], outputs['prediction'],
            outputs['mask'])
    ]
