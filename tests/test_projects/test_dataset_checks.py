"""Bad downstream data is reported before training: missing COCO / ADE20K folders and files by
name (``fastmim.engine.dataset_paths``), broken COCO entries skipped with a warning naming
them (``fastmim.CheckedCocoDataset``), not met by a dataloader worker in the middle of an epoch."""
import json
import re
import shutil
import warnings
from collections import Counter
from logging import WARNING
from pathlib import Path

import pytest
from mmengine.config import Config
from PIL import Image

from fastmim.engine.dataset_paths import check_dataset_paths
from fastmim.errors import LaunchError

ROOT = Path(__file__).resolve().parents[2]
DETECTION = ROOT / 'projects' / 'detection' / 'configs' / 'mask_rcnn_fastmim_swin_b_fpn_3x_coco.py'
SEGMENTATION = (ROOT / 'projects' / 'segmentation' / 'configs' /
                'upernet_fastmim_vit_b_ade20k_512x512_160k.py')


def detection_cfg(downstream, coco, **changes):
    cfg = Config.fromfile(str(DETECTION))
    cfg.merge_from_dict({**downstream.detection_overrides(coco, 1),
                         **downstream.detection_test_overrides(coco), **changes})
    return cfg


def test_coco_paths_are_checked_through_the_copy_paste_wrapper(coco_instances, downstream):
    inner = 'train_dataloader.dataset.dataset'
    check_dataset_paths(detection_cfg(downstream, coco_instances), ['train', 'test'])

    missing_root = coco_instances['data_root'] + 'nowhere/'
    with pytest.raises(LaunchError, match=re.escape(
            f'{inner}.data_root: folder {missing_root} not found; set it with --cfg-options '
            f'{inner}.data_root=...')):
        check_dataset_paths(detection_cfg(downstream, coco_instances,
                                          **{f'{inner}.data_root': missing_root}), ['train'])
    with pytest.raises(LaunchError, match=re.escape(
            f'{inner}.data_prefix.img: path {coco_instances["data_root"]}train2017/ not found')):
        check_dataset_paths(detection_cfg(downstream, coco_instances, **{
            f'{inner}.data_prefix.img': 'train2017/'}), ['train'])
    # COCO's metric reads the annotation file itself.
    with pytest.raises(LaunchError, match='^test_evaluator.ann_file: file /no/instances.json'):
        check_dataset_paths(detection_cfg(downstream, coco_instances, **{
            'test_evaluator.ann_file': '/no/instances.json'}), ['test'])
    # The published config on a machine without COCO: mmdet's relative defaults, named as
    # such, all at once (they came one per start: the train root, the val root, then the
    # metric's file, which does not follow data_root); the paths under a missing root are not
    # named apart from it.
    with pytest.raises(LaunchError) as error:
        check_dataset_paths(Config.fromfile(str(DETECTION)), ['train', 'val'])
    lines = str(error.value).splitlines()
    assert lines[0] == '3 dataset paths not found:'
    assert [re.sub(r' \(relative to .*\)', '', line) for line in lines[1:4]] == [
        '  train_dataloader.dataset.dataset.data_root: folder data/coco/ not found',
        '  val_dataloader.dataset.data_root: folder data/coco/ not found',
        '  val_evaluator.ann_file: file data/coco/annotations/instances_val2017.json not found']
    assert lines[4] == ('set them with --cfg-options train_dataloader.dataset.dataset.data_root=.'
                        '.. val_dataloader.dataset.data_root=... val_evaluator.ann_file=...')


@pytest.mark.parametrize('name, data_prefix, hint', [
    ('imgs.tar', 'train', 'an archive: extract it and give the extracted folder'),
    ('imgs.tar.gz', None, 'an archive: extract it and give the extracted folder'),
    ('photo.jpg', None, 'give the folder that holds the images'),
])
def test_a_data_root_that_is_a_file_is_named_as_a_file(tmp_path, name, data_prefix, hint):
    """docs/data.md promises an archive given as data_root is named as a file ('extract it');
    the launch check said 'folder .../imgs.tar not found', before the dataset could say more."""
    archive = tmp_path / name
    archive.write_bytes(b'not a folder')
    cfg = Config(dict(train_dataloader=dict(dataset=dict(
        type='ImageFolder', data_root=str(archive), data_prefix=data_prefix))))
    with pytest.raises(LaunchError) as error:
        check_dataset_paths(cfg, ['train'])
    # one line: the prefix under the file is not named apart from it
    assert str(error.value) == (
        f'train_dataloader.dataset.data_root: {archive} is a file, not a folder ({hint}); '
        f'set it with --cfg-options train_dataloader.dataset.data_root=...')


def test_a_path_under_a_file_names_the_file(tmp_path):
    (tmp_path / 'coco.zip').write_bytes(b'PK')
    ann_file = tmp_path / 'coco.zip' / 'annotations' / 'instances_val2017.json'
    cfg = Config(dict(val_evaluator=dict(type='CocoMetric', ann_file=str(ann_file))))
    with pytest.raises(LaunchError, match=re.escape(
            f'val_evaluator.ann_file: {tmp_path}/coco.zip is a file, not a folder (an archive: '
            f'extract it and give the extracted folder)')):
        check_dataset_paths(cfg, ['val'])
    # a missing file in an existing folder is still a file not found
    cfg.val_evaluator.ann_file = str(tmp_path / 'instances_val2017.json')
    with pytest.raises(LaunchError, match=re.escape(
            f'val_evaluator.ann_file: file {tmp_path}/instances_val2017.json not found')):
        check_dataset_paths(cfg, ['val'])


