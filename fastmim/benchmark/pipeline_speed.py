"""Data-pipeline speed on real JPEG files: draft (reduced-scale) decoding against full decoding.

FastMIM needs 128-px crops, so decoding every JPEG at full size wastes most of the decoder's
work; ``LoadImageRGB(lazy=True)`` lets ``RandomResizedCrop`` ask libjpeg for a 1/2, 1/4 or 1/8
scale decode instead. This module writes the embedded real photos to JPEG files of a chosen size
and times the pre-training pipeline of a config on them, per worker (one process, one thread).
"""
import copy
import os
import os.path as osp
import time
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image

# (name, LoadImageRGB's lazy, RandomResizedCrop's reducing_gap or None for the config's).
# The third variant shows how much a looser gap would buy: with the default gap of 2 a crop
# must be >= 512 px before even the 1/2 decode is allowed.
PIPELINE_VARIANTS = (
    ('full decode', False, None),
    ('draft decode', True, None),
    ('draft decode, reducing_gap=1', True, 1.0),
)


def write_jpeg_photos(folder: str, long_side: int, limit: Optional[int] = None,
                      quality: int = 90) -> List[str]:
    """Write the embedded real photos as JPEG files whose longer side is ``long_side`` px.

    Photos are resized with a bicubic filter (up or down); grayscale ones become RGB as the
    loader would make them. Returns the file paths.
    """
    from fastmim.datasets import find_embedded_photos
    from fastmim.datasets.transforms.loading import read_rgb_image

    photos = find_embedded_photos()[:limit]
    paths = []
    for name, source in photos:
        image = Image.fromarray(read_rgb_image(source)[0])
        scale = long_side / max(image.size)
        size = tuple(max(1, round(side * scale)) for side in image.size)
        path = osp.join(folder, name.replace('/', '_') + '.jpg')
        image.resize(size, Image.Resampling.BICUBIC).save(path, quality=quality)
        paths.append(path)
    return paths


def variant_pipeline(train_pipeline: Sequence[dict], lazy: bool,
                     reducing_gap: Optional[float]) -> List[dict]:
    """The config's pipeline with ``LoadImageRGB``'s ``lazy`` (and optionally the crop's
    ``reducing_gap``) set; refuses pipelines that do not load files with ``LoadImageRGB``."""
    pipeline = copy.deepcopy(list(train_pipeline))
    types = [step.get('type') for step in pipeline]
    if 'LoadImageRGB' not in types or 'RandomResizedCrop' not in types:
        raise ValueError(f'the data-pipeline benchmark needs LoadImageRGB and RandomResizedCrop '
                         f'in train_pipeline, got {types}')
    for step in pipeline:
        if step['type'] == 'LoadImageRGB':
            step['lazy'] = lazy
        if step['type'] == 'RandomResizedCrop' and reducing_gap is not None:
            step['reducing_gap'] = reducing_gap
    return pipeline


def time_pipeline(pipeline: Sequence[dict], paths: Sequence[str], samples: int,
                  seed: int = 0) -> float:
    """Images per second of ``pipeline`` over ``samples`` files (cycling ``paths``), after one
    untimed pass that brings the files into the page cache."""
    from fastmim.datasets.utils import build_pipeline

    transforms = build_pipeline(pipeline)

    def run(path):
        results = dict(img_path=path)
        for transform in transforms:
            results = transform(results)
        if results is None:
            raise ValueError(f'the pipeline skipped {path} as unreadable')

    for path in paths:
        run(path)
    np.random.seed(seed)
    start = time.perf_counter()
    for index in range(samples):
        run(paths[index % len(paths)])
    return samples / (time.perf_counter() - start)


def benchmark_data_pipeline(train_pipeline: Sequence[dict], folder: str,
                            image_sizes: Sequence[int], samples: int,
                            photo_limit: Optional[int] = None) -> List[dict]:
    """One record per (JPEG size, pipeline variant): images/s of one worker, and the speed-up
    over full decoding of the same files."""
    records = []
    for long_side in image_sizes:
        size_folder = osp.join(folder, f'{long_side}px')
        os.makedirs(size_folder, exist_ok=True)
        paths = write_jpeg_photos(size_folder, long_side, photo_limit)
        speeds = {
            name: time_pipeline(variant_pipeline(train_pipeline, lazy, gap), paths, samples)
            for name, lazy, gap in PIPELINE_VARIANTS
        }
        for name, lazy, gap in PIPELINE_VARIANTS:
            records.append(dict(jpeg_long_side=long_side, variant=name, lazy=lazy,
                                reducing_gap=gap, photos=len(paths), samples=samples,
                                images_per_s=speeds[name],
                                speedup_vs_full_decode=speeds[name] / speeds['full decode']))
    return records
