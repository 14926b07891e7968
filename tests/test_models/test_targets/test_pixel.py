"""PixelTarget against a numpy per-patch transcription of MAE's patchify + norm_pix_loss."""
import numpy as np
import pytest
import torch

from fastmim.models.targets import PixelTarget
from fastmim.registry import MODELS


def reference_pixel_target(image, patch_size, norm_pix):
    """One (3, H, W) image -> (3 * p * p, H / p, W / p), patch by patch in float64.

    Each patch is flattened as MAE's patchify does ((dy, dx, rgb), row-major) and, with
    ``norm_pix``, standardised with its mean and unbiased variance (MAE's ``Tensor.var``).
    """
    image = image.astype(np.float64)
    patches_h, patches_w = image.shape[1] // patch_size, image.shape[2] // patch_size
    target = np.zeros((3 * patch_size ** 2, patches_h, patches_w))
    for i in range(patches_h):
        for j in range(patches_w):
            rows = slice(i * patch_size, (i + 1) * patch_size)
            cols = slice(j * patch_size, (j + 1) * patch_size)
            patch = image[:, rows, cols]
            values = patch.transpose(1, 2, 0).reshape(-1)
            if norm_pix:
                values = (values - values.mean()) / np.sqrt(values.var(ddof=1) + 1e-6)
            target[:, i, j] = values
    return target


@pytest.mark.parametrize('patch_size, height, width', [(16, 32, 48), (8, 16, 8), (2, 4, 6)])
@pytest.mark.parametrize('norm_pix', [True, False])
def test_matches_numpy_per_patch_reference(patch_size, height, width, norm_pix):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, height, width, generator=generator) * 2 + 0.5
    # A nearly flat patch (variance ~1e-5, e.g. a clear sky), where the 1e-6 added to the
    # variance (MAE's norm_pix_loss) changes the standardised values by a large factor.
    flat = torch.randn(3, patch_size, patch_size, generator=generator) * 1e-5 ** 0.5 + 0.01
    images[0, :, :patch_size, :patch_size] = flat
    output = PixelTarget(patch_size, norm_pix=norm_pix)(images)
    assert output.shape == (2, 3 * patch_size ** 2, height // patch_size, width // patch_size)
    for image, result in zip(images.numpy(), output.numpy()):
        np.testing.assert_allclose(result, reference_pixel_target(image, patch_size, norm_pix),
                                   rtol=1e-5, atol=1e-5)


def test_channel_layout_is_dy_dx_rgb():
    """Pixel (y, x) of colour c lands in channel (dy * p + dx) * 3 + c of patch (y // p, x // p)."""
    images = torch.zeros(1, 3, 4, 4)
    images[0, 2, 1, 3] = 7.  # blue, patch (0, 1), dy = 1, dx = 1
    output = PixelTarget(patch_size=2, norm_pix=False)(images)
    expected = torch.zeros(1, 12, 2, 2)
    expected[0, (1 * 2 + 1) * 3 + 2, 0, 1] = 7.
    assert torch.equal(output, expected)


def test_constant_patch_is_zero_not_nan():
    output = PixelTarget(patch_size=4)(torch.full((1, 3, 4, 4), 3.))
    assert torch.equal(output, torch.zeros(1, 48, 1, 1))


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match=r'40x32 .*patch_size 16'):
        PixelTarget(16)(torch.zeros(1, 3, 40, 32))
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        PixelTarget(16)(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match='patch_size'):
        PixelTarget(0)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_low_precision_input_under_autocast_gives_the_fp32_result(dtype):
    images = torch.randn(2, 3, 16, 16).to(dtype)
    target = PixelTarget(patch_size=8)
    with torch.autocast(device_type='cpu', dtype=dtype):
        output = target(images)
    assert output.dtype == torch.float32
    assert torch.equal(output, target(images.float()))


def test_no_gradient_and_registered_with_its_attributes():
    target = MODELS.build(dict(type='PixelTarget', patch_size=4))
    assert isinstance(target, PixelTarget)
    assert (target.channels, target.cell_size) == (48, 4)
    output = target(torch.randn(1, 3, 8, 8, requires_grad=True))
    assert not output.requires_grad and output.grad_fn is None
