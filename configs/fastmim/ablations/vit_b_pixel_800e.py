# Ablation: ViT-B FastMIM with a pixel target (per-patch normalised, MAE-style) instead of HOG.
_base_ = ['../vit_b_hog_800e.py']

model = dict(target_generator=dict(_delete_=True, type='PixelTarget', patch_size=16,
                                   norm_pix=True))
