"""Batch-level training augmentation for fine-tuning, on the device, after normalisation.

Two of the published fine-tuning augmentations act on whole normalised tensors rather than on
decoded images, so they belong here and not in the CPU pipeline, whose images stay uint8 until
this preprocessor normalises them:

- **Random erasing** in ``'pixel'`` mode fills a box with N(0, 1) noise *in normalised space*;
  a uint8 image cannot hold that noise without clipping it. timm applies it to normalised
  tensors too (on the GPU batch in its prefetcher).
- **Mixup / CutMix** mix pairs of images of a batch, and their labels with the same weight.

Both are timm's own classes (``RandomErasing``, ``Mixup``), applied in the same order as timm's
training script: erasing per image, then mixing of the batch. Label smoothing is folded into the
mixed targets as ``Mixup`` does; without mixup the targets are smoothed one-hot vectors
(``timm.data.mixup.mixup_target``). The targets are stored as ``gt_score`` in each data sample.
"""
from typing import Optional, Sequence

import torch
from mmengine.model import ImgDataPreprocessor
from timm.data import Mixup
from timm.data.mixup import mixup_target
from timm.data.random_erasing import RandomErasing

from fastmim.constants import IMAGENET_MEAN, IMAGENET_STD
from fastmim.registry import MODELS


@MODELS.register_module()
class ClsDataPreprocessor(ImgDataPreprocessor):
    """ImageNet normalisation, then (training only) random erasing, mixup/cutmix, smoothing.

    Args:
        mean, std: per-channel statistics on the 0-255 scale (default ImageNet, RGB).
        num_classes: number of classes, needed for soft targets. ``ImageClassifier`` fills it in
            from its head.
        label_smoothing: smoothing folded into the training targets (0.1 in the recipes).
        mixup: ``None`` or keyword arguments of ``timm.data.Mixup`` (``mixup_alpha``,
            ``cutmix_alpha``, ``cutmix_minmax``, ``prob``, ``switch_prob``, ``mode``,
            ``correct_lam``), e.g. ``dict(mixup_alpha=0.8, cutmix_alpha=1.0)``.
            ``label_smoothing`` and ``num_classes`` come from this class.
        random_erasing: ``None`` or keyword arguments of ``timm.data.random_erasing.RandomErasing``
            (``probability``, ``mode``, ``max_count``, ...), e.g.
            ``dict(probability=0.25, mode='pixel', max_count=1)``.
        **kwargs: other ``ImgDataPreprocessor`` arguments (``bgr_to_rgb``, ``pad_size_divisor``).
    """

    def __init__(self,
                 mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD,
                 num_classes: Optional[int] = None,
                 label_smoothing: float = 0.,
                 mixup: Optional[dict] = None,
                 random_erasing: Optional[dict] = None,
                 **kwargs):
        super().__init__(mean=mean, std=std, **kwargs)
        if not 0 <= label_smoothing < 1:
            raise ValueError(f'ClsDataPreprocessor: label_smoothing must be in [0, 1), '
                             f'got {label_smoothing}')
        if (mixup or label_smoothing) and not (isinstance(num_classes, int) and num_classes > 0):
            raise ValueError(f'ClsDataPreprocessor: mixup and label smoothing need num_classes '
                             f'(a positive int), got {num_classes!r}')
        for name in ('label_smoothing', 'num_classes'):
            if name in (mixup or {}):
                raise ValueError(f'ClsDataPreprocessor: give {name} to the preprocessor, not in '
                                 f'its mixup dict {mixup}')
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.mixup = None if mixup is None else Mixup(
            **mixup, label_smoothing=label_smoothing, num_classes=num_classes)
        self.random_erasing = None if random_erasing is None else RandomErasing(
            **random_erasing, device='cpu')

    def forward(self, data: dict, training: bool = False) -> dict:
        data = super().forward(data, training)
        if training:
            data['inputs'] = self.augment(data['inputs'], data['data_samples'])
        return data

    def augment(self, inputs: torch.Tensor, data_samples) -> torch.Tensor:
        """Erase, mix and set each sample's ``gt_score``; returns the augmented batch."""
        if self.random_erasing is not None:
            # timm draws the noise on the device it was built for: follow the batch.
            self.random_erasing.device = inputs.device
            inputs = self.random_erasing(inputs)
        if self.mixup is None and not self.label_smoothing:
            return inputs
        labels = self._labels(data_samples, inputs.device)
        if self.mixup is not None:
            if len(inputs) % 2:
                raise ValueError(f'ClsDataPreprocessor: mixup/cutmix pairs the images of a batch '
                                 f'and needs an even batch size, got {len(inputs)}; use an even '
                                 f'train_dataloader.batch_size with drop_last=True')
            inputs, scores = self.mixup(inputs, labels)
        else:
            scores = mixup_target(labels, self.num_classes, smoothing=self.label_smoothing)
        for sample, score in zip(data_samples, scores):
            sample.gt_score = score
        return inputs

    def _labels(self, data_samples, device) -> torch.Tensor:
        if not data_samples or any('gt_label' not in sample for sample in data_samples):
            raise ValueError('ClsDataPreprocessor: mixup and label smoothing need a gt_label in '
                             'every data sample (a labelled dataset, e.g. ImageFolder with '
                             'with_label=True)')
        labels = torch.cat([sample.gt_label for sample in data_samples]).to(device)
        check_labels(labels, self.num_classes, 'ClsDataPreprocessor')
        return labels


def check_labels(labels: torch.Tensor, num_classes: int, who: str) -> None:
    """Raise a clear error for labels outside ``[0, num_classes)`` (instead of an index error
    deep inside ``scatter``)."""
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f'{who}: labels must lie in [0, {num_classes}), got '
                         f'{sorted(set(labels.tolist()))}; is num_classes right for the dataset?')
