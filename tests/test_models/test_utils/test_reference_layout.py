"""The reference-release converter asks the backbones: a backbone that declares how the release
stores it converts without a line of the converter changed."""
import pytest
import torch
from torch import nn

from fastmim.errors import CheckpointError
from fastmim.models.utils.backbone_contract import BackboneContract
from fastmim.models.utils.reference import (ReferenceClassifier, ReferenceEncoder,
                                            ReferenceLayout, convert_reference_checkpoint,
                                            detect_reference_backbone, reference_backbones)
from fastmim.registry import MODELS


class TinyNet(BackboneContract, nn.Module):
    """One linear layer, released as ``encoder.tiny_proj`` (pre-training) or ``tiny_proj``
    (fine-tuned, followed by ``fc`` and ``head``, which no fastmim head takes)."""

    reference_layout = ReferenceLayout(
        name='tiny', pretraining_marker='encoder.tiny_proj.weight', encoder_prefix='encoder.',
        finetuned_marker='tiny_proj.weight', classifier_keys=('fc.weight', 'head.weight'))

    def __init__(self, width):
        super().__init__()
        self.proj = nn.Linear(width, width)
        self.out_channels = [width]

    def geometry(self):
        return dict(type='TinyNet', width=self.proj.in_features)

    @classmethod
    def from_reference_encoder(cls, state, path, img_size=None, num_heads=None):
        renamed = {key.replace('tiny_proj.', 'proj.'): value for key, value in state.items()}
        with torch.device('meta'):
            model = cls(renamed['proj.weight'].shape[1])
        return ReferenceEncoder(model, renamed, [])


@pytest.fixture
def tiny_net_registered():
    MODELS.register_module(module=TinyNet)
    yield
    MODELS.module_dict.pop('TinyNet')


def test_a_backbone_declaring_its_layout_is_found_and_converted(tiny_net_registered):
    assert reference_backbones()['tiny'] is TinyNet
    weight = torch.randn(3, 3)
    state = {'encoder.tiny_proj.weight': weight, 'encoder.tiny_proj.bias': torch.zeros(3),
             'decoder_pred.weight': torch.zeros(1), 'mask_token': torch.zeros(1, 1, 3)}
    assert detect_reference_backbone(state, 'tiny.pth') == 'tiny'
    converted = convert_reference_checkpoint({'model': state}, 'tiny.pth')
    assert sorted(converted['state_dict']) == ['backbone.proj.bias', 'backbone.proj.weight',
                                               'mask_token']
    assert converted['state_dict']['backbone.proj.weight'] is weight
    meta = converted['meta']
    assert meta['geometry']['backbone'] == dict(type='TinyNet', width=3)
    assert (meta['converted_from']['backbone'], meta['converted_from']['dropped']) == (
        'tiny', ['decoder_pred'])


def test_a_fine_tuned_file_whose_classifier_no_head_takes_gives_the_encoder(
        tiny_net_registered):
    state = {'tiny_proj.weight': torch.randn(3, 3), 'tiny_proj.bias': torch.zeros(3),
             'fc.weight': torch.zeros(4, 3), 'head.weight': torch.zeros(10, 4),
             'head.bias': torch.zeros(10)}
    converted = convert_reference_checkpoint({'model': state}, 'tiny_ft.pth')
    assert sorted(converted['state_dict']) == ['backbone.proj.bias', 'backbone.proj.weight']
    assert converted['meta']['converted_from']['dropped'] == ['fc', 'head']
    assert converted['meta']['converted_from']['fine_tuned']


class TinyClassifierNet(TinyNet):
    """TinyNet whose fine-tuned files end in ``fc_norm`` and ``head``: a LayerNorm after the
    pooling, which a fastmim head config (``head_cfg``) takes."""

    reference_layout = TinyNet.reference_layout._replace(
        name='tiny_cls', classifier_keys=('fc_norm.weight', 'head.weight'))
    head_cfg = dict(type='LinearClsHead', pre_norm='ln')

    @classmethod
    def from_reference_classifier(cls, encoder, parts, path, img_size=None, num_heads=None):
        model, state, _ = cls.from_reference_encoder(encoder, path)
        return ReferenceClassifier(model, state, dict(parts), cls.head_cfg,
                                   dict(fc_norm='head.fc_norm'))


@pytest.fixture
def tiny_classifier_registered():
    MODELS.register_module(module=TinyClassifierNet)
    yield
    MODELS.module_dict.pop('TinyClassifierNet')


def tiny_fine_tuned_file():
    return {'tiny_proj.weight': torch.randn(3, 3), 'tiny_proj.bias': torch.zeros(3),
            'fc_norm.weight': torch.ones(3), 'fc_norm.bias': torch.zeros(3),
            'head.weight': torch.randn(10, 3), 'head.bias': torch.zeros(10)}


