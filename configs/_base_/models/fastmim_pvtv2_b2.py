# FastMIM with PVTv2-B2 at 128 px: stride 32, 32-px mask blocks, decoder depth 1.
_base_ = ['./fastmim.py']

model = dict(backbone=dict(type='PyramidVisionTransformerV2', arch='b2'))
