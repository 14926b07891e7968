# PVTv2-B2 classifier at 224 px. PVTv2 ends every stage in a LayerNorm, so the head adds no
# fc_norm.
_base_ = ['./classifier.py']

model = dict(
    backbone=dict(type='PyramidVisionTransformerV2', arch='b2', drop_path_rate=0.1),
    head=dict(pre_norm=None))
