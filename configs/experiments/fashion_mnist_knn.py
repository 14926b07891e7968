# Fashion-MNIST study: kNN classification (k 20, cosine, temperature 0.07) of the test images by
# the labelled fraction of the training images, with frozen features (pooled, L2-normalised).
#   .venv/bin/python tools/test.py configs/experiments/fashion_mnist_knn.py CHECKPOINT \
#       --cfg-options \
#       test_cfg.bank_dataloader.dataset.label_fraction=0.1 \
#       test_cfg.bank_dataloader.dataset.seed=0
_base_ = ['../_base_/default_runtime.py', './_base_/fashion_mnist.py']

model = dict(
    type='KNNClassifier',
    data_preprocessor=dict(type='ImgDataPreprocessor', bgr_to_rgb=False),
    # As pre-trained: fixed sin-cos position embedding, final norm on.
    backbone=dict(pos_embed_type='sincos'),
    k=20,
    temperature=0.07,
    num_classes=10,
)

test_cfg = dict(
    type='KNNTestLoop',
    fp16=True,  # bf16 autocast on the CPU
    bank_dataloader=dict(
        batch_size=250,
        num_workers=0,
        pin_memory=False,
        drop_last=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(type='FashionMNIST', split='train', label_fraction=0.1, seed=0,
                     pipeline={{_base_.eval_pipeline}})))
test_evaluator = dict(type='Accuracy', topk=(1, ), prefix='knn')
