"""Packing a transformed sample into the ``inputs`` / ``data_samples`` pair mmengine models take."""
from typing import Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.structures import BaseDataElement

from fastmim.registry import TRANSFORMS


@TRANSFORMS.register_module()
class PackInputs(BaseTransform):
    """Turn ``results['img']`` (uint8 RGB HWC) into a uint8 CHW tensor plus a data sample.

    The image stays uint8 so that DataLoader workers ship a quarter of the bytes; mmengine's
    ``ImgDataPreprocessor`` (mean/std in 0-255, ``bgr_to_rgb=False``) converts and normalises
    it on the device.

    Returns ``dict(inputs=tensor, data_samples=BaseDataElement)``. The data sample holds
    ``gt_label`` (int64 tensor of shape (1,)) when ``results`` has a ``gt_label``, and the
    ``meta_keys`` found in ``results`` as metainfo.

    Args:
        meta_keys: keys copied into the data sample's metainfo when present.
    """

    def __init__(self,
                 meta_keys: Sequence[str] = ('img_path', 'sample_idx', 'ori_shape', 'img_shape',
                                             'flip', 'flip_direction')):
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        if 'img' not in results:
            hint = (' (LoadImageRGB(lazy=True) needs a RandomResizedCrop to decode the image)'
                    if 'lazy_img' in results else '')
            raise KeyError(f'{type(self).__name__} needs results["img"]{hint}; got keys '
                           f'{sorted(results)}')
        img = results['img']
        if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3
                and img.dtype == np.uint8):
            raise ValueError(f'{type(self).__name__} expects an RGB uint8 (H, W, 3) array in '
                             f'results["img"], got {type(img).__name__} with shape '
                             f'{getattr(img, "shape", None)} and dtype '
                             f'{getattr(img, "dtype", None)}')
        # Copy: the array may be a read-only or non-contiguous view (flips, cached photos).
        inputs = torch.from_numpy(np.array(img.transpose(2, 0, 1), copy=True))

        data_sample = BaseDataElement(
            metainfo={key: results[key] for key in self.meta_keys if key in results})
        if 'gt_label' in results:
            data_sample.gt_label = torch.tensor([int(results['gt_label'])], dtype=torch.int64)
        return dict(inputs=inputs, data_samples=data_sample)

    def __repr__(self):
        return f'{type(self).__name__}(meta_keys={self.meta_keys})'
