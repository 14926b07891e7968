# kNN evaluation of a FastMIM ViT-B/16 pre-training checkpoint on ImageNet-1k (no training):
# every val image is classified by the 20 train images of highest cosine similarity, each
# voting exp(similarity / 0.07) for its class (Wu et al. 2018; DINO's protocol and settings).
#   .venv/bin/python tools/test.py configs/knn/vit_b_knn.py work_dirs/vit_b_hog_800e/epoch_800.pth
#   tools/dist_test.sh configs/knn/vit_b_knn.py CKPT 8
# Reports knn/top1 and knn/top5. Features: the pre-trained final norm on every patch token, then
# their global average, L2-normalised (FastMIM's decoder drops the class token, so only the
# patch tokens are trained to carry the image; model.backbone.out_type=cls_token gives DINO's
# class token instead). DINO's evaluation crop: shorter side 256 (bicubic), centre 224.
# Position embedding: the checkpoint's own table, resized from the 8x8 grid of 128-px
# pre-training to 14x14 when it loads (bicubic, class-token row kept): what fine-tuning and
# MAE's interpolate_pos_embed (the release's only route to 224 px) do. pos_embed_type='learned'
# is what loads it (nothing trains here); 'sincos' would recompute the sin-cos table at positions
# 0..13, and the encoder never saw 8..13 (cosine to the resized table: 0.85 mean, 0.73 min).
# For a fine-tuned checkpoint (its learned table, no final norm):
#   --cfg-options model.backbone.final_norm=False
_base_ = ['../_base_/datasets/imagenet_ft_224.py', '../_base_/default_runtime.py']

model = dict(
    type='KNNClassifier',
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=False),
    backbone=dict(type='VisionTransformer', arch='b', img_size=224, patch_size=16,
                  pos_embed_type='learned'),
    k=20,
    temperature=0.07,
    num_classes=1000,
)

# The bank: every train image through the evaluation pipeline, in dataset order on each rank.
bank_dataloader = dict(
    batch_size=128,
    num_workers=10,
    persistent_workers=False,
    pin_memory=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    # test_mode: an unreadable image is an error naming it, not a feature of a random other
    # image put in the bank in its place.
    dataset=dict(type='ImageFolder', data_root='data/imagenet', data_prefix='train',
                 with_label=True, pipeline={{_base_.test_pipeline}}, test_mode=True),
)
test_cfg = dict(type='KNNTestLoop', bank_dataloader=bank_dataloader, fp16=True)
test_evaluator = dict(type='Accuracy', topk=(1, 5), prefix='knn')

# Nothing is trained: drop what the dataset base defines for training and validation.
train_dataloader = None
val_dataloader = None
val_evaluator = None
