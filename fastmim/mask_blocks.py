"""Whether the blocks of a block mask tile an input, how many of them stay visible, and why
an input they do not tile or a mask ratio that leaves none visible is refused (a leaf module,
importing only the standard library): the mask generator refuses either at the first mask it
draws, config loading in the same words before any work starts, without building the
model."""
import math


def visible_blocks(num_blocks, mask_ratio):
    """``floor(N * (1 - mask_ratio))``, tolerant of float error (``1 - 0.9`` is 0.0999...)."""
    return math.floor(num_blocks * (1 - mask_ratio) + 1e-6)


def blocks_do_not_tile(height, width, block_size, size_setting):
    """Why blocks of ``block_size`` px do not tile a ``height`` x ``width`` input, telling to
    change ``size_setting`` (where the size is set); '' where they tile it."""
    if not (height % block_size or width % block_size):
        return ''
    return (f'input {height}x{width} is not a multiple of the mask block_size={block_size} '
            f'(model.block_size); make the input size ({size_setting}) a multiple of '
            f'{block_size}')


def no_block_visible(mask_ratio, height, width, block_size):
    """Why ``mask_ratio`` leaves none of the blocks of ``block_size`` px that tile a
    ``height`` x ``width`` input visible (a ratio above ``1 - 1/N``), naming the largest ratio
    that leaves one; '' where one stays visible."""
    grid_h, grid_w = height // block_size, width // block_size
    num_blocks = grid_h * grid_w
    if visible_blocks(num_blocks, mask_ratio):
        return ''
    # Floored to 6 decimals: a rounded-up ratio (1 - 1/49 = 0.979592) would leave none.
    largest = math.floor((1 - 1 / num_blocks) * 1e6) / 1e6
    return (f'leaves none of the {num_blocks} blocks ({grid_h}x{grid_w} of {block_size} px) of '
            f'a {height}x{width} input visible: the encoder would see only the mask colour; the '
            f'largest mask_ratio that leaves one block visible is {largest:g} (1 - 1/{num_blocks})')
