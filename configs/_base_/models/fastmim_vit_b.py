# FastMIM with ViT-B/16 (12 heads) at 128 px: 8x8 tokens, 16-px mask blocks, HOG target.
model = dict(
    type='FastMIM',
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=False),
    # Fixed 2-D sin-cos position embedding (frozen), as the reference release pre-trains ViT
    # (MAE's table); it is recomputed exactly when progressive resolution changes the grid.
    # Fine-tuning loads it as the initial value of a learned embedding.
    backbone=dict(type='VisionTransformer', arch='b', img_size=128, patch_size=16,
                  pos_embed_type='sincos'),
    # in_channels and out_channels (108 HOG values per 16-px token) are derived by FastMIM.
    neck=dict(type='MIMDecoder', embed_dim=256, depth=1, num_heads=8, mlp_ratio=4.),
    target_generator=dict(type='HOGGenerator', nbins=9, cell_size=8, normalize=True),
    loss=dict(type='MaskedMSELoss'),
    mask_ratio=0.75,
    block_size=16,
)
