"""mmseg's ADE20K dataset, with every label map checked against its image and the classes.

A label PNG of another size than its image passes mmseg's pipeline (both are resized and
cropped alike) and fails only when the batch is stacked, as ``stack expects each tensor to be
equal size``, naming no file; a label value that is no class and not the ignore index reaches
the loss as ``IndexError: Target ... is out of bounds`` (on a GPU, a device-side assert).
:class:`CheckedADE20KDataset` checks each map as it is loaded and names the file.
"""
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.datasets import ADE20KDataset

from fastmim.registry import DATASETS


class CheckSegMap(BaseTransform):
    """Right after mmseg's ``LoadAnnotations``: ``gt_seg_map`` has the size of the image as
    loaded (``ori_shape``; the test pipeline resizes the image before it loads the map) and
    holds only class indices below ``num_classes`` and ``ignore_index``."""

    def __init__(self, num_classes: int, ignore_index: int):
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        seg_map = results['gt_seg_map']
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
class CheckedADE20KDataset(ADE20KDataset):
    """``ADE20KDataset`` (same arguments) whose pipeline checks each label map right after
    ``LoadAnnotations`` (:class:`CheckSegMap`). Used as ``type='fastmim.CheckedADE20KDataset'``
    in mmseg configs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check = CheckSegMap(len(self.metainfo['classes']), self.ignore_index)
        steps = self.pipeline.transforms
        loads = [index for index, step in enumerate(steps)
                 if type(step).__name__ == 'LoadAnnotations']
        for index in reversed(loads):
            steps.insert(index + 1, check)
