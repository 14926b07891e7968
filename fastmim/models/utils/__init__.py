from .block_mask import BlockMaskGenerator, expand_block_mask
from .pretrained import FastMIMPretrainedInit, load_pretrained
from .reference import convert_reference_checkpoint

__all__ = [
    'BlockMaskGenerator', 'expand_block_mask', 'FastMIMPretrainedInit',
    'convert_reference_checkpoint', 'load_pretrained'
]