def test_a_coco_metric_reading_another_file_than_its_dataset_is_named(coco_instances,
                                                                       downstream):
    """A test set changed in test_dataloader.dataset.ann_file alone ended after the whole
    inference in CocoMetric's 'Results do not correspond to current coco set', or, with
    overlapping image ids, scored the wrong ground truth without a word."""
    other = coco_instances['data_root'] + coco_instances['train_ann_file']
    with pytest.raises(LaunchError, match=re.escape(
            f'test_evaluator.ann_file: {other} is not the annotation file of '
            f'test_dataloader.dataset ({coco_instances["data_root"]}'
            f'{coco_instances["val_ann_file"]})')):
        check_dataset_paths(detection_cfg(downstream, coco_instances, **{
            'test_evaluator.ann_file': other}), ['test'])
    # The same file, named through another path, is the same file.
    same = coco_instances['data_root'] + 'annotations/../' + coco_instances['val_ann_file']
    check_dataset_paths(detection_cfg(downstream, coco_instances, **{
        'test_evaluator.ann_file': same}), ['test'])


def test_ade20k_folders_are_checked(ade20k_semantic, downstream):
    cfg = Config.fromfile(str(SEGMENTATION))
    cfg.merge_from_dict({**downstream.segmentation_overrides(ade20k_semantic, 1, 1),
                         **downstream.segmentation_test_overrides(ade20k_semantic)})
    check_dataset_paths(cfg, ['train', 'test'])
    cfg.merge_from_dict({'test_dataloader.dataset.data_prefix.seg_map_path': 'annotations/val'})
    with pytest.raises(LaunchError, match=re.escape(
            f'test_dataloader.dataset.data_prefix.seg_map_path: path '
            f'{ade20k_semantic}annotations/val not found')):
        check_dataset_paths(cfg, ['test'])


def test_an_empty_folder_is_named_before_the_model_is_built(ade20k_semantic, downstream,
                                                            tmp_path):
    """mmseg's ADE20KDataset lists no samples from an empty folder and trains on nothing; the
    innermost empty folder is named, links count as content."""
    root = tmp_path / 'ade'
    shutil.copytree(ade20k_semantic, root)
    cfg = Config.fromfile(str(SEGMENTATION))
    cfg.merge_from_dict(downstream.segmentation_overrides(f'{root}/', 1, 1))
    labels = root / 'annotations' / 'training'
    shutil.rmtree(labels)
    (labels / 'not_unzipped_yet').mkdir(parents=True)
    with pytest.raises(LaunchError, match=re.escape(
            f'train_dataloader.dataset.data_prefix.seg_map_path: folder {labels} holds no '
            'files')):
        check_dataset_paths(cfg, ['train'])
    (labels / 'not_unzipped_yet' / 'elsewhere').symlink_to(ade20k_semantic)
    check_dataset_paths(cfg, ['train'])


def test_the_empty_folder_check_refuses_only_a_folder_the_data_is_read_from(tmp_path,
                                                                           monkeypatch):
    """An empty data_root whose prefix lies elsewhere is no error; data_root read itself
    (data_prefix='') is; an unreadable subfolder counts as content (it was a PermissionError
    traceback for a mount point's root-only lost+found)."""
    import fastmim.engine.dataset_paths as dataset_paths

    root, images = tmp_path / 'root', tmp_path / 'elsewhere'
    root.mkdir()
    (images / 'a').mkdir(parents=True)
    (images / 'a' / 'photo.jpg').write_bytes(b'')

    def config(prefix):
        return Config(dict(train_dataloader=dict(dataset=dict(
            type='ImageFolder', data_root=str(root), data_prefix=prefix))))

    check_dataset_paths(config(str(images)), ['train'])
    with pytest.raises(LaunchError, match=re.escape(
            f'train_dataloader.dataset.data_root: folder {root} holds no files')):
        check_dataset_paths(config(''), ['train'])
    (root / 'lost+found').mkdir()
    scandir = dataset_paths.os.scandir

    def unreadable(path):
        if str(path).endswith('lost+found'):
            raise PermissionError(13, 'Permission denied', str(path))
        return scandir(path)
    monkeypatch.setattr(dataset_paths.os, 'scandir', unreadable)
    check_dataset_paths(config(''), ['train'])


IMAGE_EXTENSIONS = "('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')"


def image_folder_config(root, **settings):
    return Config(dict(default_scope='fastmim', train_dataloader=dict(dataset=dict(
        type='ImageFolder', data_root=str(root), data_prefix='', **settings))))


def test_a_folder_with_files_but_no_images_is_refused_naming_the_key_and_extensions(tmp_path):
    """ImageFolder refused it only after the Runner's start-up ('no images with extensions
    ...'), naming no config key, with a log folder and a config copy left in the work dir."""
    root = tmp_path / 'notes'
    (root / 'sub').mkdir(parents=True)
    for name in ('a.txt', 'b.csv', 'sub/c.txt', 'sub/._d.jpg'):  # ._*: macOS metadata
        (root / name).write_bytes(b'')
    with pytest.raises(LaunchError) as refused:
        check_dataset_paths(image_folder_config(root), ['train'])
    assert str(refused.value) == (
        f'train_dataloader.dataset.data_root: folder {root} holds no image files: none with '
        f'extensions {IMAGE_EXTENSIONS} under it, searched recursively; set it with '
        '--cfg-options train_dataloader.dataset.data_root=...')

    (root / 'sub' / 'deep').mkdir()
    (root / 'sub' / 'deep' / 'photo.JPEG').write_bytes(b'')  # found anywhere below, any case
    check_dataset_paths(image_folder_config(root), ['train'])


