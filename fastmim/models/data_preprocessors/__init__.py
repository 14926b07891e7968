"""Data preprocessors: what turns a loader's batch into the model's input, on the model's
device. ``ClsDataPreprocessor`` normalises and, in fine-tuning, erases and mixes the batch;
``JpegDecodePreprocessor`` first decodes the JPEG bytes the workers left undecoded."""
from .classification import ClsDataPreprocessor, check_labels
from .jpeg_decoding import (DeviceDecodeFallbackWarning, JpegDecodePreprocessor,
                            check_device_decoding)

__all__ = [
    'ClsDataPreprocessor', 'DeviceDecodeFallbackWarning', 'JpegDecodePreprocessor',
    'check_device_decoding', 'check_labels'
]
