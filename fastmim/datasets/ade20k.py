"""mmseg's ADE20K dataset, with every label map checked against its image and the classes.

mmseg lists the images of ``data_prefix['img_path']`` and pairs each with the label map of the
same name without looking for it: a missing label PNG stops training with a
``FileNotFoundError`` in a dataloader worker whenever the sampler reaches it, and a folder with
no image of ``img_suffix`` ends in ``need at least one array to concatenate``. A label PNG of
another size than its image passes mmseg's pipeline (both are resized and cropped alike) and
fails only when the batch is stacked, as ``stack expects each tensor to be equal size``, naming
no file; a label value that is no class and not the ignore index reaches the loss as
``IndexError: Target ... is out of bounds`` (on a GPU, a device-side assert); a label PNG saved
in colour fails at the stacking as well; a 16-bit one is cast to 8 bits (300 becomes 44) and
trains on wrong classes without a word, as do a float one (a TIFF of mode F: 2.7 becomes 2) and
a photo with an EXIF orientation (mmcv turns the image upright, not its label map).
:class:`CheckedADE20KDataset` names the missing files when the dataset is built, and checks each
map as it is loaded, naming the file.
"""
import os
import os.path as osp
from collections import Counter
from functools import partial
from typing import Optional

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.datasets import ADE20KDataset
from PIL import Image

from fastmim.registry import DATASETS

from .sample_files import FilesFoundFine, NamedUndecodableFiles, stored_orientation
from .sample_seeds import SeededSamples
from .utils import check_after_each, examples, is_local

# PIL modes of 8-bit single-channel images ('1': bilevel, decoded as 0 and 1).
EIGHT_BIT_MODES = ('L', 'P', '1')


