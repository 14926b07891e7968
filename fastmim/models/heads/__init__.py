from .cls_head import LinearClsHead

__all__ = ['LinearClsHead']
