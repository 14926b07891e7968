from .mim_decoder import MIMDecoder
from .simple_fpn import LayerNorm2d, SimpleFeaturePyramid

__all__ = ['MIMDecoder', 'LayerNorm2d', 'SimpleFeaturePyramid']
