"""TimmBackbone: timm's features_only models as NCHW tuples with channels and strides, and
whole timm models without their classifier as pooled features."""
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


def test_checkpoint_path_loads_a_full_timm_classifier_checkpoint(tmp_path,
                                                              init_weights_keeps_weights):
    classifier = timm.create_model('resnet18').eval()
    checkpoint = tmp_path / 'resnet18.pth'
    torch.save(classifier.state_dict(), checkpoint)
    model = TimmBackbone('resnet18', checkpoint_path=str(checkpoint)).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        (features, ) = model(images)
        expected = classifier.forward_features(images)
    torch.testing.assert_close(features, expected)

    init_weights_keeps_weights(model)  # must not re-initialise timm's weights


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


# --- features_only=False: timm's own pooled pre-logits features ---------------------------------
def test_pooled_features_and_classifier_equal_the_full_timm_model():
    """EfficientNet's conv_head + bn2 sit after the last stage, outside features_only: the
    pooled backbone keeps them, so backbone + LinearClsHead give timm's own logits."""
    torch.manual_seed(0)
    reference = timm.create_model('tf_efficientnet_lite0', num_classes=10).eval()
    classifier = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='TimmBackbone', model_name='tf_efficientnet_lite0',
                      features_only=False),
        head=dict(type='LinearClsHead', num_classes=10, pre_norm=None))).eval()
    state = {f'backbone.model.{key}': value for key, value in reference.state_dict().items()
             if not key.startswith('classifier.')}
    state.update({'head.fc.weight': reference.classifier.weight,
                  'head.fc.bias': reference.classifier.bias})
    classifier.load_state_dict(state, strict=True)
    backbone = classifier.backbone
    assert backbone.out_channels == [1280]
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        (features, ) = backbone(images)
        expected = reference.forward_head(reference.forward_features(images), pre_logits=True)
        torch.testing.assert_close(features, expected)
        torch.testing.assert_close(classifier(images), reference(images))
    assert backbone.geometry() == dict(type='TimmBackbone', model_name='tf_efficientnet_lite0',
                                       features_only=False, num_features=1280)


def test_pooled_backbone_refuses_feature_map_arguments_and_pretraining():
    with pytest.raises(ValueError, match='out_indices=.*needs features_only=True'):
        TimmBackbone('resnet18', features_only=False, out_indices=(2, 3))
    with pytest.raises(ValueError, match='classifier is the head of ImageClassifier'):
        TimmBackbone('resnet18', features_only=False, num_classes=10)
    with pytest.raises(ValueError, match=r'returns pooled vectors \(B, 512\), which have no '
                       r'stride: FastMIM pre-training .* need feature maps, features_only=True'):
        MODELS.build(dict(
            type='FastMIM',
            backbone=dict(type='TimmBackbone', model_name='resnet18', features_only=False),
            neck=dict(type='MIMDecoder', embed_dim=32, depth=1, num_heads=4),
            target_generator=dict(type='HOGGenerator')))


# --- mistakes a config makes: one error naming the key and what it expects ---------------------
def test_unknown_model_name_is_named_with_close_timm_names():
    """A misspelt name was timm's bare ``RuntimeError: Unknown model`` with a traceback."""
    with pytest.raises(ValueError, match=r"model_name 'resnet5O' is not a timm model.*"
                       r"did you mean 'resnet50'"):
        TimmBackbone('resnet5O')


def test_fixed_size_model_refuses_another_input_size_naming_img_size():
    """timm's ViT-like models are built for one input size (``img_size``, 224 by default):
    a 128-px pre-training crop was timm's bare ``AssertionError`` at the first iteration."""
    model = TimmBackbone('vit_tiny_patch16_224', depth=1).eval()
    with pytest.raises(ValueError, match=r"TimmBackbone\('vit_tiny_patch16_224'\) takes 224x224 "
                       r'inputs only, got 128x128: set img_size=128'):
        model(torch.randn(1, 3, 128, 128))
    resized = TimmBackbone('vit_tiny_patch16_224', depth=1, img_size=128).eval()
    (features, ) = resized(torch.randn(1, 3, 128, 128))
    assert features.shape == (1, 192, 8, 8) and resized.out_strides == [16]


def test_out_index_beyond_the_feature_levels_is_named():
    """timm indexes its feature_info with out_indices unchecked: a bare IndexError."""
    with pytest.raises(ValueError, match=r"TimmBackbone\('resnet18'\): out index 5 is out of "
                       r'range for 5 feature levels'):
        TimmBackbone('resnet18', out_indices=(5, ))
    with pytest.raises(ValueError, match='out index -6 is out of range for 5 feature levels'):
        TimmBackbone('resnet18', out_indices=(-6, ))


@pytest.mark.parametrize('model_name, options', [
    ('resnet18', dict(out_indices=(1, -1))),
    ('convnext_atto', dict(out_indices=(0, 3))),  # features_only flattens stages.0 -> stages_0
    ('resnet18', dict(features_only=False)),
])
def test_weights_in_the_full_timm_models_names_load_through_load_pretrained(
        tmp_path, model_name, options):
    """A timm model's weights without its classifier (to_timm.py's output for this backbone,
    or ``num_classes=0`` weights) were refused with every key unexpected: the backbone keeps
    timm's model under ``model.``, its extractor under other names."""
    from fastmim.errors import CheckpointError
    from fastmim.models.utils.pretrained import load_pretrained

    torch.manual_seed(0)
    full = timm.create_model(model_name, num_classes=0).eval()
    path = tmp_path / 'timm.pth'
    torch.save(full.state_dict(), path)
    backbone = TimmBackbone(model_name, **options).eval()
    load_pretrained(backbone, str(path), prefix='')
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        if options.get('features_only', True):
            expected = full.forward_intermediates(images, indices=backbone.out_indices,
                                                  intermediates_only=True)
        else:
            expected = [full(images)]
        for output, wanted in zip(backbone(images), expected):
            torch.testing.assert_close(output, wanted)
    # A classifier has no place in the backbone: named, as for every other backbone.
    torch.save(timm.create_model(model_name, num_classes=10).state_dict(), path)
    with pytest.raises(CheckpointError, match='unexpected'):
        load_pretrained(TimmBackbone(model_name, **options), str(path), prefix='')


@pytest.mark.parametrize('model_name, prefixes', [
    ('resnet18', ('fc.', )), ('efficientnet_b0', ('classifier.', )),
    ('deit_tiny_distilled_patch16_224', ('head.', 'head_dist.'))])
def test_the_classifier_names_are_timms_and_read_once(monkeypatch, model_name, prefixes):
    """The classifier names come from the timm model's pretrained_cfg, which every checkpoint
    load asks for: the full model was built on the meta device at each load."""
    backbone = TimmBackbone(model_name, out_indices=(-1, ))
    built = []
    build = TimmBackbone.timm_model.__func__

    def counting_build(cls, geometry, **kwargs):
        built.append(geometry['model_name'])
        return build(cls, geometry, **kwargs)
    monkeypatch.setattr(TimmBackbone, 'timm_model', classmethod(counting_build))
    assert backbone.timm_classifier_prefixes() == prefixes
    assert backbone.timm_classifier_prefixes() == prefixes
    assert built == [model_name]
