"""JPEG decoding on the model's device (nvJPEG on a GPU), as a data preprocessor.

Pre-training at 128 px asks a DataLoader worker for little besides decoding: on ImageNet-sized
JPEGs the Huffman decoding and inverse DCT are most of a crop's cost, even at the reduced scale
``RandomResizedCrop`` decodes at. Where a node's CPU cores cannot decode as fast as its GPU
trains, ``RandomResizedCrop(decode='device')`` leaves the decoding to the device: the workers
only read each file, parse its header and draw the crop box, and ship the file's bytes.
:class:`JpegDecodePreprocessor` decodes a batch of them in one ``torchvision.io.decode_jpeg``
call on its device (batched nvJPEG on CUDA), crops, resizes and flips each image there, and
normalises the batch as ``ImgDataPreprocessor`` does.

What comes out is what the worker would have made, up to the decoders: the drawn box at full
resolution (the worker decodes at 1/2-1/8 scale where the box allows, the device never), resized
by :func:`~fastmim.datasets.transforms.processing.resize_box_tensor` with the pipeline's filter.
"""
import io
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import ImgDataPreprocessor
from mmengine.structures import BaseDataElement
from torchvision.io import ImageReadMode, decode_jpeg

from fastmim.constants import IMAGENET_MEAN, IMAGENET_STD
from fastmim.datasets.transforms.formatting import DEVICE_DECODE_META_KEYS
from fastmim.datasets.transforms.loading import (UNREADABLE_IMAGE_ERRORS, read_rgb_image,
                                                 report_unreadable_image)
from fastmim.datasets.transforms.processing import resize_box_tensor
from fastmim.registry import MODELS

# Metainfo a JPEG sample cannot do without; ``flip`` and ``flip_direction`` are absent from
# pipelines that do not flip.
REQUIRED_META_KEYS = tuple(key for key in DEVICE_DECODE_META_KEYS
                           if key not in ('flip', 'flip_direction'))


class DeviceDecodeFallbackWarning(UserWarning):
    """The device's JPEG decoder rejected a file, which was then decoded on the CPU."""


@MODELS.register_module()
class JpegDecodePreprocessor(ImgDataPreprocessor):
    """``ImgDataPreprocessor`` that first decodes, on its device, the samples the pipeline left
    as JPEG bytes (``RandomResizedCrop(decode='device')``, see the module docstring).

    The batch (mmengine's ``pseudo_collate``: a list) may mix uint8 ``(3, H, W)`` images the
    workers decoded (other formats, CMYK JPEGs) with 1-D uint8 tensors of JPEG bytes whose data
    samples hold ``DEVICE_DECODE_META_KEYS``. Each JPEG comes out cropped to ``crop_bbox``,
    resized to ``img_shape`` with ``interpolation``, flipped when ``flip``, as uint8 in the
    batch's order; then the whole batch is normalised and stacked. A batch with no JPEG bytes
    (or an already stacked tensor) is normalised as by ``ImgDataPreprocessor``.

    A file the device decoder rejects is decoded with PIL on the CPU instead, with a
    :class:`DeviceDecodeFallbackWarning` naming it, so that one odd file costs time, not the
    run. A file PIL cannot decode either (corrupt, truncated) is dropped with the loader's
    unreadable-image warning: the batch is one image smaller, as the worker path's loader
    would fetch another sample but a preprocessor cannot (a batch with no image left is an
    error).

    Args:
        mean, std: per-channel statistics on the 0-255 scale (default ImageNet, RGB).
        **kwargs: other ``ImgDataPreprocessor`` arguments (``bgr_to_rgb``, ...).
    """

    def __init__(self,
                 mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD,
                 **kwargs):
        super().__init__(mean=mean, std=std, **kwargs)

    def forward(self, data: dict, training: bool = False) -> dict:
        inputs = data['inputs']
        if isinstance(inputs, (list, tuple)) and any(item.dim() == 1 for item in inputs):
            inputs, data_samples = self.decode_jpegs(inputs, data.get('data_samples'))
            data = {**data, 'inputs': inputs, 'data_samples': data_samples}
        return super().forward(data, training)

    def decode_jpegs(self, inputs: Sequence[torch.Tensor],
                     data_samples: Optional[Sequence[BaseDataElement]]
                     ) -> Tuple[List[torch.Tensor], List[BaseDataElement]]:
        """The batch with each 1-D entry (JPEG bytes) replaced by its uint8 ``(3, h, w)`` crop
        on the device, and the unreadable ones left out of both lists."""
        if data_samples is None or len(data_samples) != len(inputs):
            raise ValueError(f'{type(self).__name__}: decoding JPEG bytes needs a data sample per '
                             f'input (from PackInputs), got {len(inputs)} inputs and '
                             f'{None if data_samples is None else len(data_samples)} samples')
        positions = [index for index, item in enumerate(inputs) if item.dim() == 1]
        metas = [self._jpeg_meta(data_samples[index]) for index in positions]
        encoded = [inputs[index] for index in positions]
        images = list(inputs)
        for index, data, meta, image in zip(positions, encoded, metas,
                                            self._decode_on_device(encoded)):
            expected = (3, *meta['ori_shape'])
            if isinstance(image, torch.Tensor) and tuple(image.shape) != expected:
                image = ValueError(f'decoded to shape {tuple(image.shape)}, its header says '
                                   f'{expected}')
            if isinstance(image, Exception):
                image = self._decode_on_cpu(data, meta['img_path'], image)
            images[index] = None if image is None else crop_resize_flip(image, meta)
        kept = [index for index, image in enumerate(images) if image is not None]
        if not kept:
            raise RuntimeError(f'{type(self).__name__}: no image of this batch could be decoded '
                               f'(see the unreadable-image warnings above)')
        return [images[index] for index in kept], [data_samples[index] for index in kept]

    def _jpeg_meta(self, data_sample: BaseDataElement) -> dict:
        meta = data_sample.metainfo
        missing = [key for key in REQUIRED_META_KEYS if key not in meta]
        if missing:
            raise KeyError(f"{type(self).__name__}: a sample given as JPEG bytes needs {missing} "
                           f"in its metainfo (PackInputs adds them after "
                           f"RandomResizedCrop(decode='device')); got {sorted(meta)}")
        return meta

    def _decode_on_device(self, encoded: List[torch.Tensor]
                          ) -> List[Union[torch.Tensor, RuntimeError]]:
        """Decoded ``(3, H, W)`` uint8 images on the device, or the decoder's error per file.

        One call for the batch; a file the decoder rejects fails that call, and the files are
        then decoded one by one to tell which. Running out of device memory is no file's fault
        and is raised.
        """
        try:
            return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError:
            return [self._decode_one_on_device(data) for data in encoded]

    def _decode_one_on_device(self, data: torch.Tensor) -> Union[torch.Tensor, RuntimeError]:
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as error:
            return error

    def _decode_on_cpu(self, data: torch.Tensor, path: str,
                       device_error: Exception) -> Optional[torch.Tensor]:
        """PIL's decode of a file the device rejected, on the device; ``None`` (reported)
        when PIL cannot decode it either."""
        try:
            pixels = read_rgb_image(io.BytesIO(data.numpy()))
        except UNREADABLE_IMAGE_ERRORS as error:
            report_unreadable_image(path, error)
            return None
        warnings.warn(f'{type(self).__name__}: the JPEG decoder on {self.device} rejected {path} '
                      f'({device_error}); decoded it with PIL on the CPU instead',
                      DeviceDecodeFallbackWarning, stacklevel=3)
        # A copy: PIL's array is read-only, which torch.from_numpy warns about.
        return torch.from_numpy(pixels.copy()).permute(2, 0, 1).to(self.device)