def test_the_image_check_takes_the_datasets_extensions_and_names_other_formats(tmp_path):
    root = tmp_path / 'gifs'
    root.mkdir()
    (root / 'a.gif').write_bytes(b'')
    with pytest.raises(LaunchError, match=re.escape(
            f'train_dataloader.dataset.data_root: folder {root} holds no image files: none with '
            f'extensions {IMAGE_EXTENSIONS} under it, searched recursively (1 files of other '
            f'image formats PIL decodes: {root}/a.gif; pass extensions= naming theirs to use '
            'them)')):
        check_dataset_paths(image_folder_config(root), ['train'])
    check_dataset_paths(image_folder_config(root, extensions=['gif']), ['train'])
    with pytest.raises(LaunchError, match=re.escape(
            f"train_dataloader.dataset.data_prefix: folder {root}/train holds no image files: "
            "none with extensions ('.png',) under it")):
        (root / 'train').mkdir()
        (root / 'train' / 'b.jpg').write_bytes(b'')
        cfg = image_folder_config(root, extensions='png')
        cfg.train_dataloader.dataset.data_prefix = 'train'
        check_dataset_paths(cfg, ['train'])


def test_a_missing_or_empty_folder_of_any_split_is_named_before_one_without_images(tmp_path):
    """The folder without images is named last: setting a missing or empty one may be all the
    user needs, and the image check reads the folders the others found to hold files."""
    notes, val = tmp_path / 'notes', tmp_path / 'val'
    notes.mkdir()
    (notes / 'a.txt').write_bytes(b'')
    cfg = image_folder_config(notes)
    cfg.val_dataloader = dict(dataset=dict(type='ImageFolder', data_root=str(val),
                                           data_prefix=''))
    with pytest.raises(LaunchError, match=re.escape(
            f'val_dataloader.dataset.data_root: folder {val} not found')):
        check_dataset_paths(cfg, ['train', 'val'])
    val.mkdir()
    with pytest.raises(LaunchError, match=re.escape(
            f'val_dataloader.dataset.data_root: folder {val} holds no files')):
        check_dataset_paths(cfg, ['train', 'val'])
    (val / 'b.txt').write_bytes(b'')
    with pytest.raises(LaunchError, match=re.escape(
            f'train_dataloader.dataset.data_root: folder {notes} holds no image files')):
        check_dataset_paths(cfg, ['train', 'val'])


def test_a_data_root_one_folder_too_deep_is_named(ade20k_semantic, downstream):
    """data_root=.../ade/images (the images folder, which data_prefix adds again) was told to
    change data_prefix.img_path, though the prefix was right."""
    cfg = Config.fromfile(str(SEGMENTATION))
    cfg.merge_from_dict({**downstream.segmentation_overrides(ade20k_semantic, 1, 1),
                         'train_dataloader.dataset.data_root': f'{ade20k_semantic}images'})
    with pytest.raises(LaunchError, match=re.escape(
            f'train_dataloader.dataset.data_prefix.img_path: path {ade20k_semantic}images/'
            f"images/training not found ('images' twice in a row; "
            f'{ade20k_semantic}images/training exists: does data_root end in the folder '
            'data_prefix starts with?)')):
        check_dataset_paths(cfg, ['train'])


def test_train_stops_before_building_the_model_naming_the_annotation_file(
        coco_instances, downstream, tmp_path):
    missing = 'annotations/instances_train2017.json'
    overrides = {**downstream.detection_overrides(coco_instances, batch_size=1),
                 'train_dataloader.dataset.dataset.ann_file': missing}
    work_dir = tmp_path / 'train'
    result = downstream.run_tool('train.py', [
        str(DETECTION), '--work-dir', str(work_dir),
        '--cfg-options', *downstream.as_cfg_options(overrides)])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f'error: LaunchError: train_dataloader.dataset.dataset.ann_file: file '
        f'{coco_instances["data_root"]}{missing} not found; set it with --cfg-options '
        f'train_dataloader.dataset.dataset.ann_file=...')
    assert not work_dir.exists() or not any(work_dir.iterdir())  # no log: the Runner never started


# --------------------------------------------------------------------------------------------
# Broken COCO entries
# --------------------------------------------------------------------------------------------
def write_broken_coco(coco, folder):
    """The two training crops' COCO file plus: an image listed without its file (with an
    annotation), an annotation of zero width, one whose only polygon has 2 points and one with
    a 2-point polygon beside a good one."""
    folder = Path(folder)
    shutil.copytree(coco['data_root'], folder, dirs_exist_ok=True)
    data = json.loads((folder / coco['train_ann_file']).read_text())
    good = data['annotations'][0]
    image_id = good['image_id']
    next_id = max(ann['id'] for ann in data['annotations']) + 1
    triangle = [10., 10., 60., 10., 35., 50.]
    broken = {
        'no_file': dict(good, id=next_id, image_id=99),
        'zero_width': dict(good, id=next_id + 1, bbox=[10, 10, 0, 40]),
        'two_points': dict(good, id=next_id + 2, bbox=[10, 10, 50, 40],
                           segmentation=[[10., 10., 60., 50.]]),
        'one_part_short': dict(good, id=next_id + 3, bbox=[10, 10, 50, 40],
                               segmentation=[triangle, [5., 5., 9., 9.]]),
    }
    data['images'].append(dict(id=99, file_name='gone.jpg', width=320, height=375))
    data['annotations'] += list(broken.values())
    ann_file = folder / 'annotations' / 'broken.json'
    ann_file.write_text(json.dumps(data))
    file_name = next(image['file_name'] for image in data['images'] if image['id'] == image_id)
    return ann_file, {key: ann['id'] for key, ann in broken.items()}, image_id, file_name


