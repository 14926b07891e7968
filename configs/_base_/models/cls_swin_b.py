# Swin-B classifier at 224 px, window 7 (a 128-px checkpoint's window-4 relative-position tables
# are resized from (2*4-1)^2 to (2*7-1)^2 rows on loading). Swin ends in its own LayerNorm,
# so the head adds no fc_norm.
_base_ = ['./classifier.py']

model = dict(
    backbone=dict(type='SwinTransformer', arch='b', img_size=224, window_size=7,
                  drop_path_rate=0.1),
    head=dict(pre_norm=None))
