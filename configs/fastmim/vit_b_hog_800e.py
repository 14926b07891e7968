# FastMIM ViT-B/16: 800 epochs (20 warmup) at 128 px, total batch 4096 (512 x 8 GPUs),
# lr 1.5e-4 x 4096 / 256 = 2.4e-3, 16-px blocks, decoder 256 x 1, HOG target.
# Published: 83.8 top-1 after 100-epoch fine-tuning at 224 px.
_base_ = ['../_base_/models/fastmim_vit_b.py', '../_base_/pretrain_imagenet_128_800e.py']
