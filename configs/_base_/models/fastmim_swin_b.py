# FastMIM with Swin-B, window 4, at 128 px: stages 32^2..4^2 tokens, 32-px mask blocks.
model = dict(
    type='FastMIM',
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=False),
    backbone=dict(type='SwinTransformer', arch='b', img_size=128, window_size=4),
    # 432 HOG values per 32-px token, derived by FastMIM from the backbone stride.
    neck=dict(type='MIMDecoder', embed_dim=256, depth=4, num_heads=8, mlp_ratio=4.),
    target_generator=dict(type='HOGGenerator', nbins=9, cell_size=8, normalize=True),
    loss=dict(type='MaskedMSELoss'),
    mask_ratio=0.75,
    block_size=32,
)
