# FastMIM around any backbone, as published: ImageNet normalisation on the device, pixel-space
# masking of 75% of the 32-px blocks (the stride-32 backbones' token size), a 256-wide decoder
# of depth 1 and the normalised HOG target (9 bins, 8-px cells). Each fastmim_<backbone>.py
# inherits this file and adds its backbone and what it changes (ViT-B: 16-px blocks; Swin-B:
# decoder depth 4). The decoder's in_channels and out_channels (HOG values per token) are
# derived by FastMIM from the backbone.
model = dict(
    type='FastMIM',
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=False),
    # num_heads None: heads of 32 channels (8 here), also at another width.
    neck=dict(type='MIMDecoder', embed_dim=256, depth=1, num_heads=None, mlp_ratio=4.),
    target_generator=dict(type='HOGGenerator', nbins=9, cell_size=8, normalize=True),
    loss=dict(type='MaskedMSELoss'),
    mask_ratio=0.75,
    block_size=32,
)
