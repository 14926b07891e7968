"""mmdet's COCO dataset, with the broken entries of an annotation file skipped and named.

mmdet's ``CocoDataset`` drops boxes under 1 px silently and keeps images whose file is not
there and annotations without a mask, so a hand-made or converted COCO file fails in a
dataloader worker in the middle of an epoch (``LoadImageFromFile``, ``KeyError: 'mask'``), and
its degenerate polygons turn into ignored instances without a word, as do annotations of an
image or a category the file does not list.
:class:`CheckedCocoDataset` finds these when the annotation file is read, before training,
leaves them out and logs one warning per kind of problem naming the entries. An annotation file
that is not JSON (or is cut short), one without COCO's top-level lists, and one that leaves no
training image, stop the run with a message naming the file, where mmdet says
``JSONDecodeError: Expecting value``, ``KeyError: 'categories'`` or ``need at least one array
to concatenate``. So do two files that would give wrong numbers: a
test set with an image whose file is missing (mmdet's ``CocoMetric`` scores every image of the
annotation file, so a skipped one would count as nothing detected) and a file whose categories
do not name every class of the dataset (mmdet numbers the classes by the categories it finds, so
the labels after a missing one shift, and ``CocoMetric`` ends the evaluation with an
``IndexError``).
"""
import json
import logging
import os.path as osp
import warnings
from collections import defaultdict
from functools import partial
from typing import Optional

from mmcv.transforms import BaseTransform
from mmdet.datasets import CocoDataset, MultiImageMixDataset
from mmengine.logging import print_log

from fastmim.registry import DATASETS

from .sample_files import FilesFoundFine, NamedUndecodableFiles, stored_orientation
from .sample_seeds import SeededSamples
from .utils import check_after_each, examples, is_local

# Entries named per kind of problem in the warning; the rest are counted.
SHOWN = 5


class ExifOrientationWarning(UserWarning):
    """A COCO image is stored with an EXIF orientation: loaded upright, its annotations must
    describe the upright image."""


class CheckImageSize(BaseTransform):
    """Right after ``LoadImageFromFile``: the image has the width and height the annotation file
    gives it, the pixels its boxes, polygons and RLE masks are in (an image resized on disk
    afterwards fails in ``LoadAnnotations`` as ``cannot reshape array``, or its polygon masks
    land in the wrong place). detectron2 checks the same (``check_image_size``).

    The image is loaded with its EXIF orientation applied (mmdet's practice, as detectron2's),
    so its annotations must be drawn on the upright image: a photo annotated as stored comes out
    with width and height swapped (stopped here), or, flipped or turned half round, with its
    boxes in the wrong place, which nothing can check. An image with an orientation other than
    1 (a local file) is named in an :class:`ExifOrientationWarning`, once per file and process
    (a warning, not an error: a dataset annotated upright trains right). Each file's header is
    read for it once per process, not on every load (:class:`FilesFoundFine`)."""

    def __init__(self, ann_file: str, backend_args: Optional[dict] = None):
        self.ann_file = ann_file
        self.backend_args = backend_args
        self._orientations_read = FilesFoundFine()

    def transform(self, results: dict) -> dict:
        height, width = results['ori_shape'][:2]
        expected = (results['height'], results['width'])
        if (height, width) != expected:
            rotated = (' (turned by its EXIF orientation when loaded?)'
                       if (width, height) == expected else '')
            raise ValueError(
                f"{results['img_path']}: image of {width}x{height} px{rotated}, but "
                f"{self.ann_file} gives image {results['img_id']} {expected[1]}x{expected[0]} "
                'px; its boxes and masks are in those pixels')
        if is_local(results['img_path'], self.backend_args):
            self._orientations_read.check_once(
                results['img_path'], partial(self._warn_of_orientation, img_id=results['img_id']))
        return results

    def _warn_of_orientation(self, path: str, img_id) -> None:
        orientation = stored_orientation(path)
        if orientation != 1:
            warnings.warn(
                f'{path}: EXIF orientation {orientation}: the image is used upright (turned as '
                f'the tag says), so the boxes and masks {self.ann_file} gives image {img_id} '
                f'must be drawn on the upright image, not on the pixels as stored',
                ExifOrientationWarning, stacklevel=3)