def build_dataset(cfg, dataset_type, ann_file, data_root):
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope
    dataset = cfg.train_dataloader.dataset.dataset
    dataset.update(type=dataset_type, ann_file=str(ann_file), data_root=str(data_root) + '/',
                   data_prefix=dict(img='images/'))
    init_default_scope('mmdet')
    return DATASETS.build(dataset)


def test_broken_coco_entries_are_skipped_with_a_warning_naming_them(
        coco_instances, downstream, tmp_path, monkeypatch):
    import fastmim.datasets.coco as checked_coco

    ann_file, ids, image_id, file_name = write_broken_coco(coco_instances, tmp_path / 'coco')
    cfg = Config.fromfile(str(DETECTION))
    cfg.merge_from_dict(downstream.detection_overrides(coco_instances, 1))
    assert cfg.train_dataloader.dataset.dataset.type == 'fastmim.CheckedCocoDataset'
    assert cfg.test_dataloader.dataset.type == 'fastmim.CheckedCocoDataset'

    # mmdet's own dataset keeps the image without its file: a worker fails on it mid-epoch.
    plain = build_dataset(cfg, 'CocoDataset', ann_file, tmp_path / 'coco')
    assert len(plain) == 3
    with pytest.raises(FileNotFoundError):
        for index in range(len(plain)):
            plain[index]

    warnings = []
    monkeypatch.setattr(checked_coco, 'print_log',
                        lambda message, **kwargs: warnings.append((message, kwargs['level'])))
    dataset = build_dataset(cfg, 'fastmim.CheckedCocoDataset', ann_file, tmp_path / 'coco')
    assert type(dataset).__name__ == 'CheckedCocoDataset' and len(dataset) == 2
    name = f'of {file_name}'
    assert sorted(warnings) == sorted([
        (f'{ann_file}: skipped 1 images without their file: image 99 '
         f'({tmp_path}/coco/images/gone.jpg)', WARNING),
        (f'{ann_file}: skipped 1 annotations with a box under 1 px wide or high: annotation '
         f'{ids["zero_width"]} {name} (bbox [10, 10, 0, 40])', WARNING),
        (f'{ann_file}: skipped 1 polygons with fewer than 3 points (the whole annotation): '
         f'annotation {ids["two_points"]} {name}', WARNING),
        (f'{ann_file}: skipped 1 polygons with fewer than 3 points: annotation '
         f'{ids["one_part_short"]} {name}', WARNING),
    ])
    # The image keeps its good annotations and the good part of the last one; every sample goes
    # through the config's own loading pipeline (large-scale jitter, crop, flip, pad).
    info = next(info for info in (dataset.get_data_info(i) for i in range(2))
                if info['img_id'] == image_id)
    plain_info = next(info for info in (plain.get_data_info(i) for i in range(3))
                      if info['img_id'] == image_id)
    # mmdet drops the zero-width box itself; the 2-point-only one is gone here, kept there.
    assert len(info['instances']) == len(plain_info['instances']) - 1
    assert info['instances'][-1]['mask'] == [[10., 10., 60., 10., 35., 50.]]
    for index in range(len(dataset)):
        sample = dataset[index]
        assert len(sample['gt_masks']) == len(sample['gt_bboxes'])


def test_skipped_entries_are_logged_through_mmengine(coco_instances, downstream, tmp_path):
    """The warnings go through mmengine's logger itself: a level given as the string
    'WARNING' stopped the run with 'TypeError: level must be an integer'."""
    ann_file, _, _, _ = write_broken_coco(coco_instances, tmp_path / 'coco')
    cfg = Config.fromfile(str(DETECTION))
    dataset = build_dataset(cfg, 'fastmim.CheckedCocoDataset', ann_file, tmp_path / 'coco')
    assert len(dataset) == 2


@pytest.mark.parametrize('text, problem', [
    ('hello, not JSON\n', 'invalid JSON at line 1 column 1: Expecting value'),
    (None, 'invalid JSON at line 1 column 301: Expecting value (the file ends there: cut '
           'short?)'),
    ('[]', "annotation file format <class 'list'> not supported"),
])
def test_an_annotation_file_that_is_not_coco_json_is_named(coco_instances, tmp_path, text,
                                                           problem):
    ann_file = tmp_path / 'instances.json'
    full = (Path(coco_instances['data_root']) / coco_instances['train_ann_file']).read_text()
    ann_file.write_text(full[:300] if text is None else text)
    with pytest.raises(ValueError) as error:
        build_dataset(Config.fromfile(str(DETECTION)), 'fastmim.CheckedCocoDataset', ann_file,
                      coco_instances['data_root'].rstrip('/'))
    assert str(error.value).startswith(f'{ann_file}: ')
    assert problem in str(error.value)


def rewritten_coco(coco, folder, change):
    data = json.loads((Path(coco['data_root']) / coco['train_ann_file']).read_text())
    change(data)
    ann_file = Path(folder) / 'instances.json'
    ann_file.write_text(json.dumps(data))
    return ann_file


