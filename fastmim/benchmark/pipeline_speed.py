"""Data-pipeline speed on real JPEG files: the pre-training pipeline against a plain full decode.

FastMIM needs 128-px crops, so decoding every JPEG at full size and resizing from there wastes
most of the work. This module writes the embedded real photos to JPEG files of a chosen size and
times, per worker (one process, one torch thread, as in a DataLoader worker), three ways of
producing the same random resized crop:

- ``full decode``: the baseline, what a user writes without this repository and what MAE's and
  FastMIM's reference code run: torchvision's ``pil_loader`` (full decode to RGB), torchvision's
  ``RandomResizedCrop`` (PIL crop + antialiased resize), ``RandomHorizontalFlip`` and
  ``PILToTensor`` (uint8, as the pipeline ships; both normalise on the device);
- ``draft decode``: the config's ``train_pipeline`` with ``LoadImageRGB(lazy=True)``: reduced-
  scale JPEG decoding of the crop, torch resize, flip and ``PackInputs``;
- ``full decode, same transforms``: that pipeline with ``lazy=False``, which separates what the
  reduced decode buys from what the faster resize buys.
"""
import copy
import os
import os.path as osp
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

BASELINE = 'full decode'
# (name, LoadImageRGB's lazy); None marks the torchvision baseline.
PIPELINE_VARIANTS = (
    (BASELINE, None),
    ('draft decode', True),
    ('full decode, same transforms', False),
)
ROUNDS = 5  # the variants take turns, so a busy spell on a shared machine hits them all


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
        image = Image.fromarray(read_rgb_image(source))
        scale = long_side / max(image.size)
        size = tuple(max(1, round(side * scale)) for side in image.size)
        path = osp.join(folder, name.replace('/', '_') + '.jpg')
        image.resize(size, Image.Resampling.BICUBIC).save(path, quality=quality)
        paths.append(path)
    return paths


def config_crop(train_pipeline: Sequence[dict]):
    """The config's ``RandomResizedCrop``, built; refuses pipelines that do not load files with
    ``LoadImageRGB`` and crop with ``RandomResizedCrop``."""
    from fastmim.datasets.transforms import RandomResizedCrop

    types = [step.get('type') for step in train_pipeline]
    if 'LoadImageRGB' not in types or 'RandomResizedCrop' not in types:
        raise ValueError(f'the data-pipeline benchmark needs LoadImageRGB and RandomResizedCrop '
                         f'in train_pipeline, got {types}')
    step = train_pipeline[types.index('RandomResizedCrop')]
    return RandomResizedCrop(**{key: value for key, value in step.items() if key != 'type'})


def variant_pipeline(train_pipeline: Sequence[dict], lazy: bool) -> List[dict]:
    """The config's pipeline with ``LoadImageRGB``'s ``lazy`` set (see :func:`config_crop` for
    the pipelines it accepts)."""
    config_crop(train_pipeline)
    pipeline = copy.deepcopy(list(train_pipeline))
    for step in pipeline:
        if step['type'] == 'LoadImageRGB':
            step['lazy'] = lazy
    return pipeline


def plain_full_decode(train_pipeline: Sequence[dict]) -> Callable[[str], torch.Tensor]:
    """The baseline: torchvision's PIL path with the config's crop size, scale, ratio and filter
    (see the module docstring). Returns ``path -> uint8 CHW tensor``."""
    from torchvision import transforms

    crop = config_crop(train_pipeline)
    transform = transforms.Compose([
        transforms.RandomResizedCrop(
            crop.size, scale=crop.scale, ratio=crop.ratio,
            interpolation=transforms.InterpolationMode(crop.interpolation)),
        transforms.RandomHorizontalFlip(),
        transforms.PILToTensor(),
    ])

    def run(path: str) -> torch.Tensor:
        with open(path, 'rb') as file:
            image = Image.open(file).convert('RGB')
        return transform(image)

    return run


def pipeline_runner(pipeline: Sequence[dict]) -> Callable[[str], dict]:
    """``path -> packed sample`` through the built ``pipeline``."""
    from fastmim.datasets.utils import build_pipeline

    transforms = build_pipeline(pipeline)

    def run(path: str) -> dict:
        results = dict(img_path=path)
        for transform in transforms:
            results = transform(results)
        if results is None:
            raise ValueError(f'the pipeline skipped {path} as unreadable')
        return results

    return run


def time_runners(runners: Dict[str, Callable[[str], object]], paths: Sequence[str],
                 samples: int, rounds: int = ROUNDS, seed: int = 0) -> Dict[str, float]:
    """Images per second of each runner over ``samples`` files (cycling ``paths``), one torch
    thread, after one untimed pass that brings the files into the page cache.

    The samples are split into ``rounds`` in which every runner takes its turn on the same
    files with the same seeds; a runner's speed is the median of its rounds.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what torch's DataLoader sets in each worker
    try:
        for run in runners.values():
            for path in paths:
                run(path)
        per_round = [samples // rounds + (index < samples % rounds) for index in range(rounds)]
        speeds = {name: [] for name in runners}
        start_index = 0
        for round_index, count in enumerate(per_round):
            if count == 0:
                continue
            for name, run in runners.items():
                np.random.seed(seed + round_index)
                torch.manual_seed(seed + round_index)
                start = time.perf_counter()
                for index in range(start_index, start_index + count):
                    run(paths[index % len(paths)])
                speeds[name].append(count / (time.perf_counter() - start))
            start_index += count
    finally:
        torch.set_num_threads(threads)
    return {name: float(np.median(values)) for name, values in speeds.items()}


def benchmark_data_pipeline(train_pipeline: Sequence[dict], folder: str,
                            image_sizes: Sequence[int], samples: int,
                            photo_limit: Optional[int] = None) -> List[dict]:
    """One record per (JPEG size, variant of ``PIPELINE_VARIANTS``): images/s of one worker,
    and the speed-up over the plain full decode of the same files."""
    crop = config_crop(train_pipeline)
    runners = {
        name: plain_full_decode(train_pipeline) if lazy is None else
        pipeline_runner(variant_pipeline(train_pipeline, lazy))
        for name, lazy in PIPELINE_VARIANTS
    }
    records = []
    for long_side in image_sizes:
        size_folder = osp.join(folder, f'{long_side}px')
        os.makedirs(size_folder, exist_ok=True)
        paths = write_jpeg_photos(size_folder, long_side, photo_limit)
        speeds = time_runners(runners, paths, samples)
        for name, lazy in PIPELINE_VARIANTS:
            records.append(dict(jpeg_long_side=long_side, variant=name, lazy=bool(lazy),
                                reducing_gap=crop.reducing_gap if lazy else None,
                                photos=len(paths), samples=samples,
                                images_per_s=speeds[name],
                                speedup_vs_full_decode=speeds[name] / speeds[BASELINE]))
    return records
