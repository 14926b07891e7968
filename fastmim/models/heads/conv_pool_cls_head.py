"""The classifier of CMT, an EfficientNet-style head: it widens the last map before pooling, so it
takes the map, not pooled features.

The CMT paper (Guo et al., CVPR 2022, its architecture table: a 1x1 convolution projecting to
1280 channels, global average pooling, the fully connected classifier) and the reference
release's fine-tuning model (``mim_cmt_finetune.py``, whose published CMT-S reaches
83.9 top-1) end the backbone in::

    1x1 conv to 1280 channels (``_fc``) -> BatchNorm (``_bn``, eps 1e-5, momentum 0.1) ->
    swish x * sigmoid(x) -> global average pooling -> dropout 0.1 -> linear (``head``)

The swish sits between the widening and the average, so none of it can move after
``ImageClassifier``'s pooling: the head declares ``takes_feature_map`` and pools itself. The
release initialises the convolution Kaiming-normal (fan out, zero bias), the BatchNorm to the
identity and, after loading the pre-trained encoder, the linear weight truncated-normal with
std 2e-5 (zero bias), as MAE fine-tuning does. Everything here is new in a fine-tuned model, so
layer decay gives it the full learning rate (the rest's id, as the release's ``lr_decay.py``)
and the 1-D tensors (BatchNorm, biases) no weight decay, as the release's 1-D rule.
"""
from typing import Optional

import torch
from torch import nn
from torch.nn.init import trunc_normal_

from fastmim.registry import MODELS
from .cls_head import ClsHead


@MODELS.register_module()
class ConvPoolClsHead(ClsHead):
    """1x1 conv, BatchNorm, swish, average pooling, dropout, linear (see module docstring).

    Args:
        num_classes: number of classes.
        in_channels: channels of the backbone's last map; ``ImageClassifier`` fills it in from
            the backbone's ``out_channels``.
        mid_channels: width of the 1x1 conv (1280 in the CMT paper and release).
        drop_rate: dropout on the pooled features before the linear layer (0.1 in the release's
            fine-tuning: ``CMT(dp=0.1)``, which its ``main_finetune.py`` leaves at the default).
        init_std: std of the truncated-normal initialisation of the linear weight.
        loss: config of a loss ``(logits (B, K), target distribution (B, K)) -> scalar``.
        init_cfg: mmengine init config.
    """

    takes_feature_map = True

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 mid_channels: int = 1280,
                 drop_rate: float = 0.1,
                 init_std: float = 2e-5,
                 loss: dict = dict(type='SoftTargetCrossEntropy'),
                 init_cfg: Optional[dict] = None):
        super().__init__(num_classes, loss, init_cfg)
        if not 0 <= drop_rate < 1:
            raise ValueError(f'ConvPoolClsHead: drop_rate must be in [0, 1), got {drop_rate!r}')
        self.in_channels = in_channels
        self.conv = nn.Conv2d(in_channels, mid_channels, kernel_size=1)
        self.bn = nn.BatchNorm2d(mid_channels, eps=1e-5, momentum=0.1)
        self.act = nn.SiLU()  # swish: x * sigmoid(x)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(mid_channels, num_classes)
        nn.init.kaiming_normal_(self.conv.weight, mode='fan_out')
        nn.init.zeros_(self.conv.bias)
        trunc_normal_(self.fc.weight, std=init_std)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of the backbone's last map ``(B, in_channels, H, W)``."""
        if features.dim() != 4 or features.shape[1] != self.in_channels:
            raise ValueError(f'ConvPoolClsHead expects the backbone\'s last map '
                             f'(B, {self.in_channels}, H, W), got shape '
                             f'{tuple(features.shape)}')
        pooled = self.act(self.bn(self.conv(features))).mean(dim=(2, 3))
        return self.fc(self.dropout(pooled))
