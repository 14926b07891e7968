"""ViTDet's simple feature pyramid: the multi-scale maps a Mask R-CNN FPN head expects, built
from the single stride-16 map of a plain ViT (Li et al., "Exploring Plain Vision Transformer
Backbones for Object Detection", 2022).

A plain ViT has no stages: upsampling by transposed convolutions and downsampling by pooling of
its last map works as well as a hierarchical FPN over several blocks, which is ViTDet's finding.
LayerNorm (over channels: timm's ``LayerNorm2d``) stands in for BatchNorm throughout, as in
ViTDet.
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from timm.layers import LayerNorm2d
from torch import nn

from fastmim.registry import MODELS


def _rescale(in_channels: int, scale: float) -> Tuple[nn.Module, int]:
    """The resampling path for ``scale`` and the channels it ends with (each 2x upsampling
    halves them, as in ViTDet)."""
    if scale == 4:
        return nn.Sequential(
            nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2),
            LayerNorm2d(in_channels // 2),
            nn.GELU(),
            nn.ConvTranspose2d(in_channels // 2, in_channels // 4, kernel_size=2, stride=2),
        ), in_channels // 4
    if scale == 2:
        return nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2,
                                  stride=2), in_channels // 2
    if scale == 1:
        return nn.Identity(), in_channels
    if scale == 0.5:
        return nn.MaxPool2d(kernel_size=2, stride=2), in_channels
    raise ValueError(f'SimpleFeaturePyramid: scale {scale!r} is not one of 4, 2, 1, 0.5')


def _project(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 then 3x3 convolution, each followed by LayerNorm (no conv bias: the norm has one)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
        LayerNorm2d(out_channels),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
        LayerNorm2d(out_channels),
    )


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """ViTDet's neck: one backbone map to ``len(scales) + num_extra_levels`` maps of
    ``out_channels``.

    Args:
        in_channels: channels of the backbone map (the ViT's width).
        out_channels: channels of every output (256 for mmdet's RPN and RoI heads).
        scales: resampling factors of the backbone map, in output order; ViTDet's 4, 2, 1, 0.5
            turn a stride-16 map into strides 4, 8, 16, 32.
        num_extra_levels: outputs added after the last one, each a stride-2 subsampling
            (max-pool, kernel 1) of the previous output: mmdet's Mask R-CNN RPN reads 5 levels,
            the fifth at stride 64, as ViTDet's ``LastLevelMaxPool`` gives.
        init_cfg: mmengine init config; PyTorch's default initialisation otherwise.

    ``forward`` takes the backbone's tuple of maps and uses the last one.
    """

    def __init__(self, in_channels: int, out_channels: int = 256,
                 scales: Sequence[float] = (4, 2, 1, 0.5), num_extra_levels: int = 1,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.rescales = nn.ModuleList()
        self.projections = nn.ModuleList()
        for scale in scales:
            rescale, channels = _rescale(in_channels, scale)
            self.rescales.append(rescale)
            self.projections.append(_project(channels, out_channels))
        self.num_extra_levels = num_extra_levels

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        x = inputs[-1]
        outputs = [project(rescale(x)) for rescale, project in zip(self.rescales,
                                                                    self.projections)]
        for _ in range(self.num_extra_levels):
            outputs.append(F.max_pool2d(outputs[-1], kernel_size=1, stride=2))
        return tuple(outputs)