@pytest.mark.parametrize('change, reasons', [
    (lambda data: data.update(annotations=[]),
     '2 images listed, 2 without an annotation of the 80 classes of the dataset '
     '(filter_cfg.filter_empty_gt)'),
    (lambda data: [image.update(file_name='gone.jpg') for image in data['images']],
     '2 images listed, 2 without their file under '),
    (lambda data: data.update(images=[]), '0 images listed'),
])
def test_a_file_that_leaves_no_training_image_is_named(coco_instances, tmp_path, change,
                                                       reasons):
    """mmdet said 'ValueError: need at least one array to concatenate'."""
    ann_file = rewritten_coco(coco_instances, tmp_path, change)
    with pytest.raises(ValueError, match=re.escape(
            f'{ann_file}: no training image left: {reasons}')):
        build_dataset(Config.fromfile(str(DETECTION)), 'fastmim.CheckedCocoDataset', ann_file,
                      coco_instances['data_root'].rstrip('/'))


def without(*keys):
    def drop(data):
        for key in keys:
            data.pop(key)
    return drop


@pytest.mark.parametrize('change, test_mode, missing', [
    (without('categories'), False, "no 'categories' list"),
    (without('categories'), True, "no 'categories' list"),
    (without('annotations', 'categories'), False, "no 'categories' or 'annotations' list"),
    (without('annotations'), False, "no 'annotations' list"),
    (without('images'), True, "no 'images' list"),
    (dict.clear, False,
     "no 'images' or 'categories' or 'annotations' list at its top level (it has nothing)"),
])
def test_a_file_without_the_top_level_lists_of_coco_is_named(coco_instances, tmp_path, change,
                                                           test_mode, missing):
    """``{"images": []}`` ended in a 700-line traceback, ``KeyError: 'categories'`` from
    pycocotools' getCatIds, which mmdet calls with the class names."""
    ann_file = rewritten_coco(coco_instances, tmp_path, change)
    with pytest.raises(ValueError, match=re.escape(
            f'{ann_file}: not a COCO annotation file: {missing}')):
        build_coco_split(ann_file, coco_instances['data_root'], test_mode)


def test_a_test_file_without_annotations_is_read(coco_instances, tmp_path):
    """COCO's image_info_test files list images and categories only: a test set may be one."""
    ann_file = rewritten_coco(coco_instances, tmp_path, without('annotations'))
    assert len(build_test_dataset(ann_file, coco_instances['data_root'])) == 2


def test_train_names_a_cut_short_annotation_file_in_one_line(coco_instances, downstream,
                                                             tmp_path):
    ann_file = tmp_path / 'instances.json'
    full = (Path(coco_instances['data_root']) / coco_instances['train_ann_file']).read_text()
    ann_file.write_text(full[:300])
    overrides = {**downstream.detection_overrides(coco_instances, batch_size=1),
                 'train_dataloader.dataset.dataset.ann_file': str(ann_file)}
    result = downstream.run_tool('train.py', [
        str(DETECTION), '--work-dir', str(tmp_path / 'train'),
        '--cfg-options', *downstream.as_cfg_options(overrides)])
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f'error: ValueError: {ann_file}: not a COCO annotation file: invalid JSON at line 1 ')


# --------------------------------------------------------------------------------------------
# Heads and dataset classes
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('config, key, classes', [
    (DETECTION, 'model.roi_head.bbox_head.num_classes', 80),
    (DETECTION, 'model.roi_head.mask_head.num_classes', 80),
    (DETECTION.with_name('mask_rcnn_fastmim_vit_b_simple_fpn_lsj_coco.py'),
     'model.roi_head.bbox_head.num_classes', 80),
    (SEGMENTATION, 'model.decode_head.num_classes', 150),
    (SEGMENTATION, 'model.auxiliary_head.num_classes', 150),
])
def test_a_head_with_another_number_of_classes_than_the_dataset_is_named(config, key, classes):
    """mmdet / mmseg met it in the loss of the first iteration: 'IndexError: Target 98 is out
    of bounds'."""
    from fastmim.engine.dataset_paths import CLASS_HEADS, _head_classes, check_head_classes
    cfg = Config.fromfile(str(config))
    check_head_classes(cfg, ['train', 'val'])
    check_head_classes(cfg, ['test'])
    cfg.merge_from_dict({key: 20})
    for split in ('train', 'test'):
        with pytest.raises(LaunchError, match=re.escape(
                f'{key}=20, but {split}_dataloader.dataset has {classes} classes (')):
            check_head_classes(cfg, [split])
    # A dataset whose metainfo names its own classes is held to those.
    heads = [head for head, _, _ in _head_classes(cfg.model, CLASS_HEADS[cfg.default_scope])]
    assert key in heads
    cfg.merge_from_dict({head: 2 for head in heads})
    loader = cfg.train_dataloader
    dataset = loader.dataset.dataset if 'dataset' in loader.dataset else loader.dataset
    dataset.metainfo = dict(classes=('cat', 'dog'))
    check_head_classes(cfg, ['train'])
    with pytest.raises(LaunchError, match=f'test_dataloader.dataset has {classes} classes'):
        check_head_classes(cfg, ['test'])
    # Two classes are named whole, with no '...' for more.
    cfg.merge_from_dict({head: 3 for head in heads})
    with pytest.raises(LaunchError, match=re.escape('has 2 classes (cat, dog); set it')):
        check_head_classes(cfg, ['train'])


def library_config(tmp_path, base):
    """A config that is one of mmdet's or mmseg's own (``'mmdet::...'``), as a user's
    config inheriting it is."""
    path = tmp_path / 'inherits.py'
    path.write_text(f'_base_ = [{base!r}]\n')
    return Config.fromfile(str(path))


def config_value(cfg, key):
    value = cfg
    for part in key.split('.'):
        value = value[int(part)] if isinstance(value, (list, tuple)) else value[part]
    return value