@DATASETS.register_module()
class CheckedCocoDataset(NamedUndecodableFiles, CocoDataset):
    """``CocoDataset`` (same arguments) that skips, with a warning naming each one:

    - an image whose file is not under ``data_prefix['img']`` (local files only);
    - an annotation whose box is less than 1 px wide or high (mmdet's own threshold, which it
      applies silently);
    - the polygons of a segmentation with fewer than 3 points (or an odd number of
      coordinates), which mmdet's ``LoadAnnotations`` drops, and the annotation when none is
      left;
    - an annotation without a ``segmentation`` when the pipeline loads masks (mmdet gives it
      no mask, and ``LoadAnnotations(with_mask=True)`` fails on it with ``KeyError: 'mask'``);
    - an annotation whose ``image_id`` is not in the file's ``images``, or whose
      ``category_id`` is not in its ``categories`` (mmdet leaves both out silently).

    It stops with an error naming the file when the file's categories miss a class of the
    dataset, and, in a test set, when an image has no file.

    Each image is checked against the width and height the file gives it as it is loaded
    (:class:`CheckImageSize`), and one that does not decode stops with one error naming it
    (``NamedUndecodableFiles``).

    Used as ``type='fastmim.CheckedCocoDataset'`` in mmdet configs.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check_after_each(self.pipeline, 'LoadImageFromFile',
                         CheckImageSize(self.ann_file, self.backend_args))

    def COCOAPI(self, path):  # noqa: N802 (the name mmdet calls)
        """mmdet's COCO reader; the file is kept for the checks that follow the loading,
        since mmdet's ``load_data_list`` deletes ``self.coco`` when it is done."""
        try:
            self._file = CocoDataset.COCOAPI(path)
        except KeyError as error:  # pycocotools' index of the entries' ids (createIndex)
            raise ValueError(_entry_without_key(path, self.ann_file, error.args[0])) from None
        self._refuse_missing_sections()
        return self._file

    def _refuse_missing_sections(self):
        """pycocotools indexes a file without ``categories`` or ``annotations`` as empty, and
        mmdet then fails on the missing key (``KeyError: 'categories'`` in ``get_cat_ids``) or,
        without ``annotations``, trains on no box: the file is named with what it lacks. A test
        set may do without ``annotations`` (COCO's ``image_info_test`` files have none)."""
        needed = ('images', 'categories') + (() if self.test_mode else ('annotations',))
        missing = [key for key in needed if key not in self._file.dataset]
        if missing:
            has = ', '.join(repr(key) for key in self._file.dataset) or 'nothing'
            raise ValueError(
                f'{self.ann_file}: not a COCO annotation file: no '
                f'{" or ".join(repr(key) for key in missing)} list at its top level (it has '
                f'{has}); a COCO file gives \'images\', \'categories\' and, for training, '
                f'\'annotations\'')

    def load_data_list(self):
        self._skipped = defaultdict(list)
        self._loads_masks = any(
            type(step).__name__ == 'LoadAnnotations' and getattr(step, 'with_mask', False)
            for step in self.pipeline.transforms)
        try:
            data_list = self._read_and_check()
        finally:
            self._file = None
        self._listed = len(data_list)
        if self.test_mode:
            self._refuse_missing_test_images()
        data_list = [info for info in data_list if info is not None]
        for problem, entries in self._skipped.items():
            print_log(f'{self.ann_file}: skipped {len(entries)} {problem}: '
                      f'{examples(entries, SHOWN)}', logger='current', level=logging.WARNING)
        self._missing_files = len(self._skipped['images without their file'])
        del self._skipped
        return data_list

    def _read_and_check(self):
        """mmdet's ``load_data_list`` with the file-level checks: its errors named, classes
        without a category refused, orphaned annotations listed as skipped."""
        try:
            data_list = super().load_data_list()
        except json.JSONDecodeError as error:
            cut = (error.pos >= len(error.doc.rstrip())
                   or error.msg.startswith('Unterminated string'))
            end = ' (the file ends there: cut short?)' if cut else ''
            raise ValueError(f'{self.ann_file}: not a COCO annotation file: invalid JSON at '
                             f'line {error.lineno} column {error.colno}: {error.msg}{end}'
                             ) from None
        except UnicodeDecodeError as error:
            raise ValueError(f'{self.ann_file}: not a COCO annotation file: not UTF-8 text '
                             f'(byte {error.start})') from None
        except AssertionError as error:  # pycocotools' and mmdet's checks of the file's content
            raise ValueError(f'{self.ann_file}: {error}') from None
        self._refuse_classes_without_category()
        self._note_orphaned_annotations()
        return data_list

    def _refuse_classes_without_category(self):
        """mmdet maps label i to the i-th category of the file whose name is a class, so a
        class without its category shifts the labels after it away from the class names."""
        named = {category.get('name') for category in self._file.dataset.get('categories', [])}
        classes = self.metainfo['classes']
        missing = [name for name in classes if name not in named]
        if missing:
            raise ValueError(
                f'{self.ann_file}: no category of the file is named after {len(missing)} of the '
                f'{len(classes)} classes of the dataset: {examples(missing, SHOWN)}; mmdet and '
                f'CocoMetric number the classes by these names. Give the dataset and the evaluator '
                f'metainfo=dict(classes=...) with the file\'s category names (and the heads '
                f'num_classes to match), or add the categories to the file')

    def _note_orphaned_annotations(self):
        """Annotations that mmdet never reaches: their image or category is not listed."""
        for ann in self._file.dataset.get('annotations', []):
            if ann.get('image_id') not in self._file.imgs:
                self._skipped["annotations of an image not listed in 'images'"].append(
                    f'annotation {ann.get("id")} (image_id {ann.get("image_id")})')
            elif ann.get('category_id') not in self._file.cats:
                self._skipped["annotations of a category not listed in 'categories'"].append(
                    f'annotation {ann.get("id")} (category_id {ann.get("category_id")})')

    def _refuse_missing_test_images(self):
        """A test image cannot be skipped: the metric reads its ground truth from the file."""
        missing = self._skipped.get('images without their file', [])
        if missing:
            raise ValueError(
                f'{self.ann_file}: {len(missing)} of its {self._listed} images have no file '
                f'under {self.data_prefix["img"]}: {examples(missing, SHOWN)}; CocoMetric '
                f'scores every image the file lists, so an image left out would count as one '
                f'where nothing was detected. Restore the files, or evaluate on an annotation '
                f'file of the images there are')

    def filter_data(self):
        """mmdet's filter (images without annotations of the dataset's classes go when
        ``filter_cfg.filter_empty_gt``); an error naming the file when no image is left, which
        mmdet meets only when it serialises the empty list."""
        data_list = super().filter_data()
        if not data_list and not self.test_mode:
            reasons = [f'{self._listed} images listed']
            if self._missing_files:
                reasons.append(f'{self._missing_files} without their file under '
                               f'{self.data_prefix["img"]}')
            if len(self.data_list) > len(data_list):
                reasons.append(f'{len(self.data_list)} without an annotation of the '
                               f'{len(self.metainfo["classes"])} classes of the dataset '
                               f'(filter_cfg.filter_empty_gt)')
            raise ValueError(f'{self.ann_file}: no training image left: '
                             f'{", ".join(reasons)}')
        return data_list

    def parse_data_info(self, raw_data_info):
        img_info = raw_data_info['raw_img_info']
        img_path = osp.join(self.data_prefix['img'], img_info['file_name'])
        if is_local(img_path, self.backend_args) and not osp.isfile(img_path):
            self._skipped['images without their file'].append(
                f'image {img_info["img_id"]} ({img_path})')
            return None
        annotations = [self._checked(ann, img_info['file_name'])
                       for ann in raw_data_info['raw_ann_info']]
        return super().parse_data_info(
            {**raw_data_info, 'raw_ann_info': [ann for ann in annotations if ann is not None]})

    def _checked(self, ann, file_name):
        """``ann`` without its short polygons, or None when it is to be skipped."""
        name = f'annotation {ann.get("id")} of {file_name}'
        if self._loads_masks and not ann.get('segmentation'):
            self._skipped['annotations without a segmentation (the pipeline loads masks)'
                          ].append(name)
            return None
        _, _, width, height = ann['bbox']
        if width < 1 or height < 1:
            self._skipped['annotations with a box under 1 px wide or high'].append(
                f'{name} (bbox {ann["bbox"]})')
            return None
        polygons = ann.get('segmentation')
        if isinstance(polygons, list):  # RLE masks are dicts
            kept = [polygon for polygon in polygons if len(polygon) >= 6 and len(polygon) % 2 == 0]
            if len(kept) < len(polygons):
                self._skipped['polygons with fewer than 3 points' + (
                    '' if kept else ' (the whole annotation)')].append(name)
                if not kept:
                    return None
                ann = {**ann, 'segmentation': kept}
        return ann


