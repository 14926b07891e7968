"""Dense-task data from real images: canvases of several Fashion-MNIST items, with the
segmentation that the items' own pixels define.

Each canvas is ``canvas_size`` px square (64 by default: a patch-4 ViT sees 16x16 tokens, and
the 28-px items keep about the scale the 32-px pre-training saw them at), black, with
``items_per_canvas`` items pasted at random positions in turn. An item's mask is its own pixels
brighter than ``threshold`` (Fashion-MNIST items lie on a black background); a later item
occludes earlier ones where its mask is, so the semantic map and every instance mask follow the
visible pixels. A placement that would leave an earlier item less than ``1 - max_occlusion`` of
its pixels is redrawn (a few tries, else the item is left out), so every instance stays
recognisable.

Labels: 0 is the background and ``1 + c`` Fashion-MNIST class ``c`` (11 classes). The background
is a class, not 'ignore', so the task is to find the items as well as to name them; mIoU
averages over classes, so the background (about 3/4 of the pixels) does not dominate it.

Split isolation: training canvases draw items from the 60,000 training images only, test
canvases from the 10,000 test images only; each split's items are drawn without replacement
(a fresh permutation once the split is used up). Everything is deterministic given the seed.

:func:`write_canvas_segmentation` writes both splits in the ADE20K layout that mmseg's own
``BaseSegDataset`` reads (``reduce_zero_label=False``: 0 is a class here, not ADE20K's 'other').
"""
import json
import os
import os.path as osp
import shutil
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from fastmim.fileio import AtomicLocalBackend

from .fashion_mnist import CLASSES, fetch_fashion_mnist, load_split

CANVAS_CLASSES = ('background', ) + CLASSES
# ADE20K's layout: images/<folder>/NAME.png with annotations/<folder>/NAME.png.
SPLIT_FOLDERS = {'train': 'training', 'test': 'validation'}
# Different random streams for the two splits of one seed.
SPLIT_STREAMS = {'train': 0, 'test': 1}


@dataclass
class Canvas:
    """One composed canvas.

    Attributes:
        image: ``(S, S)`` uint8 gray canvas.
        semantic: ``(S, S)`` uint8: 0 background, ``1 + c`` for Fashion-MNIST class ``c``.
        masks: ``(n, S, S)`` bool, the visible pixels of each pasted item, in paint order.
        labels: ``(n, )`` the items' Fashion-MNIST classes (0-9).
        item_indices: ``(n, )`` the items' indices in their split's idx file.
        origins: ``(n, 2)`` the canvas row and column of each item's top-left pixel.
    """
    image: np.ndarray
    semantic: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    item_indices: np.ndarray
    origins: np.ndarray


def compose_canvases(images: np.ndarray,
                     labels: np.ndarray,
                     num_canvases: int,
                     seed: Union[int, Sequence[int]],
                     canvas_size: int = 64,
                     items_per_canvas: Tuple[int, int] = (2, 4),
                     threshold: int = 8,
                     max_occlusion: float = 0.5,
                     tries: int = 20) -> List[Canvas]:
    """``num_canvases`` canvases of items drawn from ``images`` ``(N, h, w)`` uint8 /
    ``labels`` (see the module docstring); ``items_per_canvas`` is the inclusive range of items
    tried per canvas; ``seed`` is anything ``np.random.default_rng`` takes."""
    size = images.shape[1]
    if canvas_size < size:
        raise ValueError(f'compose_canvases: canvas_size {canvas_size} is smaller than the '
                         f'{size}-px items')
    low, high = items_per_canvas
    if not 1 <= low <= high:
        raise ValueError(f'compose_canvases: items_per_canvas must be (low, high) with '
                         f'1 <= low <= high, got {items_per_canvas}')
    rng = np.random.default_rng(seed)
    order, taken = rng.permutation(len(images)), 0
    canvases = []
    for _ in range(num_canvases):
        image = np.zeros((canvas_size, canvas_size), dtype=np.uint8)
        masks, sizes, classes, indices, origins = [], [], [], [], []
        for _ in range(int(rng.integers(low, high + 1))):
            if taken == len(order):
                order, taken = rng.permutation(len(images)), 0
            index = int(order[taken])
            taken += 1
            item = images[index]
            own = item > threshold
            found = _place(own, masks, sizes, canvas_size, max_occlusion, tries, rng)
            if found is None:
                continue
            placed, origin = found
            for mask in masks:
                mask &= ~placed
            image[placed] = item[own]
            masks.append(placed)
            sizes.append(int(own.sum()))
            classes.append(int(labels[index]))
            indices.append(index)
            origins.append(origin)
        semantic = np.zeros_like(image)
        for mask, label in zip(masks, classes):
            semantic[mask] = 1 + label
        canvases.append(Canvas(
            image, semantic,
            np.stack(masks) if masks else np.zeros((0, canvas_size, canvas_size), bool),
            np.array(classes, dtype=np.int64), np.array(indices, dtype=np.int64),
            np.array(origins, dtype=np.int64).reshape(-1, 2)))
    return canvases


