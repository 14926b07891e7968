# Ablation: FastMIM on ConvNeXt-T through the generic timm wrapper (stride 32, 32-px blocks),
# the Swin-B optimisation recipe.
_base_ = ['../swin_b_hog_400e.py']

model = dict(backbone=dict(_delete_=True, type='TimmBackbone', model_name='convnext_tiny'))
