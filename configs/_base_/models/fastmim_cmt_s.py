# FastMIM with CMT-S at 128 px: stride 32, 32-px mask blocks, decoder depth 1.
_base_ = ['./fastmim.py']

model = dict(
    backbone=dict(type='CMT', arch='s', img_size=128),
    # The release's CMT encoder ends with a LayerNorm (eps 1e-6) that its decoder reads; the CMT
    # backbone has none (the fine-tuned CMT neither), so the decoder normalises its input.
    neck=dict(in_norm_eps=1e-6),
)
