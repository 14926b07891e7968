# FastMIM with ViT-B/16 (12 heads) at 128 px: 8x8 tokens, 16-px mask blocks, 108 HOG values per
# token.
_base_ = ['./fastmim.py']

model = dict(
    # Fixed 2-D sin-cos position embedding (frozen), as the reference release pre-trains ViT
    # (MAE's table); it is recomputed exactly when progressive resolution changes the grid.
    # Fine-tuning loads it as the initial value of a learned embedding.
    # embed_init='mae': the patch embedding Xavier-uniform on its flattened view and the class
    # token N(0, 0.02), as the release initialises its pre-training ViT (the linear layers are
    # FastMIM's linear_init='xavier').
    backbone=dict(type='VisionTransformer', arch='b', img_size=128, patch_size=16,
                  pos_embed_type='sincos', embed_init='mae'),
    # The release's decoder LayerNorms take the ViT's eps (1e-6).
    neck=dict(eps=1e-6),
    block_size=16,
)
