# Fashion-MNIST dense-task study: the UperNet run of fashion_mnist_upernet.py, same recipe and
# budget, from a random initialisation instead of the FastMIM checkpoint.
_base_ = ['./fashion_mnist_upernet.py']

model = dict(backbone=dict(init_cfg=None))
