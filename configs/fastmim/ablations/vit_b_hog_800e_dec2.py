# Ablation: ViT-B FastMIM with a decoder of depth 2 instead of 1.
_base_ = ['../vit_b_hog_800e.py']

model = dict(neck=dict(depth=2))
