"""Image classification on top of any fastmim backbone: fine-tuning and linear probing.

``loss()`` reads top to bottom: the data preprocessor has already normalised, erased and
mixed the batch and stored each image's target distribution (``gt_score``); the backbone's last
map is average-pooled to one vector per image (``out_type='cls_token'`` ViTs give the class token
directly) and the head scores it against the targets. A head with layers before its own pooling
(``takes_feature_map``, e.g. CMT's ``ConvPoolClsHead``) gets the map instead.

With ``frozen_backbone=True`` (linear probing) the backbone has no gradients and stays in eval
mode whatever ``train()`` is called with, so its BatchNorm statistics, dropout and drop-path are
those of evaluation while the head trains.
"""
import copy
from typing import List, Optional

import torch
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement

from fastmim.registry import MODELS
from ..data_preprocessors import ClsDataPreprocessor, check_labels
from ..utils.checkpoint_meta import recorded_input_size


def pool_features(features: torch.Tensor) -> torch.Tensor:
    """One vector per image: global average over an NCHW map, or an already pooled (B, C)."""
    if features.dim() == 4:
        return features.mean(dim=(2, 3))
    if features.dim() == 2:
        return features
    raise ValueError(f'ImageClassifier: the backbone output must be (B, C, H, W) or (B, C), got '
                     f'shape {tuple(features.shape)}')


def attach_predictions(scores: torch.Tensor,
                       data_samples: Optional[List[BaseDataElement]]) -> List[BaseDataElement]:
    """Data samples with ``pred_score`` (one row of ``scores``) and ``pred_label`` (its argmax,
    shape (1,)); given samples are updated in place, keeping their ``gt_label``."""
    if data_samples is None:
        data_samples = [BaseDataElement() for _ in range(len(scores))]
    for sample, score in zip(data_samples, scores):
        sample.pred_score = score
        sample.pred_label = score.argmax(dim=0, keepdim=True)
    return data_samples


def build_data_preprocessor(cfg: Optional[dict], num_classes: int):
    """``ClsDataPreprocessor`` by default; the head's ``num_classes`` is given to it (or to a
    subclass) unless the config states it; other preprocessor types are built unchanged."""
    cfg = copy.deepcopy(cfg) if cfg is not None else dict(type='ClsDataPreprocessor')
    preprocessor_type = cfg.get('type')
    if isinstance(preprocessor_type, str):
        preprocessor_type = MODELS.get(preprocessor_type)
    if isinstance(preprocessor_type, type) and issubclass(preprocessor_type, ClsDataPreprocessor):
        cfg.setdefault('num_classes', num_classes)
    return MODELS.build(cfg)


@MODELS.register_module()
class ImageClassifier(BaseModel):
    """Backbone -> global average pool -> ``head`` (fc_norm + linear), or backbone -> ``head``
    for a head that pools the map itself (``takes_feature_map``).

    Args:
        backbone (dict): config of a fastmim backbone (tuple of NCHW maps, ``out_channels``);
            its ``init_cfg`` loads the pre-trained weights, e.g.
            ``dict(type='FastMIMPretrained', checkpoint=..., prefix='backbone.')``.
        head (dict): config of the head, e.g. ``dict(type='LinearClsHead', num_classes=1000,
            pre_norm='ln')``; ``in_channels`` defaults to the backbone's last ``out_channels``.
        frozen_backbone (bool): linear probing: no gradients, backbone always in eval mode.
        data_preprocessor (dict, optional): defaults to ``ClsDataPreprocessor`` (ImageNet
            normalisation, no augmentation); the head's ``num_classes`` is passed to it.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 backbone: dict,
                 head: dict,
                 frozen_backbone: bool = False,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        if 'num_classes' not in head:
            raise ValueError(f'ImageClassifier: the head config needs num_classes, got {head}')
        super().__init__(
            data_preprocessor=build_data_preprocessor(data_preprocessor, head['num_classes']),
            init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        head = copy.deepcopy(head)
        head.setdefault('in_channels', self.backbone.out_channels[-1])
        self.head = MODELS.build(head)
        self.num_classes = self.head.num_classes
        self.frozen_backbone = frozen_backbone
        if frozen_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        self._last_input_size = None

    def train(self, mode: bool = True):
        """Switch train/eval mode, keeping a frozen backbone in eval mode."""
        super().train(mode)
        if self.frozen_backbone:
            self.backbone.eval()
        return self

    # --- the steps ---------------------------------------------------------------------------
    def extract_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        """What the head takes of normalised images (no graph through a frozen backbone): pooled
        features ``(B, C)``, or the last map for a head that pools it itself."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_backbone):
            features = self.backbone(inputs)[-1]
        if getattr(self.head, 'takes_feature_map', False):
            return features
        return pool_features(features)

    def targets(self, data_samples: List[BaseDataElement], device) -> torch.Tensor:
        """Target distributions ``(B, num_classes)``: each sample's ``gt_score`` (mixup, label
        smoothing) when the preprocessor set one, else the one-hot of ``gt_label``."""
        if data_samples and all('gt_score' in sample for sample in data_samples):
            return torch.stack([sample.gt_score for sample in data_samples]).to(device)
        if not data_samples or any('gt_label' not in sample for sample in data_samples):
            raise ValueError('ImageClassifier: training needs a gt_label in every data sample (a '
                             'labelled dataset, e.g. ImageFolder with with_label=True)')
        labels = torch.cat([sample.gt_label for sample in data_samples]).to(device)
        check_labels(labels, self.num_classes, 'ImageClassifier')
        return torch.nn.functional.one_hot(labels, self.num_classes).float()

    def loss(self, inputs: torch.Tensor, data_samples: List[BaseDataElement]) -> dict:
        """``dict(loss=...)``: soft-target cross-entropy of the head's logits."""
        features = self.extract_feat(inputs)
        return self.head.loss(features, self.targets(data_samples, inputs.device))

    def predict(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[BaseDataElement]] = None) -> List[BaseDataElement]:
        """Data samples with ``pred_score`` (class probabilities) and ``pred_label`` (shape
        (1,)); the given samples are updated in place, keeping their ``gt_label``."""
        return attach_predictions(self.head.predict(self.extract_feat(inputs)).detach(),
                                  data_samples)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        """mmengine's three modes: ``'loss'`` -> ``dict(loss=...)``, ``'predict'`` -> data
        samples with predictions, ``'tensor'`` -> logits ``(B, num_classes)``."""
        if inputs.dim() != 4:
            raise ValueError(f'ImageClassifier expects images (B, C, H, W), got shape '
                             f'{tuple(inputs.shape)}')
        self._last_input_size = list(inputs.shape[-2:])
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.head(self.extract_feat(inputs))
        raise ValueError(f"mode must be 'loss', 'tensor' or 'predict', got {mode!r}")

    def geometry(self) -> dict:
        """Plain-type description stored in checkpoint meta, so that a fine-tuned checkpoint
        initialises downstream backbones (detection, segmentation) with the right resizing."""
        backbone_geometry = self.backbone.geometry()
        return dict(
            backbone=backbone_geometry,
            input_size=recorded_input_size(self._last_input_size, backbone_geometry),
            num_classes=self.num_classes)
