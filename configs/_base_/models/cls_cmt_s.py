# CMT-S classifier at 224 px (its relative position biases are resized from a 128-px checkpoint
# on loading). CMT's last stage has no final norm, so the head keeps the fc_norm. Not the
# release's CMT-S head: there (and in the CMT paper) the last stage goes through a 1x1 conv to
# 1280 channels, BatchNorm and swish before pooling, then dropout 0.1 and the linear layer;
# fastmim's CMT has no such layers, so its published 83.9 was not obtained with this head.
_base_ = ['./classifier.py']

model = dict(backbone=dict(type='CMT', arch='s', img_size=224, drop_path_rate=0.1))
