# CMT-S classifier at 224 px (its relative position biases are resized from a 128-px checkpoint
# on loading), with the classifier of the CMT paper and of the release's CMT-S fine-tuning
# (mim_cmt_finetune.py): the last stage's map goes through a 1x1 conv to 1280 channels,
# BatchNorm and swish, then average pooling, dropout 0.1 and the linear layer
# (ConvPoolClsHead, which pools the map itself). It replaces the shared pooling + fc_norm +
# linear head; a converted release file (tools/convert/from_reference.py) loads into it.
_base_ = ['./classifier.py']

model = dict(
    backbone=dict(type='CMT', arch='s', img_size=224, drop_path_rate=0.1),
    head=dict(_delete_=True, type='ConvPoolClsHead', num_classes=1000, mid_channels=1280,
              drop_rate=0.1, init_std=2e-5))
