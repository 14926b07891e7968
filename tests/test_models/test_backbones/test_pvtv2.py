"""PyramidVisionTransformerV2: stage maps equal timm's, strides 4-32 at any size."""
import pytest
import timm
import torch

from fastmim.models.backbones import PyramidVisionTransformerV2
from fastmim.registry import MODELS

TINY = dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4))


def tiny_pvt(**kwargs):
    torch.manual_seed(0)
    return PyramidVisionTransformerV2(arch=TINY, **kwargs).eval()


def test_stage_maps_equal_timm_pvt_v2_b0_at_two_sizes():
    """The b0 arch with timm's own pvt_v2_b0 weights gives timm's per-stage NCHW outputs."""
    reference = timm.create_model('pvt_v2_b0', num_classes=0).eval()
    model = PyramidVisionTransformerV2(arch='b0', out_indices=(0, 1, 2, 3)).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    assert model.out_channels == [32, 64, 160, 256] and model.out_strides == [4, 8, 16, 32]
    for size in [(128, 128), (96, 160)]:
        images = torch.randn(1, 3, *size)
        with torch.no_grad():
            outputs = model(images)
            expected = reference.forward_intermediates(images, intermediates_only=True)
        assert [tuple(o.shape) for o in outputs] == [
            (1, channels, size[0] // stride, size[1] // stride)
            for channels, stride in zip((32, 64, 160, 256), (4, 8, 16, 32))
        ]
        for output, reference_output in zip(outputs, expected):
            torch.testing.assert_close(output, reference_output, rtol=1e-4, atol=1e-4)



def conv_output_side(side: int, kernel: int, stride: int, padding: int) -> int:
    """torch's Conv2d output formula."""
    return (side + 2 * padding - kernel) // stride + 1


@pytest.mark.parametrize('size', [(200, 200), (225, 225), (224, 232)])
def test_sizes_no_multiple_of_32_run_as_timm_runs_them(size):
    """Nothing is required of the input size (``input_multiple`` is None, config load checks
    nothing): each patch embedding is a padded convolution (7x7 stride 4 padding 3, then 3x3
    stride 2 padding 1), so every stage map is the convolution's output size, the image's
    last rows and columns included, and timm's model gives the same maps."""
    reference = timm.create_model('pvt_v2_b0', num_classes=0).eval()
    model = PyramidVisionTransformerV2(arch='b0', out_indices=(0, 1, 2, 3)).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    assert PyramidVisionTransformerV2.input_multiple(dict(arch='b0')) is None
    images = torch.randn(1, 3, *size)
    with torch.no_grad():
        outputs = model(images)
        expected = reference.forward_intermediates(images, intermediates_only=True)
    sides = [[conv_output_side(side, 7, 4, 3) for side in size]]
    for _ in range(3):
        sides.append([conv_output_side(side, 3, 2, 1) for side in sides[-1]])
    assert [list(output.shape[-2:]) for output in outputs] == sides
    for output, reference_output in zip(outputs, expected):
        torch.testing.assert_close(output, reference_output, rtol=1e-4, atol=1e-4)

def test_default_is_last_stage_of_b2():
    model = MODELS.build(dict(type='PyramidVisionTransformerV2'))
    assert [len(stage.blocks) for stage in model.stages] == [3, 4, 6, 3]
    assert model.out_channels == [512] and model.out_strides == [32]
    assert model.geometry() == dict(
        type='PyramidVisionTransformerV2', arch='b2', depths=[3, 4, 6, 3],
        embed_dims=[64, 128, 320, 512], num_heads=[1, 2, 5, 8])


def test_gradient_reaches_every_parameter(gradient_reaches_every_parameter):
    (features, ) = gradient_reaches_every_parameter(tiny_pvt(), torch.randn(2, 3, 64, 96))
    assert features.shape == (2, 64, 2, 3)


def test_drop_path_is_applied_in_training_only(drop_path_is_applied_in_training_only):
    model = tiny_pvt(drop_path_rate=0.3)
    assert model.stages[3].blocks[0].drop_path1.drop_prob == pytest.approx(0.3)
    drop_path_is_applied_in_training_only(model, torch.randn(2, 3, 64, 64))


def test_mmengine_init_weights_keeps_weights(init_weights_keeps_weights):
    init_weights_keeps_weights(tiny_pvt())


@pytest.mark.parametrize('kwargs, message', [
    (dict(arch='b9'), 'unknown arch'),
    (dict(arch=dict(depths=(1, 1, 1, 1))), 'lacks keys'),
    (dict(arch=TINY, out_indices=(-5, )), 'out of range'),
    (dict(arch=TINY, num_classes=10), 'fixed by this backbone'),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PyramidVisionTransformerV2(**kwargs)


def test_arch_dict_with_another_number_of_entries_per_stage_is_named():
    """timm indexed the short list (a bare IndexError with a traceback)."""
    arch = dict(depths=(1, 1, 1, 1), embed_dims=(8, 16, 32, 64), num_heads=(1, 2, 4))
    with pytest.raises(ValueError, match=r'PyramidVisionTransformerV2: arch dict .* needs one '
                       r'entry per stage in num_heads \(4 stages, as depths\), got 3'):
        PyramidVisionTransformerV2(arch=arch)


def test_arch_dict_whose_stage_width_does_not_split_over_its_heads_is_named():
    """timm asserted it (a bare AssertionError with a traceback)."""
    arch = dict(depths=(1, 1, 1, 1), embed_dims=(30, 64, 128, 256), num_heads=(4, 2, 4, 8))
    with pytest.raises(ValueError, match=r'PyramidVisionTransformerV2: stage 0 width 30 \(arch '
                       r'embed_dims\[0\]\) is not divisible by its 4 heads '
                       r'\(arch num_heads\[0\]\)'):
        PyramidVisionTransformerV2(arch=arch)
