# CMT-S classifier at 224 px (its relative position biases are resized from a 128-px checkpoint
# on loading). CMT's last stage has no final norm, so the head keeps the fc_norm.
_base_ = ['./classifier.py']

model = dict(backbone=dict(type='CMT', arch='s', img_size=224, drop_path_rate=0.1))
