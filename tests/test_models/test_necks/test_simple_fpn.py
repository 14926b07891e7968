import pytest
import torch

from fastmim.registry import MODELS


def test_five_levels_at_strides_4_to_64_from_a_stride_16_map():
    neck = MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=32, out_channels=16))
    # The stride-16 map of a 64 px input.
    outputs = neck((torch.randn(2, 32, 4, 4), ))
    assert [tuple(out.shape) for out in outputs] == [
        (2, 16, 16, 16), (2, 16, 8, 8), (2, 16, 4, 4), (2, 16, 2, 2), (2, 16, 1, 1)]
    # The fifth level subsamples the fourth.
    torch.testing.assert_close(outputs[4], outputs[3][:, :, ::2, ::2])


def test_upsampling_halves_the_channels_per_factor_two():
    neck = MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=32, out_channels=16))
    assert [project[0].in_channels for project in neck.projections] == [8, 16, 32, 32]


def test_norms_normalise_over_channels():
    """ViTDet's LayerNorm stands for BatchNorm: statistics over the channels of each position."""
    neck = MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=8, out_channels=6))
    norm = neck.projections[0][1]
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(2, 6, 3, 5) * 3 + 1
    # Every position's channel vector on its own, statistics written out.
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + norm.eps)
    expected = expected * norm.weight.view(1, 6, 1, 1) + norm.bias.view(1, 6, 1, 1)
    torch.testing.assert_close(norm(x), expected)
    assert not norm(x).isclose(torch.nn.functional.layer_norm(x, (3, 5))).all()


def test_unsupported_scale_is_rejected():
    with pytest.raises(ValueError, match='scale 3'):
        MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=32, scales=(3, )))