@DATASETS.register_module()
class SeededMultiImageMixDataset(SeededSamples, MultiImageMixDataset):
    """mmdet's ``MultiImageMixDataset`` (same arguments) that augments each sample from its
    index's seed (``SeededSamples``; ``ResumableSampler`` attaches it): the image's load
    pipeline, the choice of the images mixed into it (copy-paste's other image), their
    pipelines and the mix transforms all draw from generators seeded for (seed, epoch, index).
    mmdet's wrapper and ``CocoDataset`` draw from each worker's generators, seeded once per
    worker, so a run resumed inside an epoch (fresh workers) augmented the rest of that epoch
    otherwise than the run left alone, and its weights differed."""


def _entry_without_key(path, ann_file, key) -> str:
    """Why pycocotools could not index ``path`` (``ann_file`` as the config names it): an entry
    of one of its lists lacks ``key``, which a COCO instance-annotation file gives every entry.
    A panoptic file, the usual one given by mistake, is named as such: its annotations are one
    per image, with ``segments_info`` and no ``id`` or ``bbox`` of their own."""
    with open(path, encoding='utf-8') as file:
        data = json.load(file)
    lists = [name for name in ('annotations', 'images', 'categories')
             if any(isinstance(entry, dict) and key not in entry
                    for entry in data.get(name) or [])]
    where = f'an entry of its {lists[0]!r}' if lists else 'an entry'
    message = (f'{ann_file}: not a COCO instance-annotation file: {where} has no {key!r} '
               f'(pycocotools indexes every entry by it)')
    annotations = data.get('annotations') or []
    if annotations and isinstance(annotations[0], dict) and 'segments_info' in annotations[0]:
        message += ('; it is a COCO panoptic file (one annotation per image, with '
                    "'segments_info' and no 'id' or 'bbox'): give the instances_*.json of "
                    'the split')
    return message