@pytest.mark.parametrize('base, key, num_classes', [
    # HTC's semantic branch segments the 183 COCO-stuff classes of an 80-class COCO dataset.
    ('mmdet::htc/htc_r50_fpn_1x_coco.py', 'model.roi_head.semantic_head.num_classes', 183),
    # STDC's detail head tells boundary pixels from the rest of 19-class Cityscapes.
    ('mmseg::stdc/stdc1_4xb12-80k_cityscapes-512x1024.py', 'model.auxiliary_head.2.num_classes',
     2),
    # Panoptic FPN's box and mask heads classify the 80 thing classes of 133 (things and stuff).
    ('mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py', 'model.roi_head.bbox_head.num_classes',
     80),
    # Grounding DINO's box head scores the 256 tokens of a text prompt naming the 80 classes.
    ('mmdet::mm_grounding_dino/coco/grounding_dino_swin-t_finetune_16xb4_1x_coco.py',
     'model.bbox_head.num_classes', 256),
])
def test_a_head_that_classifies_something_else_than_the_dataset_classes_is_let_be(
        tmp_path, base, key, num_classes):
    """The libraries' own configs train as they are; the check named these heads and asked
    for the dataset's number of classes, refusing the run."""
    from fastmim.engine.dataset_paths import check_head_classes
    cfg = library_config(tmp_path, base)
    assert config_value(cfg, key) == num_classes
    check_head_classes(cfg, ['train'])
    check_head_classes(cfg, ['val'])


@pytest.mark.parametrize('base, key, classes', [
    ('mmdet::htc/htc_r50_fpn_1x_coco.py', 'model.roi_head.bbox_head.1.num_classes', 80),
    ('mmdet::htc/htc_r50_fpn_1x_coco.py', 'model.roi_head.mask_head.2.num_classes', 80),
    ('mmseg::stdc/stdc1_4xb12-80k_cityscapes-512x1024.py', 'model.decode_head.num_classes', 19),
    ('mmseg::stdc/stdc1_4xb12-80k_cityscapes-512x1024.py', 'model.auxiliary_head.0.num_classes',
     19),
])
def test_a_class_head_of_those_configs_is_still_held_to_the_dataset(tmp_path, base, key,
                                                                     classes):
    from fastmim.engine.dataset_paths import check_head_classes
    cfg = library_config(tmp_path, base)
    cfg.merge_from_dict({key: 7})
    with pytest.raises(LaunchError, match=re.escape(
            f'{key}=7, but train_dataloader.dataset has {classes} classes (')):
        check_head_classes(cfg, ['train'])


def test_panoptic_box_heads_are_held_to_the_thing_classes(tmp_path):
    from fastmim.engine.dataset_paths import check_head_classes
    cfg = library_config(tmp_path, 'mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py')
    cfg.merge_from_dict({'model.roi_head.mask_head.num_classes': 133})
    with pytest.raises(LaunchError, match=re.escape(
            'model.roi_head.mask_head.num_classes=133, but train_dataloader.dataset has 80 '
            'thing classes (person, bicycle, car, ...); set it with --cfg-options '
            'model.roi_head.mask_head.num_classes=80')):
        check_head_classes(cfg, ['train'])


def test_train_names_the_head_in_one_line_before_building_the_model(ade20k_semantic, downstream,
                                                                    tmp_path):
    overrides = {**downstream.segmentation_overrides(ade20k_semantic, 2, 1),
                 'model.decode_head.num_classes': 20}
    work_dir = tmp_path / 'train'
    result = downstream.run_tool('train.py', [
        str(SEGMENTATION), '--work-dir', str(work_dir),
        '--cfg-options', *downstream.as_cfg_options(overrides)])
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        'error: LaunchError: model.decode_head.num_classes=20, but train_dataloader.dataset has '
        '150 classes (wall, building, sky, ...); set it with --cfg-options '
        'model.decode_head.num_classes=150')
    assert not work_dir.exists() or not any(work_dir.iterdir())


def panoptic(data):
    """COCO panoptic's layout: one annotation per image, its segments listed, no 'id' or
    'bbox' of its own."""
    data['annotations'] = [
        dict(image_id=image['id'], file_name=image['file_name'].replace('.jpg', '.png'),
             segments_info=[dict(id=1, category_id=1, bbox=[0, 0, 1, 1], area=1, iscrowd=0)])
        for image in data['images']]


@pytest.mark.parametrize('test_mode', [False, True])
def test_a_panoptic_file_is_named_as_no_instance_annotation_file(coco_instances, tmp_path,
                                                                test_mode):
    """A panoptic JSON given to the instance config ended in pycocotools' traceback
    ``KeyError: 'id'`` (createIndex), naming neither the file nor what is wrong with it."""
    ann_file = rewritten_coco(coco_instances, tmp_path, panoptic)
    with pytest.raises(ValueError, match=re.escape(
            f"{ann_file}: not a COCO instance-annotation file: an entry of its 'annotations' "
            "has no 'id'") + r'.*panoptic'):
        build_coco_split(ann_file, coco_instances['data_root'], test_mode)


def build_coco_split(ann_file, data_root, test_mode):
    """The detection config's test dataset, or its training one, on ``ann_file``."""
    if test_mode:
        return build_test_dataset(ann_file, data_root)
    return build_dataset(Config.fromfile(str(DETECTION)), 'fastmim.CheckedCocoDataset', ann_file,
                         data_root.rstrip('/'))


