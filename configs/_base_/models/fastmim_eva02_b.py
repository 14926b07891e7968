# FastMIM with EVA-02-B at patch 16 (12 heads, SwiGLU MLP, absolute + rotary position
# embeddings) at 128 px: 8x8 tokens, 16-px mask blocks, 108 HOG values per token, as ViT-B/16.
# Patch 16, not EVA-02's 14: 128 px is not a multiple of 14. The absolute position embedding is
# learned, as in EVA-02; RoPE spans the 8x8 grid (rope_ref_grid defaults to the input grid).
_base_ = ['./fastmim.py']

model = dict(
    backbone=dict(type='EVA02', arch='b', img_size=128, patch_size=16),
    # The decoder LayerNorms take the encoder's eps (1e-6), as the release's ViT decoder does.
    neck=dict(eps=1e-6),
    block_size=16,
)
