from .cls_head import ClsHead, LinearClsHead
from .conv_pool_cls_head import ConvPoolClsHead

__all__ = ['ClsHead', 'LinearClsHead', 'ConvPoolClsHead']
