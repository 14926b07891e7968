# Ablation: ViT-B FastMIM with mask ratio 0.9 instead of 0.75.
_base_ = ['../vit_b_hog_800e.py']

model = dict(mask_ratio=0.9)
