"""ConvPoolClsHead, the CMT classifier of the paper and the reference release
(mim_cmt_finetune.py): its logits against the release's sequence written here as plain formulas
(1x1 conv -> BatchNorm eps 1e-5 -> x * sigmoid(x) -> mean over H, W -> dropout -> linear), the
release's initialisation, the map it gets inside ImageClassifier, and its layer decay."""
import math

import pytest
import torch
import torch.nn.functional as F

import fastmim.models  # noqa: F401  (registers the model components)
from fastmim.engine.optim_constructors import LayerDecayOptimWrapperConstructor
from fastmim.registry import MODELS

pytestmark = pytest.mark.usefixtures('one_thread')

TINY_CMT = dict(type='CMT', arch=dict(embed_dims=[8, 16, 16, 32], depths=[1, 1, 1, 1],
                                      num_heads=[1, 1, 1, 1], stem_channels=8, mlp_ratio=2.),
                img_size=64)


def build_head(in_channels=6, mid_channels=10, num_classes=4, **kwargs):
    return MODELS.build(dict(type='ConvPoolClsHead', num_classes=num_classes,
                             in_channels=in_channels, mid_channels=mid_channels, **kwargs))


def randomise(head, seed=0):
    """Random weights and BatchNorm statistics, so a wrong order or a missing step shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in head.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5
                         if name.endswith('running_var') else noise)
    return head


def release_pooled(head, maps):
    """The release's classifier up to its dropout, in eval mode, from the head's tensors."""
    x = F.conv2d(maps, head.conv.weight, head.conv.bias)
    bn = head.bn
    x = (x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + 1e-5)
    x = x * bn.weight[:, None, None] + bn.bias[:, None, None]
    return (x * torch.sigmoid(x)).mean(dim=(2, 3))


def test_logits_are_conv_bn_swish_mean_then_linear_of_the_map():
    head = randomise(build_head()).eval()
    maps = torch.randn(3, 6, 5, 7)
    with torch.no_grad():
        expected = release_pooled(head, maps) @ head.fc.weight.T + head.fc.bias
        torch.testing.assert_close(head(maps), expected)
        probabilities = head.predict(maps)
    torch.testing.assert_close(probabilities, expected.softmax(dim=-1))


def test_dropout_drops_the_pooled_features_before_the_linear_layer():
    """dp=0.1 of the release's CMT, applied after the pooling (a mask over (B, 1280))."""
    head = randomise(build_head(mid_channels=64)).train()
    head.bn.eval()  # the running statistics, so that only the dropout is random
    maps = torch.randn(4, 6, 3, 3)
    torch.manual_seed(1)
    with torch.no_grad():
        logits = head(maps)
        pooled = release_pooled(head, maps)
        torch.manual_seed(1)
        dropped = F.dropout(pooled, p=0.1, training=True)
    assert 0 < (dropped == 0).sum() < dropped.numel() / 3
    torch.testing.assert_close(logits, F.linear(dropped, head.fc.weight, head.fc.bias))


def test_initialisation_is_the_releases():
    """Conv: Kaiming normal, fan out (std sqrt(2 / 1280) for the 1x1 conv to 1280), zero bias;
    BatchNorm(1280, eps 1e-5, momentum 0.1) the identity; linear: trunc-normal std 2e-5 (MAE's
    fine-tuning re-initialisation of ``head``), zero bias."""
    torch.manual_seed(0)
    head = build_head(in_channels=512, mid_channels=1280, num_classes=1000)
    assert head.conv.kernel_size == (1, 1)
    assert head.conv.weight.std().item() == pytest.approx(math.sqrt(2 / 1280), rel=0.02)
    assert head.fc.weight.std().item() == pytest.approx(2e-5, rel=0.02)
    assert not head.conv.bias.any() and not head.fc.bias.any()
    assert (head.bn.eps, head.bn.momentum) == (1e-5, 0.1)
    assert head.bn.weight.eq(1).all() and not head.bn.bias.any()
    assert head.dropout.p == 0.1


def test_image_classifier_gives_the_head_the_map_not_its_average():
    torch.manual_seed(0)
    model = MODELS.build(dict(type='ImageClassifier', backbone=TINY_CMT,
                              head=dict(type='ConvPoolClsHead', num_classes=5,
                                        mid_channels=12)))
    randomise(model.head).eval()
    model.backbone.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        (maps, ) = model.backbone(images)
        expected = F.linear(release_pooled(model.head, maps), model.head.fc.weight,
                            model.head.fc.bias)
        torch.testing.assert_close(model(images, mode='tensor'), expected)


def test_head_learns_at_the_full_rate_with_no_decay_on_its_1d_tensors(groups_by_name):
    """The release's lr_decay.py gives ``_fc``, ``_bn`` and ``head`` the rest's id (scale 1) and
    no weight decay to 1-D tensors (BatchNorm, biases)."""
    model = MODELS.build(dict(type='ImageClassifier', backbone=TINY_CMT,
                              head=dict(type='ConvPoolClsHead', num_classes=5, mid_channels=12)))
    constructor = LayerDecayOptimWrapperConstructor(
        dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05)),
        dict(layer_decay_rate=0.75))
    by_name = groups_by_name(model, constructor(model).optimizer.param_groups)
    head = {name: group for name, group in by_name.items() if name.startswith('head.')}
    assert sorted(head) == ['head.bn.bias', 'head.bn.weight', 'head.conv.bias',
                            'head.conv.weight', 'head.fc.bias', 'head.fc.weight']
    assert all(group['lr_scale'] == 1 for group in head.values())
    assert {name for name, group in head.items() if group['weight_decay'] == 0.05} == {
        'head.conv.weight', 'head.fc.weight'}
    assert min(group['lr_scale'] for group in by_name.values()) < 0.75**4


def test_pooled_features_are_refused_with_the_shape_it_needs():
    with pytest.raises(ValueError, match=r"backbone's last map \(B, 6, H, W\), got shape "
                       r'\(2, 6\)'):
        build_head()(torch.randn(2, 6))
