# Ablation: ViT-B FastMIM pre-trained at 96 px instead of 128 (everything else as published):
# the base's own pipeline with the crop size changed, and the backbone's token grid to match.
_base_ = ['../vit_b_hog_800e.py']

train_pipeline = _base_.train_pipeline
train_pipeline[1].size = 96  # RandomResizedCrop
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
model = dict(backbone=dict(img_size=96))