def crop_resize_flip(image: torch.Tensor, meta: dict) -> torch.Tensor:
    """``image`` (uint8 ``(3, H, W)``, the whole file) cropped to ``meta['crop_bbox']``, resized
    to ``meta['img_shape']`` and flipped as ``meta`` records: the device's half of
    ``RandomResizedCrop(decode='device')`` and ``RandomHorizontalFlip``."""
    left, top, right, bottom = meta['crop_bbox']
    resized = resize_box_tensor(image[:, top:bottom, left:right], (bottom - top, right - left),
                                tuple(meta['img_shape']), meta['interpolation'])
    if not meta.get('flip', False):
        return resized
    if meta.get('flip_direction') != 'horizontal':
        raise ValueError(f"JpegDecodePreprocessor flips horizontally only (RandomHorizontalFlip); "
                         f"{meta['img_path']} has flip_direction={meta.get('flip_direction')!r}")
    return resized.flip(-1)


def check_device_decoding(cfg) -> None:
    """Refuse a config whose pipeline leaves JPEGs undecoded (``decode='device'``) for a model
    whose data preprocessor cannot decode them, or flips them with mmcv's ``RandomFlip``.

    Both would otherwise fail at the first batch with errors that do not say what is wrong
    (``ImgDataPreprocessor``'s shape assertion, mmcv's missing ``'img'``). tools/train.py calls
    this before building the Runner.
    """
    decoding = []
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        pipelines = list(_device_decoding_pipelines(cfg.get(name)))
        if pipelines:
            decoding.append(name)
        for pipeline in pipelines:
            if any(isinstance(step, dict) and str(step.get('type')).split('.')[-1] == 'RandomFlip'
                   for step in pipeline):
                raise ValueError(f"{name}: mmcv's RandomFlip needs a decoded image, which "
                                 f"RandomResizedCrop(decode='device') leaves to the model; flip "
                                 f"with dict(type='RandomHorizontalFlip', prob=...) instead")
    if not decoding:
        return
    preprocessor = (cfg.get('model') or {}).get('data_preprocessor') or {}
    kind = preprocessor.get('type')
    cls = kind if isinstance(kind, type) else MODELS.get(kind) if kind else None
    if not (isinstance(cls, type) and issubclass(cls, JpegDecodePreprocessor)):
        raise ValueError(f"{', '.join(decoding)}: a pipeline decodes JPEGs on the device "
                         f"(RandomResizedCrop(decode='device')), so model.data_preprocessor.type "
                         f"must be 'JpegDecodePreprocessor', got {kind!r}")


def _device_decoding_pipelines(node):
    """The lists under a config node that hold a step with ``decode='device'``."""
    if isinstance(node, dict):
        for value in node.values():
            yield from _device_decoding_pipelines(value)
    elif isinstance(node, (list, tuple)):
        if any(isinstance(step, dict) and step.get('decode') == 'device' for step in node):
            yield node
        for value in node:
            yield from _device_decoding_pipelines(value)
