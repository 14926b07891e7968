# ViT-B/16 classifier at 224 px. Learned position embedding (a pre-training checkpoint's sin-cos
# 8x8 grid is resized to 14x14 on loading); the final norm is replaced by fc_norm after
# pooling, as in MAE.
_base_ = ['./classifier.py']

model = dict(
    backbone=dict(type='VisionTransformer', arch='b', img_size=224, patch_size=16,
                  drop_path_rate=0.1, final_norm=False))
