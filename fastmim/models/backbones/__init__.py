"""Backbones: each returns a tuple of NCHW maps (of ``(B, C)`` class tokens for a ViT built
with ``out_type='cls_token'``) and serves FastMIM, mmdet and mmseg alike."""
from ._downstream import register_downstream
from .cmt import CMT
from .eva02 import EVA02
from .pvtv2 import PyramidVisionTransformerV2
from .swin import SwinTransformer
from .timm_backbone import TimmBackbone
from .vit import VisionTransformer

__all__ = [
    'CMT', 'EVA02', 'PyramidVisionTransformerV2', 'SwinTransformer', 'TimmBackbone',
    'VisionTransformer', 'register_downstream'
]

# After every backbone import: registers them into mmdet / mmseg when those are loaded.
register_downstream()
