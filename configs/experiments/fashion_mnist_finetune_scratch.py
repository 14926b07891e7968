# Fashion-MNIST study: the fine-tuning of fashion_mnist_finetune.py, same recipe and budget
# (200 updates of batch 64), from a random initialisation instead of the FastMIM checkpoint.
_base_ = ['./fashion_mnist_finetune.py']

model = dict(backbone=dict(init_cfg=None))
