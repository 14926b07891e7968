# Ablation: FastMIM on a CNN through the generic timm wrapper: ResNet-50 (stride 32, 32-px
# blocks), the Swin-B optimisation recipe. Pixel-space masking needs no change to the CNN.
_base_ = ['../swin_b_hog_400e.py']

model = dict(backbone=dict(_delete_=True, type='TimmBackbone', model_name='resnet50'))