def build_test_dataset(ann_file, data_root):
    """The detection config's test dataset (its own pipeline) on ``ann_file``."""
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope
    dataset = Config.fromfile(str(DETECTION)).test_dataloader.dataset
    dataset.update(ann_file=str(ann_file), data_root=str(data_root).rstrip('/') + '/',
                   data_prefix=dict(img='images/'))
    init_default_scope('mmdet')
    return DATASETS.build(dataset)


def coco_metric_on(ann_file):
    """mmdet's CocoMetric of ``ann_file``, with the images and categories it will score."""
    from mmdet.datasets import CocoDataset
    from mmdet.evaluation import CocoMetric
    metric = CocoMetric(ann_file=str(ann_file), metric=['bbox', 'segm'])
    metric.dataset_meta = CocoDataset.METAINFO
    return metric


def test_an_evaluation_image_without_its_file_stops_the_test(coco_instances, tmp_path):
    """Skipped in a test set, an image still counts in CocoMetric, which scores every image
    of the annotation file: the AP came out lower with one warning among the log lines."""
    def lose_file(data):
        data['images'][0]['file_name'] = 'gone.jpg'
    ann_file = rewritten_coco(coco_instances, tmp_path, lose_file)
    data = json.loads(ann_file.read_text())
    lost = data['images'][0]['id']
    assert lost in coco_metric_on(ann_file)._coco_api.get_img_ids()
    with pytest.raises(ValueError, match=re.escape(
            f'{ann_file}: 1 of its 2 images have no file under '
            f'{coco_instances["data_root"]}images/: image {lost} '
            f'({coco_instances["data_root"]}images/gone.jpg); CocoMetric scores every image the '
            f'file lists')):
        build_test_dataset(ann_file, coco_instances['data_root'])


@pytest.mark.parametrize('test_mode', [False, True])
def test_a_file_whose_categories_miss_classes_of_the_dataset_is_named(coco_instances, tmp_path,
                                                                      test_mode):
    """mmdet and CocoMetric number the classes by the categories the file names, in the file's
    order: without 'bicycle', label 1 became 'car' and every later label moved, and CocoMetric
    stopped after the whole inference with 'IndexError: list index out of range' on a label
    past the file's categories."""
    def drop_bicycle(data):
        data['categories'] = [cat for cat in data['categories'] if cat['name'] != 'bicycle']
    ann_file = rewritten_coco(coco_instances, tmp_path, drop_bicycle)
    metric = coco_metric_on(ann_file)
    assert len(metric._coco_api.get_cat_ids(cat_names=metric.dataset_meta['classes'])) == 79
    with pytest.raises(ValueError, match=re.escape(
            f'{ann_file}: no category of the file is named after 1 of the 80 classes of the '
            f'dataset: bicycle; ')):
        build_coco_split(ann_file, coco_instances['data_root'], test_mode)


def test_annotations_of_unlisted_images_and_categories_are_named(coco_instances, tmp_path,
                                                                 monkeypatch):
    """mmdet reads the annotations image by image and class by class, so one whose image_id is
    not in 'images' or whose category_id is not in 'categories' (a converter's off-by-one) was
    left out without a word."""
    import fastmim.datasets.coco as checked_coco

    def break_two(data):
        data['annotations'][0]['image_id'] = 777
        data['annotations'][1]['category_id'] = 500
    ann_file = rewritten_coco(coco_instances, tmp_path, break_two)
    data = json.loads(ann_file.read_text())
    first, second = data['annotations'][:2]
    warnings = []
    monkeypatch.setattr(checked_coco, 'print_log',
                        lambda message, **kwargs: warnings.append(message))
    build_dataset(Config.fromfile(str(DETECTION)), 'fastmim.CheckedCocoDataset', ann_file,
                  coco_instances['data_root'].rstrip('/'))
    assert sorted(warnings) == sorted([
        f"{ann_file}: skipped 1 annotations of an image not listed in 'images': annotation "
        f"{first['id']} (image_id 777)",
        f"{ann_file}: skipped 1 annotations of a category not listed in 'categories': "
        f"annotation {second['id']} (category_id 500)",
    ])


def test_annotations_without_a_mask_are_named_when_the_pipeline_loads_masks(
        coco_instances, tmp_path, monkeypatch):
    """mmdet gives an annotation without 'segmentation' (or an empty one: a box-only file, a
    converter's gap) no mask, and the Mask R-CNN pipeline's LoadAnnotations(with_mask=True)
    stopped with KeyError: 'mask' in a dataloader worker when it reached the image."""
    import fastmim.datasets.coco as checked_coco

    def drop_masks(data):
        data['annotations'][0].pop('segmentation')
        data['annotations'][1]['segmentation'] = []
    ann_file = rewritten_coco(coco_instances, tmp_path, drop_masks)
    first, second = json.loads(ann_file.read_text())['annotations'][:2]
    names = {image['id']: image['file_name']
             for image in json.loads(ann_file.read_text())['images']}
    warnings = []
    monkeypatch.setattr(checked_coco, 'print_log',
                        lambda message, **kwargs: warnings.append(message))
    dataset = build_dataset(Config.fromfile(str(DETECTION)), 'fastmim.CheckedCocoDataset',
                            ann_file, coco_instances['data_root'].rstrip('/'))
    assert warnings == [
        f'{ann_file}: skipped 2 annotations without a segmentation (the pipeline loads masks): '
        f'annotation {first["id"]} of {names[first["image_id"]]}, annotation {second["id"]} of '
        f'{names[second["image_id"]]}']
    for index in range(len(dataset)):
        sample = dataset[index]
        assert len(sample['gt_masks']) == len(sample['gt_bboxes'])


