"""Packing a transformed sample into the ``inputs`` / ``data_samples`` pair mmengine models take."""
from typing import Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.structures import BaseDataElement

from fastmim.registry import TRANSFORMS

# What ``JpegDecodePreprocessor`` reads to decode a sample that RandomResizedCrop(decode='device')
# left as JPEG bytes: the file (for warnings), its size, the crop box, the output size, the
# filter and the (horizontal) flip. PackInputs packs them for such samples whatever its
# ``meta_keys``.
DEVICE_DECODE_META_KEYS = ('img_path', 'ori_shape', 'crop_bbox', 'img_shape', 'interpolation',
                           'flip')


@TRANSFORMS.register_module()
class PackInputs(BaseTransform):
    """Turn ``results['img']`` (uint8 RGB HWC) into a uint8 CHW tensor plus a data sample.

    The image stays uint8 so that DataLoader workers ship a quarter of the bytes; mmengine's
    ``ImgDataPreprocessor`` (mean/std in 0-255, ``bgr_to_rgb=False``) converts and normalises
    it on the device.

    A sample that ``RandomResizedCrop(decode='device')`` left undecoded (``jpeg_bytes``) is
    packed as its 1-D uint8 tensor of file bytes, with ``DEVICE_DECODE_META_KEYS`` added to the
    metainfo for ``JpegDecodePreprocessor``; mmengine's ``pseudo_collate`` keeps a batch's
    tensors of different lengths as a list.

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
        if 'jpeg_bytes' in results:
            return self._pack(results['jpeg_bytes'], results,
                              self.meta_keys + DEVICE_DECODE_META_KEYS)
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
        return self._pack(inputs, results, self.meta_keys)

    @staticmethod
    def _pack(inputs: torch.Tensor, results: dict, meta_keys: Sequence[str]) -> dict:
        data_sample = BaseDataElement(
            metainfo={key: results[key] for key in meta_keys if key in results})
        if 'gt_label' in results:
            data_sample.gt_label = torch.tensor([int(results['gt_label'])], dtype=torch.int64)
        return dict(inputs=inputs, data_samples=data_sample)

    def __repr__(self):
        return f'{type(self).__name__}(meta_keys={self.meta_keys})'