def _place(own: np.ndarray, masks: List[np.ndarray], sizes: List[int], canvas_size: int,
           max_occlusion: float, tries: int,
           rng: np.random.Generator) -> Optional[Tuple[np.ndarray, Tuple[int, int]]]:
    """The canvas-sized mask of ``own`` at a random position that leaves every earlier item
    (visible ``masks``, ``sizes`` pixels of its own) at least ``1 - max_occlusion`` of its own
    pixels, and that position (row, column); ``None`` after ``tries`` failures."""
    height, width = own.shape
    for _ in range(tries):
        top = int(rng.integers(0, canvas_size - height + 1))
        left = int(rng.integers(0, canvas_size - width + 1))
        placed = np.zeros((canvas_size, canvas_size), dtype=bool)
        placed[top:top + height, left:left + width] = own
        if all((mask & ~placed).sum() >= (1 - max_occlusion) * size
               for mask, size in zip(masks, sizes)):
            return placed, (top, left)
    return None


def split_canvases(split: str, num_canvases: int, seed: int, data_root: Optional[str] = None,
                   **kwargs) -> List[Canvas]:
    """Canvases of one Fashion-MNIST split (``'train'``: items from the 60,000 training
    images; ``'test'``: from the 10,000 test images), reading the files from ``data_root`` or
    fetching them (:func:`fetch_fashion_mnist`)."""
    images, labels = load_split(data_root or fetch_fashion_mnist(), split)
    return compose_canvases(images, labels, num_canvases, seed=(seed, SPLIT_STREAMS[split]),
                            **kwargs)


def write_canvas_segmentation(root: str,
                              num_train: int,
                              num_test: int,
                              seed: int = 0,
                              data_root: Optional[str] = None,
                              **kwargs) -> Dict[str, object]:
    """Write ``num_train`` training and ``num_test`` test canvases under ``root`` in the
    ADE20K layout (``images/{training,validation}/NNNNNN.png``, gray; ``annotations/...png``,
    class ids 0-10) and ``root/canvases.json`` with the arguments and per-split counts.

    A ``root`` whose ``canvases.json`` records the same arguments is kept as it is, so runners
    can call this every time; otherwise (other arguments, or a record that does not parse)
    its ``images`` and ``annotations`` are rewritten. The record is written last and
    atomically, so a rewrite cut off at any point is redone by the next call.
    """
    settings = dict(num_train=num_train, num_test=num_test, seed=seed, **kwargs)
    record = osp.join(root, 'canvases.json')
    written = _read_record(record)
    if written is not None and written.get('settings') == settings:
        return written
    if osp.lexists(record):
        os.remove(record)  # an interrupted rewrite must not pass for finished
    for kind in ('images', 'annotations'):  # no stale canvases of other settings
        shutil.rmtree(osp.join(root, kind), ignore_errors=True)
    counts = {}
    for split, number in (('train', num_train), ('test', num_test)):
        folder = SPLIT_FOLDERS[split]
        for kind in ('images', 'annotations'):
            os.makedirs(osp.join(root, kind, folder), exist_ok=True)
        canvases = split_canvases(split, number, seed, data_root, **kwargs)
        for index, canvas in enumerate(canvases):
            name = f'{index:06d}.png'
            Image.fromarray(canvas.image).save(osp.join(root, 'images', folder, name))
            Image.fromarray(canvas.semantic).save(osp.join(root, 'annotations', folder, name))
        counts[split] = dict(
            canvases=len(canvases), items=int(sum(len(c.labels) for c in canvases)),
            pixels_per_class=np.bincount(
                np.concatenate([c.semantic.ravel() for c in canvases]),
                minlength=len(CANVAS_CLASSES)).tolist())
    written = dict(settings=settings, classes=list(CANVAS_CLASSES), counts=counts)
    AtomicLocalBackend().put_text(json.dumps(written, indent=1), record)
    return written


def _read_record(record: str) -> Optional[dict]:
    """The ``canvases.json`` at ``record``, or ``None`` where there is none or it does not
    parse as a JSON object (a file cut short by an older, non-atomic writer, or edited by
    hand): the canvases are a cache, so such a record only means 'write them again'."""
    try:
        with open(record) as f:
            written = json.load(f)
    except (FileNotFoundError, ValueError):  # ValueError: JSON or UTF-8 that does not decode
        return None
    return written if isinstance(written, dict) else None
