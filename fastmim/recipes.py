"""The published recipe of each backbone type: its configs, by stage (a leaf module, importing
nothing).

Knowledge of the paper's releases, not of a backbone: which fine-tuning, detection and
segmentation configs are the published ones. The downstream benchmark
(tools/benchmarks/downstream.py) runs them; the reference-release converter
(tools/convert/from_reference.py) names the fine-tuning one in the hint that says how to
evaluate a converted classifier. The paths are relative to the repository (the detection and
segmentation configs live under projects/, which the package does not ship): the tools join
them to the repository root.
"""

# Backbone type (``geometry()['type']``) -> the published config of each stage. Only ViT-B and
# Swin-B have downstream recipes in the paper.
RECIPES = {
    'VisionTransformer': dict(
        finetune='configs/finetune/vit_b_ft_100e.py',
        seg='projects/segmentation/configs/upernet_fastmim_vit_b_ade20k_512x512_160k.py'),
    'SwinTransformer': dict(
        finetune='configs/finetune/swin_b_ft_100e.py',
        det='projects/detection/configs/mask_rcnn_fastmim_swin_b_fpn_3x_coco.py'),
    'PyramidVisionTransformerV2': dict(finetune='configs/finetune/pvtv2_b2_ft_100e.py'),
    'CMT': dict(finetune='configs/finetune/cmt_s_ft_100e.py'),
    'EVA02': dict(finetune='configs/finetune/eva02_b_ft_100e.py'),
}