class CheckSegMap(BaseTransform):
    """Right after mmseg's ``LoadAnnotations``: ``gt_seg_map`` has one channel and the size of
    the image as loaded (``ori_shape``; the test pipeline resizes the image before it loads the
    map) and holds only class indices below ``num_classes`` and ``ignore_index``.

    Two things are checked on the files themselves (local ones), since the loaded arrays no
    longer show them: a label map that is not 8-bit (mmseg casts it to uint8, so a value of
    300 would become class 43, and a float 2.7 class 2, without a word), and an image with an EXIF
    orientation (mmcv loads it turned upright, its label map as stored: they need not line
    up). Each file passes these once per process, not on every load (:class:`FilesFoundFine`);
    a file they refuse is refused on every load."""

    def __init__(self, num_classes: int, ignore_index: int, backend_args: Optional[dict] = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.backend_args = backend_args
        self._label_maps_read = FilesFoundFine()
        self._orientations_read = FilesFoundFine()

    def transform(self, results: dict) -> dict:
        seg_map = results['gt_seg_map']
        if seg_map.ndim != 2:
            raise ValueError(
                f"{results['seg_map_path']}: label map of {seg_map.shape[2]} channels; a label "
                'map is a single-channel PNG of class indices (one saved in colour, RGB or '
                'RGBA, needs converting back)')
        if is_local(results['seg_map_path'], self.backend_args):
            self._label_maps_read.check_once(results['seg_map_path'],
                                             refuse_values_the_uint8_cast_changes)
        if is_local(results['img_path'], self.backend_args):
            self._orientations_read.check_once(
                results['img_path'],
                partial(refuse_exif_orientation, seg_map_path=results['seg_map_path']))
        image_size = tuple(results['ori_shape'][:2])
        if seg_map.shape[:2] != image_size:
            turned = (' (turned by its EXIF orientation when loaded?)'
                      if seg_map.shape[:2] == image_size[::-1] else '')
            raise ValueError(
                f"{results['seg_map_path']}: label map of {seg_map.shape[1]}x{seg_map.shape[0]} "
                f"px for an image of {image_size[1]}x{image_size[0]} px{turned} "
                f"({results['img_path']}); a label map has its image's size")
        bad = (seg_map >= self.num_classes) & (seg_map != self.ignore_index)
        if bad.any():
            raise ValueError(self._bad_values_message(results, np.unique(seg_map[bad])))
        return results

    def _bad_values_message(self, results: dict, values: np.ndarray) -> str:
        """The values as the file holds them: ``reduce_zero_label`` took 1 from each (and made
        0 into 255), which adding 1 modulo 256 undoes."""
        if results.get('reduce_zero_label'):
            values = (values.astype(np.int64) + 1) % 256
            return (f"{results['seg_map_path']}: label values {values[:5].tolist()} are no class "
                    f'(1..{self.num_classes} in the file, 0..{self.num_classes - 1} after '
                    f'reduce_zero_label, or 0 to ignore)')
        return (f"{results['seg_map_path']}: label values {values[:5].tolist()} are no class "
                f'(0..{self.num_classes - 1}, or {self.ignore_index} to ignore)')


def refuse_values_the_uint8_cast_changes(path: str) -> None:
    """mmseg's ``LoadAnnotations`` decodes the map as stored (``flag='unchanged'``: PIL's array,
    or OpenCV's with ``imdecode_backend='cv2'``) and casts it to uint8: an integer map of more
    than 8 bits (mode ``I;16``, ``I``) comes out modulo 256, a float one (mode ``F``, a TIFF)
    truncated (2.7 becomes 2; NaN, negative and over-255 values to whatever the cast makes of
    them). The mode is read from the header; a map that is not 8-bit is decoded, and refused if
    a value is not an integer or lies outside 0..255. One whose values are all integers within
    0..255 loads, float or not: the cast keeps each value exactly."""
    with Image.open(path) as label_map:
        mode = label_map.mode
        if mode in EIGHT_BIT_MODES:
            return
        values = np.asarray(label_map)
    refuse_fractions(path, mode, values)
    outside = values[(values < 0) | (values > 255)]
    if outside.size:
        raise ValueError(
            f'{path}: label map of PIL mode {mode} holds values '
            f'{np.unique(outside)[:5].tolist()} outside 0..255, which mmseg casts to 8 bits (300 '
            f'becomes 44); a label map holds class indices 0..255: save it as an 8-bit PNG '
            f'(mode L or P) with those values')


def refuse_fractions(path: str, mode: str, values: np.ndarray) -> None:
    """A float label map whose values are not all integers (NaN included): the cast to uint8
    drops the fractions, so the pixels train on the class below without a word. Fractions come
    from a map resized or warped with interpolation; their classes cannot be read back."""
    if not np.issubdtype(values.dtype, np.floating):
        return
    fractional = values[values != np.round(values)]
    if fractional.size:
        shown = ', '.join(f'{value:g}' for value in np.unique(fractional)[:5])
        raise ValueError(
            f'{path}: label map of PIL mode {mode} holds {fractional.size} values that are not '
            f'integers ({shown}), which mmseg truncates to class indices (2.7 becomes 2); a '
            f'label map holds class indices: save it as an 8-bit single-channel PNG of them '
            f'(mode L or P), resized with nearest-neighbour (interpolation makes fractions)')


def refuse_exif_orientation(image_path: str, *, seg_map_path: str) -> None:
    """mmcv turns an image upright by its EXIF orientation as it loads it; a label PNG has no
    such tag and is used as stored. The two line up only if the labels were drawn on the
    upright image, which no size check can tell for a flip, a half turn or a square image."""
    orientation = stored_orientation(image_path)
    if orientation != 1:
        raise ValueError(
            f'{image_path}: EXIF orientation {orientation}: the image is loaded turned upright, '
            f'its label map {seg_map_path} as stored, so they need not line up. Store the '
            f'image without the tag: drop the tag if the labels are drawn on the stored pixels '
            f'(exiftool -Orientation= FILE), or store the pixels upright if they are drawn on '
            f'the upright image (PIL: ImageOps.exif_transpose(Image.open(FILE)).save(FILE))')


@DATASETS.register_module()
class CheckedADE20KDataset(NamedUndecodableFiles, SeededSamples, ADE20KDataset):
    """``ADE20KDataset`` (same arguments) that names an image without its label map, and an
    image folder without images, when it is built, and whose pipeline checks each label map
    right after ``LoadAnnotations`` (:class:`CheckSegMap`). Used as
    ``type='fastmim.CheckedADE20KDataset'`` in mmseg configs. An image or label map that does
    not decode stops with one error naming it (``NamedUndecodableFiles``). Fetched with the
    seeded indices of ``ResumableInfiniteSampler``, it augments each sample from that sample's
    seed, so a resumed run crops and flips as the uninterrupted one did (``SeededSamples``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check_after_each(self.pipeline, 'LoadAnnotations',
                         CheckSegMap(len(self.metainfo['classes']), self.ignore_index,
                                     self.backend_args))

    def load_data_list(self):
        try:
            data_list = super().load_data_list()
        except UnicodeDecodeError as error:  # mmseg reads ``ann_file`` as a list of names
            raise ValueError(f'{self.ann_file}: not a list of image names (ann_file): not UTF-8 '
                             f'text (byte {error.start})') from None
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
