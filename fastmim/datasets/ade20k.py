"""mmseg's ADE20K dataset, with every label map checked against its image and the classes.

mmseg lists the images of ``data_prefix['img_path']`` and pairs each with the label map of the
same name without looking for it: a missing label PNG stops training with a
``FileNotFoundError`` in a dataloader worker whenever the sampler reaches it, and a folder with
no image of ``img_suffix`` ends in ``need at least one array to concatenate``. A label PNG of
another size than its image passes mmseg's pipeline (both are resized and cropped alike) and
fails only when the batch is stacked, as ``stack expects each tensor to be equal size``, naming
no file; a label value that is no class and not the ignore index reaches the loss as
``IndexError: Target ... is out of bounds`` (on a GPU, a device-side assert); a label PNG saved
in colour fails at the stacking as well. :class:`CheckedADE20KDataset` names the missing files
when the dataset is built, and checks each map as it is loaded, naming the file.
"""
import os
import os.path as osp
from collections import Counter

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.datasets import ADE20KDataset

from fastmim.registry import DATASETS

from .sample_seeds import SeededSamples
from .utils import check_after_each, examples, is_local


class CheckSegMap(BaseTransform):
    """Right after mmseg's ``LoadAnnotations``: ``gt_seg_map`` has one channel and the size of
    the image as loaded (``ori_shape``; the test pipeline resizes the image before it loads the
    map) and holds only class indices below ``num_classes`` and ``ignore_index``."""

    def __init__(self, num_classes: int, ignore_index: int):
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        seg_map = results['gt_seg_map']
        if seg_map.ndim != 2:
            raise ValueError(
                f"{results['seg_map_path']}: label map of {seg_map.shape[2]} channels; a label "
                'map is a single-channel PNG of class indices (one saved in colour, RGB or '
                'RGBA, needs converting back)')
        image_size = tuple(results['ori_shape'][:2])
        if seg_map.shape[:2] != image_size:
            raise ValueError(
                f"{results['seg_map_path']}: label map of {seg_map.shape[1]}x{seg_map.shape[0]} "
                f"px for an image of {image_size[1]}x{image_size[0]} px "
                f"({results['img_path']}); a label map has its image's size")
        bad = (seg_map >= self.num_classes) & (seg_map != self.ignore_index)
        if bad.any():
            values = np.unique(seg_map[bad])
            raise ValueError(
                f"{results['seg_map_path']}: label values {values[:5].tolist()} are no class "
                f'(0..{self.num_classes - 1} after reduce_zero_label, or {self.ignore_index} '
                'to ignore)')
        return results


@DATASETS.register_module()
class CheckedADE20KDataset(SeededSamples, ADE20KDataset):
    """``ADE20KDataset`` (same arguments) that names an image without its label map, and an
    image folder without images, when it is built, and whose pipeline checks each label map
    right after ``LoadAnnotations`` (:class:`CheckSegMap`). Used as
    ``type='fastmim.CheckedADE20KDataset'`` in mmseg configs. Fetched with the seeded indices of
    ``ResumableInfiniteSampler``, it augments each sample from that sample's seed, so a resumed
    run crops and flips as the uninterrupted one did (``SeededSamples``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check_after_each(self.pipeline, 'LoadAnnotations',
                         CheckSegMap(len(self.metainfo['classes']), self.ignore_index))

    def load_data_list(self):
        data_list = super().load_data_list()
        if not data_list:
            raise ValueError(self._why_no_image())
        self._check_label_maps_exist(data_list)
        return data_list

    def _why_no_image(self) -> str:
        """What the image folder (or list file) holds instead of images of ``img_suffix``."""
        if self.ann_file and not osp.isdir(self.ann_file):
            return f'{self.ann_file}: lists no image'
        folder = self.data_prefix['img_path']
        found = 'an empty folder'
        if is_local(folder, self.backend_args) and osp.isdir(folder):
            suffixes = Counter(osp.splitext(name)[1] or name
                               for _, _, names in os.walk(folder) for name in names)
            if suffixes:
                found = ', '.join(f'{count} {suffix} files'
                                  for suffix, count in suffixes.most_common(3))
        return f'{folder}: no image ending in {self.img_suffix!r} (img_suffix) in it: {found}'

    def _check_label_maps_exist(self, data_list) -> None:
        """Every listed image has its label map (local files; a test set without labels has
        no ``seg_map_path`` to check)."""
        missing = [info for info in data_list if 'seg_map_path' in info
                   and is_local(info['seg_map_path'], self.backend_args)
                   and not osp.isfile(info['seg_map_path'])]
        if missing:
            named = [f"{osp.basename(info['seg_map_path'])} (for {info['img_path']})"
                     for info in missing]
            raise ValueError(
                f"{self.data_prefix['seg_map_path']}: no label map for {len(missing)} of the "
                f'{len(data_list)} images: {examples(named)}; each image needs a label map of '
                f'the same name ending in {self.seg_map_suffix!r}')
