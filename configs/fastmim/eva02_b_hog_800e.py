# FastMIM EVA-02-B/16: 800 epochs (20 warmup) at 128 px, total batch 4096 (512 x 8 GPUs),
# lr 1.5e-4 x 4096 / 256 = 2.4e-3, 16-px blocks, decoder 256 x 1, HOG target: the ViT-B/16
# recipe unchanged (same width, depth and token grid). No published result for this backbone.
_base_ = ['../_base_/models/fastmim_eva02_b.py', '../_base_/pretrain_imagenet_128_800e.py']
