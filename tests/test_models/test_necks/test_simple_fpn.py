import pytest
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d

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


def _channel_layer_norm(x, norm):
    """LayerNorm over the channels of each position (ViTDet's ``LayerNorm`` on NCHW maps)."""
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1], ), norm.weight, norm.bias,
                        norm.eps).permute(0, 3, 1, 2)


def _vitdet_pyramid(x, neck):
    """ViTDet's simple feature pyramid written out with the neck's weights (the paper's Fig. 2
    and detectron2's ``SimpleFeaturePyramid``): x4 = deconv 2x2 s2, LN, GELU, deconv 2x2 s2;
    x2 = deconv 2x2 s2; x1 = identity; x0.5 = max-pool 2x2 s2; each then conv 1x1 + LN and
    conv 3x3 + LN; the extra level is a max-pool of kernel 1, stride 2 of the last."""
    up4, up2 = neck.rescales[0], neck.rescales[1]
    x4 = F.conv_transpose2d(x, up4[0].weight, up4[0].bias, stride=2)
    x4 = F.gelu(_channel_layer_norm(x4, up4[1]))
    x4 = F.conv_transpose2d(x4, up4[3].weight, up4[3].bias, stride=2)
    x2 = F.conv_transpose2d(x, up2.weight, up2.bias, stride=2)
    x05 = F.max_pool2d(x, kernel_size=2, stride=2)
    outputs = []
    for level, project in zip((x4, x2, x, x05), neck.projections):
        level = _channel_layer_norm(F.conv2d(level, project[0].weight), project[1])
        outputs.append(_channel_layer_norm(F.conv2d(level, project[2].weight, padding=1),
                                           project[3]))
    return outputs + [F.max_pool2d(outputs[-1], kernel_size=1, stride=2)]


def test_outputs_are_vitdets_simple_feature_pyramid():
    torch.manual_seed(0)
    neck = MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=32, out_channels=16))
    with torch.no_grad():  # norms away from their identity start, so that dropping one shows
        for module in neck.modules():
            if isinstance(module, LayerNorm2d):
                module.weight.uniform_(0.5, 2)
                module.bias.uniform_(-1, 1)
    x = torch.randn(2, 32, 6, 6)
    with torch.no_grad():
        outputs = neck((x, ))
        expected = _vitdet_pyramid(x, neck)
    assert len(outputs) == len(expected) == 5
    for output, reference in zip(outputs, expected):
        torch.testing.assert_close(output, reference, rtol=1e-5, atol=1e-5)


def test_unsupported_scale_is_rejected():
    with pytest.raises(ValueError, match='scale 3'):
        MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=32, scales=(3, )))
