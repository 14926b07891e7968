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
from fastmim.registry import MODELS, type_class, type_name

# Metainfo a JPEG sample cannot do without; ``flip`` is absent from pipelines that do not flip.
REQUIRED_META_KEYS = tuple(key for key in DEVICE_DECODE_META_KEYS if key != 'flip')


class DeviceDecodeFallbackWarning(UserWarning):
    """The device's JPEG decoder rejected a file, which was then decoded on the CPU."""


@MODELS.register_module()
class JpegDecodePreprocessor(ImgDataPreprocessor):
    """``ImgDataPreprocessor`` that first decodes, on its device, the samples the pipeline left
    as JPEG bytes (``RandomResizedCrop(decode='device')``, see the module docstring).

    The batch (mmengine's ``pseudo_collate``: a list) may mix uint8 ``(3, H, W)`` images the
    workers decoded (other formats, CMYK JPEGs, JPEGs with an EXIF orientation) with 1-D uint8
    tensors of JPEG bytes whose data samples hold ``DEVICE_DECODE_META_KEYS``. Each JPEG comes
    out cropped to ``crop_bbox``, resized to ``img_shape`` with ``interpolation``, flipped when
    ``flip``, as uint8 in the batch's order; then the batch is stacked and normalised at once.
    A batch with no JPEG bytes (or an already stacked tensor) is normalised as by
    ``ImgDataPreprocessor``.

    A file the device decoder rejects is decoded with PIL on the CPU instead, with a
    :class:`DeviceDecodeFallbackWarning` naming it, so that one odd file costs time, not the
    run; when every JPEG of a batch is rejected (nvJPEG not working), one more warning, once
    per preprocessor, says so. A file PIL cannot decode either (corrupt, truncated) is
    replaced by a copy of another image of the batch, with its data sample, and the loader's
    unreadable-image warning: the worker path's loader would fetch another sample, which a
    preprocessor cannot, and a smaller batch would make torch.compile / CUDA graphs recompile
    and leave a DDP rank whose whole batch failed raising while the others hang (a batch with
    no readable image is an error). Only files the decoders reject count as unreadable:
    nvJPEG may decode a truncated JPEG (grey or garbage where data is missing) without error.

    Args:
        mean, std: per-channel statistics on the 0-255 scale (default ImageNet, RGB).
        **kwargs: other ``ImgDataPreprocessor`` arguments (``bgr_to_rgb``, ...).
    """

    def __init__(self,
                 mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD,
                 **kwargs):
        super().__init__(mean=mean, std=std, **kwargs)
        self._warned_device_failing = False

    def forward(self, data: dict, training: bool = False) -> dict:
        inputs = data['inputs']
        if isinstance(inputs, (list, tuple)) and any(item.dim() == 1 for item in inputs):
            images, data_samples = self.decode_jpegs(inputs, data.get('data_samples'))
            data = {**data, 'inputs': self._stack(images), 'data_samples': data_samples}
        return super().forward(data, training)

    def _stack(self, images: List[torch.Tensor]) -> Union[torch.Tensor, List[torch.Tensor]]:
        """The images as one uint8 ``(N, 3, H, W)`` tensor on the device when they share a
        size, so that ``ImgDataPreprocessor`` converts and normalises the batch at once instead
        of image by image (the same arithmetic per pixel, the same result); else the list,
        which it pads to the largest size."""
        if len({tuple(image.shape) for image in images}) > 1:
            return images
        return torch.stack([image.to(self.device, non_blocking=self._non_blocking)
                            for image in images])

    def decode_jpegs(self, inputs: Sequence[torch.Tensor],
                     data_samples: Optional[Sequence[BaseDataElement]]
                     ) -> Tuple[List[torch.Tensor], List[BaseDataElement]]:
        """The batch with each 1-D entry (JPEG bytes) replaced by its uint8 ``(3, h, w)`` crop
        on the device; an unreadable one, and its sample, by a copy of a readable one's, so
        the batch keeps its size."""
        if data_samples is None or len(data_samples) != len(inputs):
            raise ValueError(f'{type(self).__name__}: decoding JPEG bytes needs a data sample per '
                             f'input (from PackInputs), got {len(inputs)} inputs and '
                             f'{None if data_samples is None else len(data_samples)} samples')
        positions = [index for index, item in enumerate(inputs) if item.dim() == 1]
        metas = [self._jpeg_meta(data_samples[index]) for index in positions]
        encoded = [inputs[index] for index in positions]
        images = list(inputs)
        decoded = self._decode_on_device(encoded)
        for index, data, meta, image in zip(positions, encoded, metas, decoded):
            expected = (3, *meta['ori_shape'])
            if isinstance(image, torch.Tensor) and tuple(image.shape) != expected:
                image = ValueError(f'decoded to shape {tuple(image.shape)}, its header says '
                                   f'{expected}')
            if isinstance(image, Exception):
                image = self._decode_on_cpu(data, meta['img_path'], image)
            images[index] = image if isinstance(image, Exception) else crop_resize_flip(image,
                                                                                        meta)
        unreadable = [index for index, image in enumerate(images)
                      if isinstance(image, Exception)]
        kept = [index for index in range(len(images)) if index not in unreadable]
        # PIL read a file the device rejected, as every one of the batch: see the warning.
        if all(isinstance(image, Exception) for image in decoded) and len(unreadable) < len(
                decoded):
            self._warn_device_not_working(decoded)
        if not kept:
            for index in unreadable:
                report_unreadable_image(data_samples[index].img_path, images[index])
            raise RuntimeError(f'{type(self).__name__}: no image of this batch could be decoded '
                               f'(see the unreadable-image warnings above)')
        samples = list(data_samples)
        for number, index in enumerate(unreadable):
            source = kept[number % len(kept)]
            report_unreadable_image(data_samples[index].img_path, images[index],
                                    data_samples[source].metainfo.get('img_path', 'another'))
            images[index], samples[index] = images[source], data_samples[source].clone()
        return images, samples

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
        if self.device.type == 'cuda':
            # torchvision's CUDA decode_jpeg allocates its outputs on the caller's stream but
            # writes them from its own stream without waiting on ours, so it can overwrite
            # memory that kernels still queued on our stream read: reported with a
            # deterministic repro in pytorch/vision#9606 (closed unmerged), fixed the same way
            # in torchcodec's nvJPEG decoder (meta-pytorch/torchcodec#1634). Not reproduced
            # here; a precaution that costs one host sync per batch.
            torch.cuda.current_stream(self.device).synchronize()
        try:
            return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError:
            return [self._decode_one_on_device(data) for data in encoded]

    def _warn_device_not_working(self, errors: List[Exception]) -> None:
        """Once per preprocessor: the device rejected every JPEG of a batch, PIL read some, so
        the device decoder likely does not work at all (nvJPEG missing or broken), and the run
        is decoding everything with PIL in the training process, with only per-file
        warnings."""
        if self._warned_device_failing:
            return
        self._warned_device_failing = True
        warnings.warn(f'{type(self).__name__}: JPEG decoding on {self.device} is not working: '
                      f'it rejected all {len(errors)} JPEGs of a batch (first error: '
                      f'{errors[0]}); the run is decoding them with PIL in the training '
                      f'process, which is slow. This warning is not repeated',
                      DeviceDecodeFallbackWarning, stacklevel=4)

    def _decode_one_on_device(self, data: torch.Tensor) -> Union[torch.Tensor, RuntimeError]:
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as error:
            return error

    def _decode_on_cpu(self, data: torch.Tensor, path: str,
                       device_error: Exception) -> Union[torch.Tensor, Exception]:
        """PIL's decode of a file the device rejected, on the device; PIL's error when it
        cannot decode it either (reported by the caller, which picks the replacement)."""
        try:
            pixels = read_rgb_image(io.BytesIO(data.numpy()))
        except UNREADABLE_IMAGE_ERRORS as error:
            return error
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
    # Only RandomHorizontalFlip can follow the crop (check_device_decoding; mmcv's RandomFlip
    # needs ``img``), so a recorded flip is horizontal.
    return resized.flip(-1) if meta.get('flip', False) else resized


