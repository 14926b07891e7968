# FastMIM with Swin-B, window 4, at 128 px: stages 32^2..4^2 tokens, 32-px mask blocks,
# 432 HOG values per token, decoder depth 4.
_base_ = ['./fastmim.py']

model = dict(
    backbone=dict(type='SwinTransformer', arch='b', img_size=128, window_size=4),
    neck=dict(depth=4),
)
