# The pre-training recipe shared by the 800-epoch FastMIM configs (ViT-B/16, PVTv2-B2, CMT-S,
# EVA-02-B/16): ImageNet-1k at 128 px, the ViT-B optimisation (schedules/fastmim_adamw_800e.py:
# 20 warmup epochs, total batch 4096, lr 2.4e-3) and the default runtime. A recipe inherits its
# models/fastmim_<backbone>.py and this file. (Swin-B's 400-epoch recipe lists its own bases.)
_base_ = [
    './datasets/imagenet_pretrain_128.py',
    './schedules/fastmim_adamw_800e.py',
    './default_runtime.py',
]

train_dataloader = dict(batch_size=512)  # x 8 GPUs = the schedule's total batch of 4096
