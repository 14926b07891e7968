"""TimmBackbone: timm's features_only models as NCHW tuples with channels and strides."""
import pytest
import timm
import torch

from fastmim.models.backbones import TimmBackbone
from fastmim.registry import MODELS


def test_resnet50_stride_16_and_last_stage_at_two_sizes():
    """ResNet-50's feature_info strides are 2, 4, 8, 16, 32: index 3 (layer3) is stride 16."""
    model = TimmBackbone('resnet50', out_indices=(3, -1)).eval()
    assert model.out_channels == [1024, 2048] and model.out_strides == [16, 32]
    for size in [(64, 64), (96, 128)]:
        with torch.no_grad():
            stride16, stride32 = model(torch.randn(2, 3, *size))
        assert stride16.shape == (2, 1024, size[0] // 16, size[1] // 16)
        assert stride32.shape == (2, 2048, size[0] // 32, size[1] // 32)


def test_built_from_registry_with_default_last_stage():
    model = MODELS.build(dict(type='TimmBackbone', model_name='resnet18'))
    assert model.out_channels == [512] and model.out_strides == [32]
    (features, ) = model.eval()(torch.randn(1, 3, 64, 96))
    assert features.shape == (1, 512, 2, 3)


def test_convnext_tiny_all_stages_at_two_sizes():
    model = TimmBackbone('convnext_tiny', out_indices=(0, 1, 2, 3)).eval()
    assert model.out_channels == [96, 192, 384, 768] and model.out_strides == [4, 8, 16, 32]
    for size in [(64, 64), (96, 64)]:
        with torch.no_grad():
            outputs = model(torch.randn(1, 3, *size))
        expected = zip(model.out_channels, model.out_strides)
        assert [tuple(o.shape) for o in outputs] == [
            (1, c, size[0] // s, size[1] // s) for c, s in expected
        ]


def test_channels_last_models_are_returned_nchw():
    """timm's Swin features come out NHWC; the backbone contract is NCHW."""
    tiny = dict(embed_dim=16, depths=(1, 1), num_heads=(1, 1), img_size=64, window_size=4)
    torch.manual_seed(0)
    raw = timm.create_model('swin_tiny_patch4_window7_224', features_only=True, **tiny).eval()
    model = TimmBackbone('swin_tiny_patch4_window7_224', out_indices=(0, 1), **tiny).eval()
    model.model.load_state_dict(raw.state_dict())
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outputs = model(images)
        expected = raw(images)
    for output, nhwc in zip(outputs, expected):
        torch.testing.assert_close(output, nhwc.permute(0, 3, 1, 2))
    assert [tuple(o.shape) for o in outputs] == [(1, 16, 16, 16), (1, 32, 8, 8)]
    assert model.geometry() == dict(
        type='TimmBackbone', model_name='swin_tiny_patch4_window7_224', out_indices=[0, 1],
        out_strides=[4, 8], img_size=64)


def test_checkpoint_path_loads_a_full_timm_classifier_checkpoint(tmp_path):
    classifier = timm.create_model('resnet18').eval()
    checkpoint = tmp_path / 'resnet18.pth'
    torch.save(classifier.state_dict(), checkpoint)
    model = TimmBackbone('resnet18', checkpoint_path=str(checkpoint)).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        (features, ) = model(images)
        expected = classifier.forward_features(images)
    torch.testing.assert_close(features, expected)

    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.init_weights()  # what mmengine's runner calls: must not re-initialise timm's weights
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_gradient_flows():
    model = TimmBackbone('resnet18', out_indices=(2, 4)).train()
    outputs = model(torch.randn(2, 3, 32, 32))
    sum(o.mean() for o in outputs).backward()
    assert model.model.conv1.weight.grad is not None and model.model.conv1.weight.grad.any()


def test_bad_checkpoint_path_is_named(tmp_path):
    missing = tmp_path / 'missing.pth'
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        TimmBackbone('resnet18', checkpoint_path=str(missing))
    with pytest.raises(ValueError, match='not both'):
        TimmBackbone('resnet18', pretrained=True, checkpoint_path=str(missing))