def test_a_clean_test_set_loads_without_a_warning(coco_instances, monkeypatch):
    """The check for test images without their file logged 'skipped 0 images without their
    file: ' for every test set."""
    import fastmim.datasets.coco as checked_coco
    warnings = []
    monkeypatch.setattr(checked_coco, 'print_log',
                        lambda message, **kwargs: warnings.append(message))
    dataset = build_test_dataset(Path(coco_instances['data_root']) / coco_instances['val_ann_file'],
                                 coco_instances['data_root'])
    assert len(dataset) == 1 and warnings == []


@pytest.mark.parametrize('test_mode', [False, True])
def test_an_image_of_another_size_than_the_file_says_is_named(coco_instances, tmp_path,
                                                              test_mode):
    """Boxes, polygons and RLE masks are in the pixels of the annotation file's width and
    height. An image resized on disk afterwards failed in a dataloader worker with
    'cannot reshape array of size 1680000 into shape (187,160)' (RLE masks), or trained on
    misplaced polygon masks without a word."""
    root = Path(shutil.copytree(coco_instances['data_root'], tmp_path / 'coco'))
    ann_file = root / coco_instances['train_ann_file']
    image = json.loads(ann_file.read_text())['images'][0]
    path = root / 'images' / image['file_name']
    Image.open(path).resize((image['width'] // 2, image['height'] // 2)).save(path)
    if test_mode:
        dataset = build_test_dataset(ann_file, root)
    else:
        dataset = build_dataset(Config.fromfile(str(DETECTION)), 'fastmim.CheckedCocoDataset',
                                ann_file, root)
    index = next(index for index in range(len(dataset))
                 if dataset.get_data_info(index)['img_id'] == image['id'])
    with pytest.raises(ValueError, match=re.escape(
            f'{path}: image of {image["width"] // 2}x{image["height"] // 2} px, but {ann_file} '
            f'gives image {image["id"]} {image["width"]}x{image["height"]} px')):
        dataset[index]

    # Width and height swapped: what a photo annotated without its EXIF rotation gives.
    Image.open(path).resize((image['height'], image['width'])).save(path)
    with pytest.raises(ValueError, match=re.escape(
            f'{path}: image of {image["height"]}x{image["width"]} px (turned by its EXIF '
            f'orientation when loaded?), but {ann_file}')):
        dataset[index]


def coco_train_sample(coco, tmp_path):
    """A copy of the COCO data, its training dataset, and the path and index of an image."""
    root = Path(shutil.copytree(coco['data_root'], tmp_path / 'coco'))
    ann_file = root / coco['train_ann_file']
    image = json.loads(ann_file.read_text())['images'][0]
    dataset = build_dataset(Config.fromfile(str(DETECTION)), 'fastmim.CheckedCocoDataset',
                            ann_file, root)
    index = next(index for index in range(len(dataset))
                 if dataset.get_data_info(index)['img_id'] == image['id'])
    return dataset, root / 'images' / image['file_name'], index, ann_file, image['id']


def test_an_image_with_an_exif_orientation_is_named_once_in_a_warning(coco_instances, tmp_path):
    """mmcv loads the image upright, so its boxes must be drawn on the upright image; a flip or
    a half turn (or a square photo turned) passed the size check without a word."""
    from fastmim.datasets.coco import ExifOrientationWarning
    dataset, path, index, ann_file, img_id = coco_train_sample(coco_instances, tmp_path)
    image = Image.open(path)
    exif = image.getexif()
    exif[0x0112] = 3
    image.save(path, exif=exif.tobytes())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        dataset[index]
        dataset[index]
    assert [str(warning.message) for warning in caught
            if warning.category is ExifOrientationWarning] == [
        f'{path}: EXIF orientation 3: the image is used upright (turned as the tag says), so the '
        f'boxes and masks {ann_file} gives image {img_id} must be drawn on the upright image, '
        f'not on the pixels as stored']


def test_each_image_header_is_read_once_over_two_epochs(coco_instances, tmp_path,
                                                       opens_by_path):
    """The EXIF orientation check opened every image on every load of every epoch (118k header
    reads an epoch on COCO); one warning is still given per image with an orientation."""
    from fastmim.datasets.coco import ExifOrientationWarning
    dataset, path, _, ann_file, _ = coco_train_sample(coco_instances, tmp_path)
    image = Image.open(path)
    exif = image.getexif()
    exif[0x0112] = 3
    image.save(path, exif=exif.tobytes())
    images = [str(path.parent / image['file_name'])
              for image in json.loads(ann_file.read_text())['images']]
    opens_by_path.clear()  # the opens above
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(2):
            for index in range(len(dataset)):
                dataset[index]
    assert len(dataset) == len(images) == 2
    assert opens_by_path == Counter(images)
    assert [str(warning.message).split(':')[0] for warning in caught
            if warning.category is ExifOrientationWarning] == [str(path)]


@pytest.mark.parametrize('content, reason', [
    (b'', 'empty file'), (b'not an image', 'UnidentifiedImageError: cannot identify image file')
], ids=['empty', 'text'])
def test_an_image_that_does_not_decode_is_named_with_the_reason(coco_instances, tmp_path,
                                                                content, reason):
    """mmdet stopped with OpenCV's '!buf.empty()' assertion (an empty file) or mmcv's
    'failed to load image: <path>' without the reason."""
    dataset, path, index, _, _ = coco_train_sample(coco_instances, tmp_path)
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(f'{path}: {reason}')):
        dataset[index]
