# FastMIM Swin-B: 400 epochs (10 warmup) at 128 px, total batch 2048 (256 x 8 GPUs),
# lr 1.5e-4 x 2048 / 256 = 1.2e-3, window 4, 32-px blocks, decoder 256 x 4, HOG target.
# Published: 84.1 top-1 after 100-epoch fine-tuning at 224 px (configs/finetune/swin_b_ft_100e.py).
_base_ = [
    '../_base_/models/fastmim_swin_b.py',
    '../_base_/datasets/imagenet_pretrain_128.py',
    '../_base_/schedules/fastmim_adamw.py',
    '../_base_/default_runtime.py',
]

train_dataloader = dict(batch_size=256)  # x 8 GPUs = the schedule's total batch of 2048
