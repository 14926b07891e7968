from .mim_decoder import MIMDecoder
from .simple_fpn import SimpleFeaturePyramid

__all__ = ['MIMDecoder', 'SimpleFeaturePyramid']
