"""HOGGenerator against a float64 numpy transcription of the definition in REFERENCE.md, on
real photographs, plus hand-derived values on synthetic ramps."""
import numpy as np
import pytest
import torch
from skimage import data
from skimage.transform import resize

from fastmim.models.targets import HOGGenerator
from fastmim.registry import MODELS

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
PHOTOS = (data.astronaut, data.coffee, data.chelsea)

# Bound on the float32 rounding error of gx, gy and the magnitude for these inputs (|values| < 3,
# six terms with weights <= 2); the largest error measured on the test photos is 1.6e-6.
GRADIENT_ERROR = 4e-6


def normalised_photos(height, width):
    """(N, 3, H, W) float32 photos: centre-cropped to the aspect ratio, resized,
    ImageNet-normalised."""
    batch = []
    for load in PHOTOS:
        photo = load()
        rows, cols = photo.shape[:2]
        crop_rows = min(rows, round(cols * height / width))
        crop_cols = min(cols, round(rows * width / height))
        top, left = (rows - crop_rows) // 2, (cols - crop_cols) // 2
        photo = photo[top:top + crop_rows, left:left + crop_cols]
        photo = resize(photo, (height, width), anti_aliasing=True)  # float64 in [0, 1]
        batch.append(((photo - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))
    return np.stack(batch).astype(np.float32)


def reference_hog(image, nbins, cell_size, normalize):
    """One (3, H, W) image -> (3 * nbins, H / c, W / c) HOG and (3, H / c, W / c) edge mass.

    Written from the definition in float64: cross-correlation with the Sobel kernels on the
    reflect-padded image, magnitude, ``arctan2(gx, gy)`` binned by floor, magnitudes summed per
    cell with explicit loops, then per-colour L2 normalisation.

    The edge mass of a (colour, cell) is the summed magnitude of its pixels that lie so close to
    a bin edge that float32 arithmetic (error up to ``GRADIENT_ERROR`` per gradient) may floor
    them into the neighbouring bin: the definition leaves that much of the cell to rounding.
    """
    image = image.astype(np.float64)
    colours, height, width = image.shape
    kx = np.array([[1., 0., -1.], [2., 0., -2.], [1., 0., -1.]])
    ky = kx.T
    padded = np.pad(image, ((0, 0), (1, 1), (1, 1)), mode='reflect')
    gx = np.zeros_like(image)
    gy = np.zeros_like(image)
    for dy in range(3):
        for dx in range(3):
            window = padded[:, dy:dy + height, dx:dx + width]
            gx += kx[dy, dx] * window
            gy += ky[dy, dx] * window
    magnitude = np.sqrt(gx ** 2 + gy ** 2)
    phase = np.arctan2(gx, gy) * nbins / np.pi
    bins = np.floor(phase).astype(np.int64) % nbins
    # Axis-aligned gradients (exact here: float32 inputs, small integer weights) lie on a bin
    # edge, where even float64 may round the wrong way. Exactly: angle 0 or +-pi -> bin 0;
    # +-pi/2 -> phase +-nbins/2, floored and wrapped -> bin nbins // 2.
    bins[gx == 0] = 0
    bins[(gy == 0) & (gx != 0)] = nbins // 2

    # The float32 angle may be off by about 2 * GRADIENT_ERROR / magnitude radians.
    phase_error = nbins / np.pi * 2 * GRADIENT_ERROR / np.maximum(magnitude, 1e-30) + 1e-5
    near_edge = np.abs(phase - np.round(phase)) < phase_error
    # On the image border reflection makes the cross-border gradient exactly 0, which the
    # implementation must reproduce: those pixels are held to the exact bin.
    near_edge[:, :, [0, -1]] = False
    near_edge[:, [0, -1], :] = False
    edge_magnitude = np.where(near_edge, magnitude, 0.)

    cells_h, cells_w = height // cell_size, width // cell_size
    histograms = np.zeros((colours, nbins, cells_h, cells_w))
    edge_mass = np.zeros((colours, cells_h, cells_w))
    for colour in range(colours):
        for i in range(cells_h):
            for j in range(cells_w):
                rows = slice(i * cell_size, (i + 1) * cell_size)
                cols = slice(j * cell_size, (j + 1) * cell_size)
                for b, m in zip(bins[colour, rows, cols].ravel(),
                                magnitude[colour, rows, cols].ravel()):
                    histograms[colour, b, i, j] += m
                edge_mass[colour, i, j] = edge_magnitude[colour, rows, cols].sum()
    if normalize:
        norms = np.sqrt((histograms ** 2).sum(axis=1, keepdims=True))
        histograms = histograms / np.maximum(norms, 1e-12)
    return histograms.reshape(colours * nbins, cells_h, cells_w), edge_mass


def assert_matches_reference(images, hog, rtol=1e-4, device='cpu'):
    """Every cell agrees with the reference to ``rtol`` of its norm plus the float32 rounding
    noise of summing ``cell_size ** 2`` gradients (it only matters in nearly flat cells), except
    cells whose pixels on a bin edge explain the difference; those must be under 1% of cells."""
    output = hog.to(device)(torch.from_numpy(images).to(device)).cpu().numpy()
    nbins, cell_size = hog.nbins, hog.cell_size
    explained_by_edges = 0
    for image, result in zip(images, output):
        expected, edge_mass = reference_hog(image, nbins, cell_size, hog.normalize)
        grid = (3, nbins) + edge_mass.shape[1:]
        expected, result = expected.reshape(grid), result.reshape(grid)
        unnormalised, _ = reference_hog(image, nbins, cell_size, normalize=False)
        norm = np.maximum(np.sqrt((unnormalised.reshape(grid) ** 2).sum(1)), 1e-30)
        noise = cell_size * GRADIENT_ERROR  # root-sum-square over the cell's pixels
        if hog.normalize:  # |(v + d) / |v + d| - v / |v|| <= 2 |d| / |v|
            strict, with_edges = rtol + 2 * noise / norm, rtol + 2 * (noise + edge_mass) / norm
        else:
            strict, with_edges = rtol * norm + noise, rtol * norm + noise + edge_mass
        error = np.abs(result - expected).max(1)
        wrong = error > with_edges
        assert not wrong.any(), (
            f'{wrong.sum()} of {wrong.size} cells differ; worst error {error[wrong].max():.3g} '
            f'where the tolerance is {with_edges[wrong][error[wrong].argmax()]:.3g}')
        explained_by_edges += (error > strict).sum()
    cells = output.size // nbins
    assert explained_by_edges < 0.01 * cells, (
        f'{explained_by_edges} of {cells} cells differ by a pixel on a bin edge')


@pytest.mark.parametrize('height, width', [(32, 48), (64, 64), (128, 128)])
def test_normalised_hog_matches_numpy_reference_on_photos(height, width):
    assert_matches_reference(normalised_photos(height, width), HOGGenerator())


def test_unnormalised_hog_and_other_bins_and_cells_match_reference():
    images = normalised_photos(48, 64)
    assert_matches_reference(images, HOGGenerator(normalize=False))
    assert_matches_reference(images, HOGGenerator(nbins=6, cell_size=16))


def test_cell_totals_do_not_depend_on_binning():
    """Summed over bins, an unnormalised cell is the total magnitude, bin edges or not."""
    images = normalised_photos(64, 64)
    output = HOGGenerator(normalize=False)(torch.from_numpy(images)).numpy()
    for image, result in zip(images, output):
        expected, _ = reference_hog(image, 9, 8, normalize=False)
        totals = expected.reshape(3, 9, 8, 8).sum(1)
        np.testing.assert_allclose(result.reshape(3, 9, 8, 8).sum(1), totals, rtol=1e-5)


def horizontal_ramp(height, width, colour, slope):
    images = torch.zeros(1, 3, height, width)
    images[0, colour] = slope * torch.arange(width, dtype=torch.float32)
    return images


def test_shape_and_channel_order_on_a_ramp():
    """A green ramp rising to the right: gx = (1 + 2 + 1) * (left - right) = -8 * slope, gy = 0,
    so atan2(gx, 0) = -pi/2, -4.5 bins, floored to -5, i.e. bin 4: channel 1 * 9 + 4 = 13.
    Magnitude 8 * slope per pixel, 64 pixels per interior cell; the first and last image
    columns see their reflection on both sides and contribute 0."""
    slope = 0.25
    images = horizontal_ramp(16, 32, colour=1, slope=slope)
    unnormalised = HOGGenerator(normalize=False)(images)
    assert unnormalised.shape == (1, 27, 2, 4)
    expected = torch.zeros(1, 27, 2, 4)
    expected[0, 13] = 64 * 8 * slope
    expected[0, 13, :, 0] = expected[0, 13, :, -1] = 56 * 8 * slope
    torch.testing.assert_close(unnormalised, expected, rtol=1e-6, atol=0)

    normalised = HOGGenerator()(images)
    torch.testing.assert_close(normalised, (expected > 0).float(), rtol=1e-6, atol=0)


def test_vertical_ramp_lands_in_bin_zero():
    """Red rising downwards: gx = 0, gy = -8 * slope, atan2(0, negative) = +-pi -> +-9 bins,
    modulo 9 -> bin 0 of red, channel 0."""
    images = horizontal_ramp(16, 32, colour=0, slope=0.1).transpose(2, 3)
    output = HOGGenerator()(images)
    assert output.shape == (1, 27, 4, 2)
    assert torch.all(output[0, 0] == 1) and torch.all(output[0, 1:] == 0)


def test_a_convolution_residue_on_the_border_columns_changes_no_bin(monkeypatch):
    """Reflect padding makes gx exactly 0 on the first and last image columns. A convolution
    whose accumulation order leaves a residue of 1 ulp there (seen for gy on the CPU; CUDA's
    kernels differ) floored the border pixels of the red ramp above into bin 8: atan2(+tiny,
    negative) = pi - tiny. Simulated here as a positive residue on gx of the border columns."""
    import torch.nn.functional as F
    exact_conv2d = F.conv2d

    def conv2d_leaving_a_residue(*args, **kwargs):
        gradients = exact_conv2d(*args, **kwargs)  # (B, 6, H, W): r_x, r_y, g_x, g_y, ...
        gradients[:, 0::2, :, [0, -1]] += 1e-6
        return gradients
    monkeypatch.setattr(F, 'conv2d', conv2d_leaving_a_residue)
    images = horizontal_ramp(16, 32, colour=0, slope=0.1).transpose(2, 3)
    output = HOGGenerator(normalize=False)(images)
    assert torch.all(output[0, 1:] == 0)  # nothing outside bin 0 of red
    assert torch.all(output[0, 0] > 0)


def test_size_not_divisible_by_cell_size_is_rejected():
    with pytest.raises(ValueError, match=r'30x32 .*cell_size 8'):
        HOGGenerator()(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        HOGGenerator()(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match='nbins'):
        HOGGenerator(nbins=0)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_low_precision_input_under_autocast_gives_the_fp32_result(dtype):
    images = torch.from_numpy(normalised_photos(32, 32)).to(dtype)
    hog = HOGGenerator()
    with torch.autocast(device_type='cpu', dtype=dtype):
        output = hog(images)
    assert output.dtype == torch.float32
    assert torch.equal(output, hog(images.float()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_cuda_under_fp16_autocast_matches_reference():
    """The training configuration of a GPU: fp16 autocast around an fp32 HOG on CUDA."""
    with torch.autocast('cuda', dtype=torch.float16):
        assert_matches_reference(normalised_photos(128, 128), HOGGenerator(), device='cuda')


def test_no_gradient_flows_and_kernels_are_not_checkpoint_state():
    images = torch.randn(2, 3, 16, 16, requires_grad=True)
    output = HOGGenerator()(images)
    assert not output.requires_grad and output.grad_fn is None
    assert HOGGenerator().state_dict() == {}


def test_registered_with_its_attributes():
    hog = MODELS.build(dict(type='HOGGenerator', nbins=6, cell_size=4))
    assert isinstance(hog, HOGGenerator)
    assert (hog.channels, hog.cell_size) == (18, 4)
    assert hog(torch.randn(1, 3, 8, 12)).shape == (1, 18, 2, 3)
