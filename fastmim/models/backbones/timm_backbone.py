"""Any timm model as a backbone, through timm's ``features_only`` interface.

ResNet, ConvNeXt and the other timm families become FastMIM backbones without code: timm
extracts the stage outputs, this class only returns them as NCHW tuples and reports their
channels and strides. Position-embedding models are better served by the dedicated classes
(``VisionTransformer``, ``SwinTransformer``), which adapt to new input sizes.
"""
import os.path as osp
from typing import Dict, Optional, Sequence, Tuple, Union

import timm
import torch
from mmengine.model import BaseModule

from fastmim.registry import MODELS


@MODELS.register_module()
class TimmBackbone(BaseModule):
    """Feature maps of ``timm.create_model(model_name, features_only=True, ...)``.

    Args:
        model_name: any name ``timm.list_models()`` knows, e.g. ``'resnet50'``.
        pretrained: load timm's published weights (needs the Hugging Face hub or its cache).
        out_indices: indices into the model's ``feature_info`` (negative values count from the
            end); e.g. ResNet-50 has strides 2, 4, 8, 16, 32 at indices 0-4.
        checkpoint_path: local weights of the full timm model (a classifier checkpoint);
            loaded by timm's pretrained path, so its ``checkpoint_filter_fn`` converts foreign
            formats and the classifier is dropped. Loaded with ``weights_only=True``.
        init_cfg: mmengine init config.
        **kwargs: passed to ``timm.create_model`` (``drop_path_rate``, ``img_size``, ...).
    """

    def __init__(self,
                 model_name: str,
                 pretrained: bool = False,
                 out_indices: Sequence[int] = (-1, ),
                 checkpoint_path: Optional[str] = None,
                 init_cfg: Optional[Union[dict, list]] = None,
                 **kwargs) -> None:
        super().__init__(init_cfg)
        create_kwargs = dict(features_only=True, out_indices=tuple(out_indices), **kwargs)
        if checkpoint_path is not None:
            if pretrained:
                raise ValueError(f'TimmBackbone({model_name!r}): give either pretrained=True or '
                                 f'checkpoint_path, not both')
            if not osp.isfile(checkpoint_path):
                raise FileNotFoundError(f'TimmBackbone({model_name!r}): checkpoint_path '
                                        f'{checkpoint_path!r} is not a file')
            create_kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=checkpoint_path))
        else:
            create_kwargs['pretrained'] = pretrained
        self.model = timm.create_model(model_name, **create_kwargs)

        self.model_name = model_name
        self.img_size = kwargs.get('img_size')
        self.out_indices = list(self.model.feature_info.out_indices)
        self.out_channels = list(self.model.feature_info.channels())
        self.out_strides = list(self.model.feature_info.reduction())
        # A few families (Swin, ...) return channels-last maps; the contract is NCHW.
        self.channels_last = str(getattr(self.model, 'output_fmt', 'NCHW')).endswith('NHWC')

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        features = self.model(x)
        if self.channels_last:
            features = [feature.permute(0, 3, 1, 2).contiguous() for feature in features]
        return tuple(features)

    def geometry(self) -> Dict:
        """Plain-type description stored in pre-training checkpoints (``meta['geometry']``)."""
        geometry = dict(
            type='TimmBackbone',
            model_name=self.model_name,
            out_indices=list(self.out_indices),
            out_strides=list(self.out_strides))
        if self.img_size is not None:
            geometry['img_size'] = (
                self.img_size if isinstance(self.img_size, int) else list(self.img_size))
        return geometry
