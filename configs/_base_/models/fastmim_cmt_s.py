# FastMIM with CMT-S at 128 px: stride 32, 32-px mask blocks, decoder depth 1.
_base_ = ['./fastmim.py']

model = dict(backbone=dict(type='CMT', arch='s', img_size=128))
