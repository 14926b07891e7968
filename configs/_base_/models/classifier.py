# The fine-tuning classifier of MAE / FastMIM around any backbone: global average pooling, a
# LayerNorm (fc_norm) unless the backbone ends in its own, and a linear head initialised
# trunc-normal std 2e-5; label smoothing 0.1, mixup 0.8 / cutmix 1.0 and random erasing 0.25
# run on the normalised device batch in the data preprocessor. Each cls_<backbone>.py inherits
# this file and adds its backbone at 224 px with drop path 0.1. The backbone starts from a FastMIM
# pre-training checkpoint (FastMIMPretrained: its 'backbone.' weights, position embeddings and
# relative-position tables resized to the new grid); the recipe names the checkpoint
# (model.backbone.init_cfg.checkpoint).
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        type='ClsDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        label_smoothing=0.1,
        mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode='batch'),
        random_erasing=dict(probability=0.25, mode='pixel', max_count=1)),
    backbone=dict(init_cfg=dict(type='FastMIMPretrained', prefix='backbone.')),
    head=dict(type='LinearClsHead', num_classes=1000, pre_norm='ln', init_std=2e-5),
)
