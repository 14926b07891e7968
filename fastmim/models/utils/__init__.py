from .block_mask import BlockMaskGenerator, expand_block_mask

__all__ = ['BlockMaskGenerator', 'expand_block_mask']
