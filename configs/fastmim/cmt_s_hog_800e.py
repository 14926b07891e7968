# FastMIM CMT-S: 800 epochs at 128 px, stride 32, 32-px blocks, HOG target; the ViT-B
# optimisation recipe (total batch 4096 = 512 x 8, lr 2.4e-3, 20 warmup epochs).
# Published: 83.9 top-1 after fine-tuning.
# The release publishes no pre-training command for this backbone: batch, lr and decoder
# (256 x 1) follow the ViT-B command, blocks the stride-32 Swin-B command.
_base_ = ['../_base_/models/fastmim_cmt_s.py', '../_base_/pretrain_imagenet_128_800e.py']
