# EVA-02-B/16 classifier at 224 px. A 128-px checkpoint's 8x8 position embedding is resized to
# 14x14 on loading; RoPE keeps the pre-training 8x8 grid as its reference (rope_ref_grid=8), so
# 14x14 tokens get interpolated rotary positions, as EVA-02 fine-tunes above its pre-training
# size. The final norm is replaced by fc_norm after pooling (EVA-02 pools the same way).
_base_ = ['./classifier.py']

model = dict(
    backbone=dict(type='EVA02', arch='b', img_size=224, patch_size=16, rope_ref_grid=8,
                  drop_path_rate=0.1, final_norm=False))