def test_a_fine_tuned_file_converts_to_the_head_its_backbone_names(tiny_classifier_registered):
    state = tiny_fine_tuned_file()
    converted = convert_reference_checkpoint({'model': state}, 'tiny_ft.pth')
    assert sorted(converted['state_dict']) == [
        'backbone.proj.bias', 'backbone.proj.weight', 'head.fc.bias', 'head.fc.weight',
        'head.fc_norm.bias', 'head.fc_norm.weight']
    assert converted['state_dict']['head.fc.weight'] is state['head.weight']
    origin = converted['meta']['converted_from']
    assert origin['renamed'] == dict(fc_norm='head.fc_norm', head='head.fc')
    assert converted['meta']['geometry']['num_classes'] == 10


def test_classifier_weights_that_the_named_head_has_no_place_for_are_refused(
        tiny_classifier_registered, monkeypatch):
    """The head config, not a fixed LinearClsHead, is what the weights are checked against."""
    monkeypatch.setattr(TinyClassifierNet, 'head_cfg', dict(type='LinearClsHead', pre_norm=None))
    with pytest.raises(CheckpointError, match='fc_norm.weight'):
        convert_reference_checkpoint({'model': tiny_fine_tuned_file()}, 'tiny_ft.pth')


def test_the_converted_weights_are_checked_against_the_backbone(tiny_net_registered):
    state = {'encoder.tiny_proj.weight': torch.randn(3, 3)}  # no bias
    with pytest.raises(CheckpointError, match="proj.bias"):
        convert_reference_checkpoint({'model': state}, 'tiny.pth')


class TinyHeadsNet(TinyNet):
    """TinyNet whose weights fix its heads (one), as Swin's and CMT's biases do."""

    reference_layout = TinyNet.reference_layout._replace(
        name='tiny_heads', pretraining_marker='encoder.tiny_heads_proj.weight',
        heads_in_weights=True)

    def geometry(self):
        return dict(super().geometry(), type='TinyHeadsNet', num_heads=[1])

    @classmethod
    def from_reference_encoder(cls, state, path, img_size=None, num_heads=None):
        return super().from_reference_encoder(
            {key.replace('tiny_heads_proj.', 'tiny_proj.'): value for key, value in state.items()},
            path)


def test_contradicting_heads_name_the_layouts_that_take_num_heads(tiny_net_registered):
    """The message named 'ViT and PVTv2' by hand; a layout whose weights do not fix the heads
    (here TinyNet) is one --num-heads is for."""
    MODELS.register_module(module=TinyHeadsNet)
    try:
        state = {'encoder.tiny_heads_proj.weight': torch.randn(3, 3),
                 'encoder.tiny_heads_proj.bias': torch.zeros(3)}
        with pytest.raises(CheckpointError, match=r'it is for the layouts whose weights do not '
                           r'fix the heads: .*\btiny\b') as error:
            convert_reference_checkpoint({'model': state}, 'tiny_heads.pth', num_heads=[2])
        assert 'tiny_heads' not in str(error.value).split('fix the heads:')[1]
    finally:
        MODELS.module_dict.pop('TinyHeadsNet')


class TopLevelNet(TinyNet):
    """Released as MAE releases ViT: the encoder at the top level in both files, so only the
    classifier (``logits``, which is not ViT's ``head``) tells a classifier from a
    pre-training file."""

    reference_layout = ReferenceLayout(
        name='top', pretraining_marker='tiny_proj.weight', encoder_prefix='',
        finetuned_marker='tiny_proj.weight', classifier_keys=('logits.weight', ))


def test_a_classifier_is_told_by_the_parts_its_layout_names(tiny_net_registered):
    """A file with an encoder of the top-level layout and that layout's classifier parts is no
    pre-training file, whatever the classifier is called: a check knowing only ViT's names
    (``head``, ``fc_norm``) would take another release's classifier ending in ``norm`` for a
    reference pre-training file and convert it without its classifier."""
    from fastmim.models.utils.reference import is_reference_pretraining
    MODELS.register_module(module=TopLevelNet)
    try:
        encoder = {'tiny_proj.weight': torch.zeros(3, 3), 'tiny_proj.bias': torch.zeros(3)}
        assert is_reference_pretraining(encoder)
        classifier = {**encoder, 'norm.weight': torch.ones(3), 'logits.weight': torch.zeros(5, 3)}
        assert not is_reference_pretraining(classifier)
        # TinyNet's classifier parts (fc, head) count too, on any layout's encoder.
        assert not is_reference_pretraining({**encoder, 'fc.weight': torch.zeros(3, 3)})
    finally:
        MODELS.module_dict.pop('TopLevelNet')
