from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from fastmim.models.utils import BlockMaskGenerator, expand_block_mask


@pytest.mark.parametrize('mask_ratio, block_size, size, visible', [
    (0.75, 32, (128, 128), 4),     # Swin/PVT/CMT recipe: 4 of 16 blocks visible
    (0.75, 16, (128, 128), 16),    # ViT/16 recipe: 16 of 64
    (0.6, 16, (48, 80), 6),        # non-square, 15 blocks
    (0.9, 16, (32, 80), 1),        # 1 - 0.9 is 0.0999.. in floating point; N * 0.1 = 1
    # fractional N * (1 - r): the count is floored (REFERENCE: int(N * (1 - mask_ratio))), not
    # rounded up or to nearest; these are the mask06 / mask09 ablation configs' counts
    (0.6, 16, (128, 128), 25),     # 64 * 0.4 = 25.6
    (0.9, 16, (128, 128), 6),      # 64 * 0.1 = 6.4
    (0.6, 32, (128, 128), 6),      # 16 * 0.4 = 6.4
])
def test_exact_visible_count_per_sample(mask_ratio, block_size, size, visible):
    torch.manual_seed(0)
    mask = BlockMaskGenerator(mask_ratio, block_size)(8, *size, device='cpu')
    assert mask.dtype == torch.bool
    assert mask.shape == (8, size[0] // block_size, size[1] // block_size)
    assert (~mask).flatten(1).sum(1).tolist() == [visible] * 8


def test_positions_are_uniform_and_samples_differ():
    torch.manual_seed(0)
    draws, num_blocks, visible = 4000, 16, 4
    mask = BlockMaskGenerator(0.75, 32)(draws, 128, 128)
    counts = (~mask).flatten(1).sum(0).double()
    expected = draws * visible / num_blocks
    chi_square = ((counts - expected) ** 2 / expected).sum().item()
    assert chi_square < 50, f'visible-block frequencies far from uniform: {counts.tolist()}'
    first_eight = mask[:8].flatten(1)
    assert len({tuple(row.tolist()) for row in first_eight}) > 1


def test_global_seed_makes_masks_reproducible():
    generator = BlockMaskGenerator(0.75, 16)
    torch.manual_seed(3)
    first = generator(4, 64, 64)
    torch.manual_seed(3)
    assert torch.equal(first, generator(4, 64, 64))
    assert not torch.equal(first, generator(4, 64, 64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_cuda_mask_is_drawn_on_the_requested_device():
    mask = BlockMaskGenerator(0.75, 32)(2, 64, 64, device='cuda')
    assert mask.is_cuda and mask.dtype == torch.bool
    assert (~mask).flatten(1).sum(1).tolist() == [1, 1]


def test_bad_sizes_and_arguments_raise():
    with pytest.raises(ValueError, match='100x128.*block_size=32'):
        BlockMaskGenerator(0.75, 32)(2, 100, 128)
    with pytest.raises(ValueError, match='mask_ratio=1e-09 masks none of the 4 blocks'):
        BlockMaskGenerator(1e-9, 32)(2, 64, 64)
    with pytest.raises(ValueError, match='mask_ratio'):
        BlockMaskGenerator(1.0, 32)
    with pytest.raises(ValueError, match='block_size'):
        BlockMaskGenerator(0.5, 0)


@pytest.mark.parametrize('size, block, grid', [(128, 16, '8x8'), (128, 32, '4x4')])
def test_a_ratio_that_leaves_no_block_visible_names_the_largest_that_does(size, block, grid):
    """``--cfg-options model.mask_ratio=0.99`` keeps floor(64 * 0.01) = 0 of ViT's 64 blocks
    visible (Swin: 0 of 16), the degenerate case mask_ratio=1 is refused for: it trained."""
    num_blocks = (size // block) ** 2
    largest = 1 - 1 / num_blocks
    with pytest.raises(ValueError, match=rf'mask_ratio=0.99 leaves none of the {num_blocks} '
                                         rf'blocks \({grid} of {block} px\) of a {size}x{size} '
                                         rf'input visible.*largest mask_ratio that leaves one '
                                         rf'block visible is {largest:g}'):
        BlockMaskGenerator(0.99, block)(2, size, size)
    mask = BlockMaskGenerator(largest, block)(2, size, size)
    assert (~mask).flatten(1).sum(1).tolist() == [1, 1]


def test_a_ratio_of_0_masks_nothing_on_purpose():
    assert not BlockMaskGenerator(0.0, 32)(2, 64, 64).any()


def test_expand_block_mask_matches_kronecker_product():
    mask = torch.rand(3, 2, 4) > 0.5
    expanded = expand_block_mask(mask, 4)
    reference = np.stack([np.kron(m, np.ones((4, 4), dtype=bool)) for m in mask.numpy()])
    assert expanded.shape == (3, 8, 16)
    np.testing.assert_array_equal(expanded.numpy(), reference)
    with pytest.raises(ValueError, match='factor'):
        expand_block_mask(mask, 0)


def input_sizes(cfg):
    """Every crop size a pre-training config trains at: its pipeline's, and its
    progressive-resolution stages'."""
    sizes = [step.size for step in cfg.train_dataloader.dataset.pipeline
             if step.type == 'RandomResizedCrop']
    for hook in cfg.get('custom_hooks', []):
        sizes += [stage['input_size'] for stage in hook.get('stages', [])]
    return [size if isinstance(size, (tuple, list)) else (size, size) for size in sizes]


PRETRAINING_CONFIGS = sorted((Path(__file__).resolve().parents[3] / 'configs' /
                              'fastmim').rglob('*.py'))


@pytest.mark.parametrize('path', PRETRAINING_CONFIGS, ids=lambda path: path.name)
def test_published_grids_keep_the_reference_count(path):
    """The count is taken up to float error, where the reference's int() keeps one block fewer
    just below a whole number; no shipped pre-training config meets such a product, so each
    keeps the reference's int(N * (1 - mask_ratio)) blocks visible."""
    cfg = Config.fromfile(str(path))
    ratio, block = cfg.model.mask_ratio, cfg.model.block_size
    generator = BlockMaskGenerator(ratio, block)
    sizes = input_sizes(cfg)
    assert sizes, f'{path.name}: no crop size found'
    for height, width in sizes:
        blocks = (height // block) * (width // block)
        assert generator.num_visible(blocks) == int(blocks * (1 - ratio)), (height, width)