def check_device_decoding(cfg) -> None:
    """Refuse a config whose pipeline leaves JPEGs undecoded (``decode='device'``) for a model
    whose data preprocessor cannot decode them, loads images without ``lazy=True`` (the worker
    would then decode everything, silently), or follows the crop with a step other than
    ``RandomHorizontalFlip`` and ``PackInputs`` (any other needs the decoded ``img``).

    These would otherwise fail at the first batch, in a worker, with errors that do not say
    what is wrong (``ImgDataPreprocessor``'s shape assertion, a missing ``'img'``), or not fail
    at all. tools/train.py calls this before building the Runner.
    """
    decoding = []
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        pipelines = list(_device_decoding_pipelines(cfg.get(name)))
        if pipelines:
            decoding.append(name)
        for pipeline in pipelines:
            _check_device_pipeline(name, pipeline)
    if not decoding:
        return
    preprocessor = (cfg.get('model') or {}).get('data_preprocessor') or {}
    kind = preprocessor.get('type')
    cls = type_class(kind, MODELS)
    if cls is None or not issubclass(cls, JpegDecodePreprocessor):
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


def _check_device_pipeline(name: str, pipeline) -> None:
    """See :func:`check_device_decoding`."""
    crop = next(index for index, step in enumerate(pipeline)
                if isinstance(step, dict) and step.get('decode') == 'device')
    for step in pipeline[:crop]:
        if type_name(step) == 'LoadImageRGB' and not step.get('lazy', False):
            raise ValueError(f"{name}: RandomResizedCrop(decode='device') after "
                             f"LoadImageRGB(lazy=False) gets decoded images, so the workers "
                             f"would decode everything; load with "
                             f"dict(type='LoadImageRGB', lazy=True)")
    for step in pipeline[crop + 1:]:
        kind = type_name(step)
        if kind not in ('RandomHorizontalFlip', 'PackInputs'):
            hint = (" (flip with dict(type='RandomHorizontalFlip', prob=...) instead of mmcv's "
                    "RandomFlip)" if kind == 'RandomFlip' else '')
            raise ValueError(f"{name}: {kind} needs a decoded image, which "
                             f"RandomResizedCrop(decode='device') leaves to the model; only "
                             f"RandomHorizontalFlip and PackInputs may follow it{hint}")
