"""Linear classification head for fine-tuning and linear probing, and what all heads share.

It receives one pooled feature vector per image (``ImageClassifier`` pools the backbone's map)
and is all that is new in a fine-tuned model besides the optional normalisation in front of it:

- ``pre_norm='ln'``: a fresh LayerNorm (MAE's ``fc_norm``) for ViT fine-tuning with global
  average pooling; the backbone's own final norm is then switched off (``final_norm=False``),
  as MAE does, because it was trained on per-token features, not on their average.
- ``pre_norm='bn'``: BatchNorm without affine parameters, MAE's linear-probing recipe: it
  whitens frozen features whose scale varies a lot between pre-trainings.
- ``pre_norm=None``: backbones that already end in a norm (Swin, PVTv2).

The linear layer starts from a truncated normal of tiny std (2e-5 in MAE / FastMIM fine-tuning)
and zero bias, so the initial logits are almost uniform and the first updates do not disturb
the pre-trained features with large gradients.
"""
from typing import Optional

import torch
from mmengine.model import BaseModule
from torch import nn
from torch.nn.init import trunc_normal_

from fastmim.checks import check_positive_int
from fastmim.registry import MODELS

PRE_NORMS = (None, 'ln', 'bn')


def build_pre_norm(pre_norm: Optional[str], channels: int) -> nn.Module:
    """The normalisation in front of the linear layer (see module docstring)."""
    if pre_norm not in PRE_NORMS:
        raise ValueError(f'LinearClsHead: pre_norm must be one of {PRE_NORMS}, got {pre_norm!r}')
    if pre_norm == 'ln':
        return nn.LayerNorm(channels, eps=1e-6)
    if pre_norm == 'bn':
        return nn.BatchNorm1d(channels, affine=False, eps=1e-6)
    return nn.Identity()


class ClsHead(BaseModule):
    """What every classification head shares: ``num_classes``, the loss against a target
    distribution and fp32 probabilities; a subclass defines ``forward`` (features -> logits).

    ``takes_feature_map`` says what ``ImageClassifier`` gives the head: pooled features
    ``(B, C)`` (False), or the backbone's last map ``(B, C, H, W)`` for a head with layers before
    its own pooling (True), whose non-linearity does not commute with the average.
    """

    takes_feature_map = False

    def __init__(self, num_classes: int, loss: dict, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.num_classes = check_positive_int(type(self).__name__, 'num_classes', num_classes)
        self.criterion = MODELS.build(loss)

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> dict:
        """``dict(loss=...)`` against a target distribution ``(B, num_classes)``."""
        logits = self(features)
        if targets.shape != logits.shape:
            raise ValueError(f'{type(self).__name__}: targets of shape {tuple(targets.shape)} '
                             f'do not match the logits {tuple(logits.shape)}')
        return dict(loss=self.criterion(logits, targets))

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, num_classes)``, computed in fp32."""
        return self(features).float().softmax(dim=-1)


@MODELS.register_module()
class LinearClsHead(ClsHead):
    """``fc_norm`` (optional) then a linear layer; the loss takes soft targets.

    Args:
        num_classes: number of classes.
        in_channels: width of the pooled feature; ``ImageClassifier`` fills it in from the
            backbone's ``out_channels``.
        pre_norm: ``'ln'``, ``'bn'`` or ``None`` (see module docstring).
        init_std: std of the truncated-normal initialisation of the linear weight.
        loss: config of a loss ``(logits (B, K), target distribution (B, K)) -> scalar``.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 pre_norm: Optional[str] = None,
                 init_std: float = 2e-5,
                 loss: dict = dict(type='SoftTargetCrossEntropy'),
                 init_cfg: Optional[dict] = None):
        super().__init__(num_classes, loss, init_cfg)
        self.in_channels = in_channels
        self.fc_norm = build_pre_norm(pre_norm, in_channels)
        self.fc = nn.Linear(in_channels, num_classes)
        trunc_normal_(self.fc.weight, std=init_std)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of pooled features ``(B, in_channels)``."""
        if features.dim() != 2 or features.shape[1] != self.in_channels:
            raise ValueError(f'LinearClsHead expects pooled features (B, {self.in_channels}), '
                             f'got shape {tuple(features.shape)}')
        if self.training and isinstance(self.fc_norm, nn.BatchNorm1d) and len(features) < 2:
            # Typically an epoch's last batch: torch's own error does not say what to change.
            raise ValueError("LinearClsHead (pre_norm='bn'): a training batch of one image has "
                             'no batch statistics; use train_dataloader.batch_size >= 2 with '
                             'drop_last=True (without it an epoch can end in a batch of one)')
        return self.fc(self.fc_norm(features))
