from .block_mask import BlockMaskGenerator, expand_block_mask
from .pretrained import FastMIMPretrainedInit, load_pretrained
from .reference import convert_reference_checkpoint
from .resize import resize_pos_embed, resize_relative_position_bias_table

__all__ = [
    'BlockMaskGenerator', 'expand_block_mask', 'FastMIMPretrainedInit',
    'convert_reference_checkpoint', 'load_pretrained', 'resize_pos_embed',
    'resize_relative_position_bias_table'
]
