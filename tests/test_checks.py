"""One positive-int check for the arguments that count things: a bool is no count. Python
takes ``True`` for the int 1, so ``num_classes=True`` built a one-class head that passed the
check and failed later inside torch; half the checks refused bools, half did not."""
import pytest

from fastmim.checks import check_positive_int
from fastmim.models.utils.block_mask import BlockMaskGenerator, expand_block_mask
from fastmim.registry import DATASETS, HOOKS, MODELS, TRANSFORMS


@pytest.mark.parametrize('value', [1, 7])
def test_a_positive_int_is_returned(value):
    assert check_positive_int('Owner', 'size', value) == value


@pytest.mark.parametrize('value', [True, False, 0, -3, 2.0, '4', None])
def test_anything_else_is_named_with_its_owner_and_argument(value):
    with pytest.raises(ValueError) as raised:
        check_positive_int('Owner', 'size', value)
    assert str(raised.value) == f'Owner: size must be a positive int, got {value!r}'


@pytest.mark.parametrize('registry, cfg, owner_and_name', [
    (MODELS, dict(type='LinearClsHead', num_classes=True, in_channels=8),
     'LinearClsHead: num_classes'),
    (MODELS, dict(type='HOGGenerator', nbins=True), 'HOGGenerator: nbins'),
    (MODELS, dict(type='HOGGenerator', cell_size=True), 'HOGGenerator: cell_size'),
    (MODELS, dict(type='PixelTarget', patch_size=True), 'PixelTarget: patch_size'),
    (MODELS, dict(type='KNNClassifier', backbone=dict(type='VisionTransformer'), k=True),
     'KNNClassifier: k'),
    (MODELS, dict(type='KNNClassifier', backbone=dict(type='VisionTransformer'),
                  num_classes=True), 'KNNClassifier: num_classes'),
    (TRANSFORMS, dict(type='ResizeShorterCenterCrop', crop_size=True),
     'ResizeShorterCenterCrop: crop_size'),
    (DATASETS, dict(type='EmbeddedPhotos', pipeline=[], num_samples=True),
     'EmbeddedPhotos: num_samples'),
    (HOOKS, dict(type='ReconstructionVisualizationHook', interval=True),
     'ReconstructionVisualizationHook: interval'),
    (HOOKS, dict(type='ReconstructionVisualizationHook', num_images=True),
     'ReconstructionVisualizationHook: num_images'),
])
def test_a_bool_count_is_refused_when_built(registry, cfg, owner_and_name):
    with pytest.raises(ValueError, match=f'^{owner_and_name} must be a positive int, got True$'):
        registry.build(cfg)


def test_a_bool_block_size_or_factor_is_refused():
    import torch
    with pytest.raises(ValueError, match='BlockMaskGenerator: block_size must be a positive'):
        BlockMaskGenerator(block_size=True)
    with pytest.raises(ValueError, match='expand_block_mask: factor must be a positive'):
        expand_block_mask(torch.zeros(1, 2, 2, dtype=torch.bool), True)
