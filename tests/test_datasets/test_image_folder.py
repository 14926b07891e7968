"""ImageFolder and ImageList on temporary trees of real photos (scikit-image's), including
broken and unusual files."""
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image
from skimage import data as skdata

from fastmim.datasets import ImageFolder, ImageList
from fastmim.datasets.transforms import UnreadableImageWarning, unreadable_image_count
from fastmim.datasets.utils import DatasetListingWarning
from fastmim.registry import DATASETS

PIPELINE = [dict(type='LoadImageRGB'), dict(type='PackInputs')]
ROOT = Path(__file__).resolve().parents[2]


def save_photo(array, path, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return str(path)


@pytest.fixture(scope='module')
def photos():
    # Real photos, shrunk to keep decoding fast.
    def small(array):
        image = Image.fromarray(array)
        return np.asarray(image.resize((image.width // 4, image.height // 4)))

    return dict(astronaut=small(skdata.astronaut()), coffee=small(skdata.coffee()),
                chelsea=small(skdata.chelsea()), rocket=small(skdata.rocket()),
                camera=small(skdata.camera()))


@pytest.fixture
def imagenet_tree(tmp_path, photos):
    """<root>/train/<class>/ with JPEG and PNG files, upper-case extensions, a non-image."""
    train = tmp_path / 'train'
    files = {
        'n02_cat': [save_photo(photos['chelsea'], train / 'n02_cat' / 'chelsea.JPEG', quality=90),
                    save_photo(photos['coffee'], train / 'n02_cat' / 'sub' / 'coffee.png')],
        'n01_person': [save_photo(photos['astronaut'], train / 'n01_person' / 'astro.jpg')],
        'n03_rocket': [save_photo(photos['rocket'], train / 'n03_rocket' / 'rocket.Png')],
    }
    (train / 'n01_person' / 'notes.txt').write_text('not an image')
    return tmp_path, files


def test_labelled_folder_uses_sorted_class_names(imagenet_tree):
    root, files = imagenet_tree
    dataset = ImageFolder(str(root), data_prefix='train', with_label=True, pipeline=PIPELINE)
    assert dataset.metainfo['classes'] == ('n01_person', 'n02_cat', 'n03_rocket')
    assert len(dataset) == 4
    expected = {path: label for label, name in enumerate(sorted(files)) for path in files[name]}
    for index in range(len(dataset)):
        sample = dataset[index]
        path = sample['data_samples'].img_path
        assert sample['data_samples'].gt_label.tolist() == [expected.pop(path)]
        assert sample['inputs'].dtype == torch.uint8 and sample['inputs'].shape[0] == 3
    assert not expected


def test_given_class_names_are_kept_as_mmpretrain_keeps_them(imagenet_tree):
    """mmpretrain's CustomDataset keeps ``metainfo=dict(classes=...)`` of one name per class
    folder (its ImageNet names the wnid folders 'tench', ...); they were replaced by the folder
    names. The labels stay the sorted folders' positions."""
    root, _ = imagenet_tree
    names = ('person', 'cat', 'rocket')
    named = ImageFolder(str(root), with_label=True, metainfo=dict(classes=names))
    folders = ImageFolder(str(root), with_label=True)
    assert named.metainfo['classes'] == names
    assert [named.get_data_info(i) == folders.get_data_info(i) for i in range(4)] == [True] * 4
    listed = ImageFolder(str(root), with_label=True,
                         metainfo=dict(classes=['n01_person', 'n02_cat', 'n03_rocket']))
    assert listed.metainfo['classes'] == ('n01_person', 'n02_cat', 'n03_rocket')


@pytest.mark.parametrize('classes, message', [
    (('person', 'cat'), r"2 names \(person, cat\), 3 class folders \(n01_person, n02_cat, "
                        r"n03_rocket\)"),
    (('n01_person', 'n02_cat', 'n04_dog'), r"names that are no folder: \['n04_dog'\], "
                                           r"folders not named: \['n03_rocket'\]"),
    (('n02_cat', 'n01_person', 'n03_rocket'), r"another order: name 0 is 'n02_cat', folder 0 "
                                              r"is 'n01_person'"),
])
def test_given_class_names_that_disagree_with_the_folders_are_refused(classes, message,
                                                                      imagenet_tree):
    """mmpretrain asserts only the count, and labels by sorted folder whatever the names say:
    a list of folder names in another order named every class wrongly, without a word."""
    root, _ = imagenet_tree
    with pytest.raises(ValueError, match=r"ImageFolder: metainfo\['classes'\] disagrees with "
                                         r"the class folders of '.*train': .*" + message):
        ImageFolder(str(root), with_label=True, metainfo=dict(classes=classes))


def test_class_folders_named_by_numbers_out_of_numeric_order_are_named(tmp_path, photos):
    """Folders '0'..'10' are labelled in text order (torchvision's, mmpretrain's): '10' is
    label 2. Where the number is meant as the label (ImageNetV2's layout, the labels of a
    list file used for the other split) every class from '10' on was scored against another
    one, without a word."""
    for number in range(11):
        save_photo(photos['camera'][:32, :32], tmp_path / str(number) / 'a.png')
    with pytest.warns(DatasetListingWarning, match=r"11 class folders of '.*' are named by "
                                                   r"numbers.*folder '10' is label 2, not 10"):
        dataset = ImageFolder(str(tmp_path), data_prefix='', with_label=True)
    assert dataset.metainfo['classes'][:3] == ('0', '1', '10')  # torchvision's order, kept
    for number in range(11):
        (tmp_path / str(number)).rename(tmp_path / f'{number:02d}')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        ImageFolder(str(tmp_path), data_prefix='', with_label=True)  # '00'..'10': in order


def test_image_list_labels_beyond_its_given_class_names_name_the_line(imagenet_tree):
    """A list with class names (mmpretrain's CustomDataset(ann_file, classes=...)) whose
    labels go past them: the name of such a label did not exist, found by no check."""
    root, _ = imagenet_tree
    ann = write_list(root / 'train.txt', ['n02_cat/chelsea.JPEG 1', 'n03_rocket/rocket.Png 3',
                                          'n01_person/astro.jpg 0'])
    with pytest.raises(ValueError, match=re.escape(
            f"{ann}, line 2: label 3, but metainfo['classes'] names 3 classes (labels 0-2)")):
        ImageList(ann, data_root=str(root / 'train'), with_label=True,
                  metainfo=dict(classes=('person', 'cat', 'rocket')))
    named = ImageList(ann, data_root=str(root / 'train'), with_label=True,
                      metainfo=dict(classes=('person', 'cat', 'rocket', 'dog')))
    assert named.metainfo['classes'] == ('person', 'cat', 'rocket', 'dog')


def test_unlabelled_folder_and_flat_folder(imagenet_tree, photos, tmp_path):
    root, files = imagenet_tree
    dataset = ImageFolder(str(root), data_prefix='train', pipeline=PIPELINE)
    paths = {dataset[i]['data_samples'].img_path for i in range(len(dataset))}
    assert paths == {path for group in files.values() for path in group}
    assert 'gt_label' not in dataset[0]['data_samples']

    flat = tmp_path / 'flat'
    saved = {name: save_photo(photos[name], flat / f'{name}.webp', lossless=True)
             for name in ('camera', 'coffee')}
    flat_dataset = ImageFolder(str(flat), data_prefix='', pipeline=PIPELINE)
    inputs = {s['data_samples'].img_path: s['inputs'] for s in (flat_dataset[0], flat_dataset[1])}
    assert set(inputs) == set(saved.values())
    gray = inputs[saved['camera']]  # a grayscale photo comes out as three equal channels
    assert gray.shape[0] == 3 and torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_lists_the_image_files_torchvision_and_mmpretrain_list(tmp_path, photos):
    """Every extension torchvision's ImageFolder takes (a superset of mmpretrain's), in any
    case, with its labels: a class of TIFF scans or PPM frames beside JPEGs was left out."""
    from torchvision.datasets import ImageFolder as TorchvisionImageFolder
    for name in ('a.JPG', 'b.jpeg', 'c.png', 'd.ppm', 'e.bmp', 'f.pgm', 'g.TIF', 'h.tiff',
                 'i.webp'):
        save_photo(photos['camera'], tmp_path / 'n01_gray' / name)
        save_photo(photos['coffee'], tmp_path / 'n02_rgb' / name.replace('pgm', 'ppm'))
    (tmp_path / 'n02_rgb' / 'notes.txt').write_text('not an image')
    expected = TorchvisionImageFolder(str(tmp_path)).samples
    dataset = ImageFolder(str(tmp_path), data_prefix='', with_label=True, pipeline=PIPELINE)
    assert [(info['img_path'], info['gt_label']) for info in dataset.load_data_list()] == \
        expected
    assert len(expected) == 18
    unlabelled = ImageFolder(str(tmp_path), data_prefix='', pipeline=PIPELINE)
    assert [info['img_path'] for info in unlabelled.load_data_list()] == \
        [path for path, _ in expected]
    gray = unlabelled[6]['inputs']  # g.TIF: decoded like the others
    assert gray.shape[0] == 3 and torch.equal(gray[0], gray[2])


def test_built_from_the_registry_with_a_dict_prefix(imagenet_tree):
    root, _ = imagenet_tree
    dataset = DATASETS.build(dict(type='ImageFolder', data_root=str(root),
                                  data_prefix=dict(img_path='train'), extensions=('png', )))
    assert len(dataset) == 2  # coffee.png and rocket.Png


def test_folder_problems_raise_at_construction_naming_the_path(tmp_path, photos):
    missing = tmp_path / 'nowhere'
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing / 'train'))):
        ImageFolder(str(missing))

    empty = tmp_path / 'empty'
    (empty / 'train' / 'some_class').mkdir(parents=True)
    (empty / 'train' / 'readme.txt').write_text('no images here')
    with pytest.raises(ValueError, match=re.escape(str(empty / 'train'))):
        ImageFolder(str(empty))
    with pytest.raises(ValueError, match=re.escape(str(empty / 'train' / 'some_class'))):
        ImageFolder(str(empty), with_label=True)

    flat = tmp_path / 'flat'
    save_photo(photos['camera'], flat / 'train' / 'camera.png')
    with pytest.raises(ValueError, match='one sub-folder per class'):
        ImageFolder(str(flat), with_label=True)


def test_unusual_modes_become_rgb_and_corrupt_files_are_skipped(tmp_path, photos):
    folder = tmp_path / 'mixed'
    rgb = Image.fromarray(photos['astronaut'])
    alpha = np.full(photos['coffee'].shape[:2], 128, np.uint8)
    images = {
        'gray.png': Image.fromarray(photos['camera']),
        'cmyk.jpg': rgb.convert('CMYK'),
        'gray16.png': Image.fromarray(photos['camera'].astype(np.uint16) * 257),
        'rgba.png': Image.fromarray(np.dstack([photos['coffee'], alpha])),
        'palette.png': rgb.quantize(32),
    }
    folder.mkdir()
    good = []
    for name, image in images.items():
        image.save(folder / name)
        good.append(str(folder / name))
    assert [Image.open(path).mode for path in good] == ['L', 'CMYK', 'I;16', 'RGBA', 'P']
    jpeg_bytes = (folder / 'cmyk.jpg').read_bytes()
    (folder / 'truncated.jpg').write_bytes(jpeg_bytes[:len(jpeg_bytes) // 3])
    (folder / 'random.jpg').write_bytes(np.random.default_rng(1).bytes(2048))
    broken = {str(folder / 'truncated.jpg'), str(folder / 'random.jpg')}

    dataset = ImageFolder(str(folder), data_prefix='', pipeline=PIPELINE)
    assert len(dataset) == 7
    before = unreadable_image_count()
    with pytest.warns(UnreadableImageWarning) as record:
        yielded = [dataset[i] for i in range(len(dataset))]
        [dataset[i] for i in range(len(dataset))]  # the next epoch: skipped again, silently
    # Each broken index is counted; a refetch may land on the other broken file once more.
    assert unreadable_image_count() >= before + 2
    # one warning per broken file, however often it is skipped
    warned = [path for w in record for path in broken if path in str(w.message)]
    assert sorted(warned) == sorted(broken)
    # Broken indices are replaced by good images; every good image is yielded.
    assert {s['data_samples'].img_path for s in yielded} == set(good)
    for sample in yielded:
        assert sample['inputs'].dtype == torch.uint8 and sample['inputs'].shape[0] == 3


def write_list(path, lines):
    path.write_text('\n'.join(lines) + '\n')
    return str(path)


def test_image_list_with_and_without_labels(imagenet_tree):
    root, files = imagenet_tree
    lines = ['n02_cat/chelsea.JPEG 1', '', 'n03_rocket/rocket.Png 2', 'n01_person/astro.jpg 0']
    ann = write_list(root / 'train.txt', lines)
    labelled = ImageList('train.txt', data_root=str(root), data_prefix='train', with_label=True,
                         pipeline=PIPELINE)
    assert len(labelled) == 3
    assert [labelled[i]['data_samples'].gt_label.item() for i in range(3)] == [1, 2, 0]
    assert labelled[1]['data_samples'].img_path == files['n03_rocket'][0]
    assert labelled.metainfo['max_label'] == 2  # DatasetClassesCheckHook compares num_classes

    unlabelled = ImageList(ann, data_root=str(root / 'train'), pipeline=PIPELINE)
    sample = unlabelled[0]
    assert 'gt_label' not in sample['data_samples'] and sample['inputs'].shape[0] == 3


@pytest.mark.parametrize('bad_line, with_label, message', [
    ('n01_person/astro.jpg', True, "expected '<path> <label>'"),
    ('n01_person/astro.jpg 1 2', False, 'ends in 2 integers (1 2): a multi-label line?'),
    ('n01_person/astro.jpg 1 2', True, 'ends in 2 integers (1 2): a multi-label line?'),
    ('n01 person/astro 2.jpg 0 1\t2', True, 'ends in 3 integers (0 1 2)'),
    ('17 0 1', False, 'ends in 2 integers (0 1)'),
    ('n01_person/astro.jpg cat', False, 'non-negative integer'),
    ('n01_person/astro.jpg -1', True, 'non-negative integer'),
    ('n01_person/astro.jpg -1', False, 'non-negative integer'),
    ('n01_person/astro.jpg 1,2', False, "non-negative integer, got '1,2'"),
    # A spaced path without its label: '1.jpg' is no label, not part of the path.
    ('my photos/img 1.jpg', True, "non-negative integer, got '1.jpg'"),
    ('n01_person/astro.jpg\xa00', True, "expected '<path> <label>'"),  # no-break space
    # A list saved as CSV by a spreadsheet: the label after a comma.
    ('n01_person/astro.jpg,0', True, "expected '<path> <label>', got 'n01_person/astro.jpg,0'; "
                                     "'n01_person/astro.jpg,0' ends in ',0', as a line of a CSV "
                                     'file does'),
    ('my photos/img 1.jpg,0', True, "got '1.jpg,0'"),
    ('my photos/img 1.jpg,0', True, "ends in ',0', as a line of a CSV file does"),
    ('n01_person/astro.jpg 1,2', False, "got '1,2'"),
])
def test_image_list_malformed_line_names_file_and_line(bad_line, with_label, message,
                                                       imagenet_tree):
    root, _ = imagenet_tree
    ann = write_list(root / 'bad.txt', ['n02_cat/chelsea.JPEG 1', bad_line])
    with pytest.raises(ValueError, match=re.escape(f'{ann}, line 2')) as error:
        ImageList(ann, data_root=str(root / 'train'), with_label=with_label)
    assert message in str(error.value)


def spaced_tree(tmp_path, photos):
    """Web-scraped and hand-named files: spaces (doubled too) in folder and file names."""
    names = {'my photos/img 1.png': 'astronaut', 'my photos/cat  two.png': 'chelsea',
             'n02 cat/2024 05/a b.png': 'coffee', 'rocket.png': 'rocket'}
    for name, photo in names.items():
        save_photo(photos[photo], tmp_path / 'train' / name)
    return names


def test_image_list_reads_paths_with_spaces_as_mmpretrain_does(tmp_path, photos):
    """Spaces in paths were refused ('paths without spaces'); mmpretrain's CustomDataset reads
    a labelled line as ``line.strip().rsplit(' ', 1)``: the label is the last field and the
    path all before it, so its lists of spaced names did not load here."""
    names = spaced_tree(tmp_path, photos)
    lines = ['my photos/img 1.png 3', '  my photos/cat  two.png 0  ', 'n02 cat/2024 05/a b.png 12',
             'rocket.png 7']
    # mmpretrain's reading of each line, worked out by hand (the ImageNet form is the last).
    expected = [('my photos/img 1.png', 3), ('my photos/cat  two.png', 0),
                ('n02 cat/2024 05/a b.png', 12), ('rocket.png', 7)]
    assert [tuple(line.strip().rsplit(' ', 1)) for line in lines] == \
        [(path, str(label)) for path, label in expected]
    write_list(tmp_path / 'train.txt', lines)
    dataset = ImageList('train.txt', data_root=str(tmp_path), data_prefix='train',
                        with_label=True, pipeline=PIPELINE)
    assert [(info['img_path'], info['gt_label']) for info in dataset.load_data_list()] == \
        [(str(tmp_path / 'train' / path), label) for path, label in expected]
    assert dataset.metainfo['max_label'] == 12
    for index, (path, label) in enumerate(expected):
        sample = dataset[index]
        assert sample['data_samples'].gt_label.item() == label
        assert np.array_equal(sample['inputs'].permute(1, 2, 0).numpy(), photos[names[path]])

    # Tabs (as a spreadsheet saves) or several spaces between path and label are accepted too,
    # and a file named by a number alone is not taken for a label.
    save_photo(photos['camera'], tmp_path / 'train' / '0042', format='PNG')
    ann = write_list(tmp_path / 'tabs.txt', ['my photos/img 1.png\t3', 'rocket.png   7',
                                             '0042 5'])
    tabbed = ImageList(ann, data_root=str(tmp_path / 'train'), with_label=True)
    assert [(info['img_path'], info['gt_label']) for info in tabbed.load_data_list()] == [
        (str(tmp_path / 'train' / 'my photos' / 'img 1.png'), 3),
        (str(tmp_path / 'train' / 'rocket.png'), 7), (str(tmp_path / 'train' / '0042'), 5)]


def test_image_list_without_labels_reads_spaced_paths(tmp_path, photos):
    """With ``with_label=False`` a line is a path, or a path and a label when its last field is
    all digits: a labelled list still serves pre-training, and names with spaces load."""
    names = spaced_tree(tmp_path, photos)
    ann = write_list(tmp_path / 'train.txt', ['my photos/img 1.png', 'my photos/cat  two.png 0',
                                              ' n02 cat/2024 05/a b.png ', 'rocket.png'])
    dataset = ImageList(ann, data_root=str(tmp_path / 'train'), pipeline=PIPELINE)
    paths = ['my photos/img 1.png', 'my photos/cat  two.png', 'n02 cat/2024 05/a b.png',
             'rocket.png']
    assert [info['img_path'] for info in dataset.load_data_list()] == \
        [str(tmp_path / 'train' / path) for path in paths]
    for index, path in enumerate(paths):
        sample = dataset[index]
        assert 'gt_label' not in sample['data_samples']
        assert np.array_equal(sample['inputs'].permute(1, 2, 0).numpy(), photos[names[path]])


def test_image_list_spaced_path_with_windows_separators_says_so(tmp_path, photos):
    spaced_tree(tmp_path, photos)
    ann = write_list(tmp_path / 'train.txt', ['my photos\\img 1.png 3'])
    with pytest.raises(FileNotFoundError, match=re.escape(
            "photos\\\\img 1.png', does not exist; its path has Windows separators")):
        ImageList(ann, data_root=str(tmp_path / 'train'), with_label=True)


def test_image_list_without_a_list_file_says_what_to_use(imagenet_tree):
    """mmpretrain's CustomDataset scans the folder when ann_file is '' (or a folder was meant):
    the error said the list file '' or the folder 'does not exist'."""
    root, _ = imagenet_tree
    with pytest.raises(ValueError, match=re.escape(
            "ImageList: ann_file is empty; ImageList reads a list file. For a folder of images "
            "with no list (mmpretrain's CustomDataset with ann_file='') use "
            "dict(type='ImageFolder'")):
        ImageList('', data_root=str(root))
    with pytest.raises(IsADirectoryError, match=re.escape(
            f"ann_file {str(root / 'train')!r} is a folder, not a list file; for a folder of "
            f"images use ImageFolder")):
        ImageList('train', data_root=str(root))


@pytest.mark.parametrize('header, problem', [
    ('filename label', "the label after 'filename' must be a non-negative integer, got 'label'; "
                       'is line 1 a header (column names)? Remove it'),
    ('path,label', "expected '<path> <label>', got 'path,label'; is line 1 a header (column "
                   'names)? Remove it'),
])
def test_a_header_of_a_labelled_list_is_named(header, problem, imagenet_tree):
    """A labelled list's header line got no hint: 'path,label' was only "expected '<path>
    <label>'"."""
    root, _ = imagenet_tree
    ann = write_list(root / 'train.txt', [header, 'n02_cat/chelsea.JPEG 1'])
    with pytest.raises(ValueError, match=re.escape(f'{ann}, line 1: {problem}')):
        ImageList(ann, data_root=str(root / 'train'), with_label=True)
    # An image's line is no header, even with a CSV label.
    ann = write_list(root / 'csv.txt', ['n02_cat/chelsea.JPEG,1'])
    with pytest.raises(ValueError) as error:
        ImageList(ann, data_root=str(root / 'train'), with_label=True)
    assert 'column names' not in str(error.value)


@pytest.mark.parametrize('lines, with_label, problem', [
    # A class folder listed instead of its images: it exists, so 'does not exist' misled.
    (['n02_cat 1', 'n01_person 0'], True, 'is a folder, not an image file: list the images in it'),
    # A spreadsheet's CSV export: quotes around paths, or the label after a comma.
    (['"n02_cat/chelsea.JPEG" 1', '"n01_person/astro.jpg" 0'], True,
     'does not exist; its path is in quotes ("): write it bare'),
    (["'n02 cat/chelsea.JPEG'"], False, "does not exist; its path is in quotes (')"),
    (['n02_cat/chelsea.JPEG,1', 'n01_person/astro.jpg,0'], False,
     "does not exist; 'n02_cat/chelsea.JPEG,1' ends in ',1', as a line of a CSV file does: "
     'separate path and label with a space or a tab'),
    (['n02_cat/chelsea.JPEG; 1', 'n01_person/astro.jpg; 0'], True,
     "does not exist; 'n02_cat/chelsea.JPEG;' ends in ';'"),
    # A CSV export with its header row: neither hint was given, only data_root's.
    (['path,label', 'n02_cat/chelsea.JPEG,1'], False,
     "does not exist: is line 1 a header? The line after it: 'n02_cat/chelsea.JPEG,1' ends in "
     "',1', as a line of a CSV file does: separate path and label with a space or a tab"),
    # Column names (pandas' to_csv(sep=' ') writes them) or a comment before existing images.
    (['path label', 'n02_cat/chelsea.JPEG 1'], False,
     'does not exist, though the image on line 2 does: is line 1 a header or a comment? Remove '
     'it'),
    (['# ImageNet train split', '', 'n02_cat/chelsea.JPEG'], False,
     'though the image on line 3 does: is line 1 a header or a comment?'),
    # An image of the list that is gone, not a header: the name is an image's.
    (['n02_cat/gone.jpg 1', 'n02_cat/chelsea.JPEG 1'], True,
     'does not exist, though the image on line 2 does: moved or deleted? Remove line 1 or put '
     'the image back'),
])
def test_image_list_first_image_problems_name_their_cause(lines, with_label, problem,
                                                          imagenet_tree):
    """These ended in 'does not exist; check data_root and data_prefix', though both were
    right."""
    root, _ = imagenet_tree
    ann = write_list(root / 'train.txt', lines)
    with pytest.raises(FileNotFoundError, match=re.escape(f'the first image of {ann!r}, ')) \
            as error:
        ImageList(ann, data_root=str(root / 'train'), with_label=with_label)
    assert f"{root / 'train'}/" in str(error.value)  # the image, with the root
    assert problem in str(error.value)


def test_image_list_missing_file_or_wrong_root(imagenet_tree):
    root, _ = imagenet_tree
    with pytest.raises(FileNotFoundError, match=re.escape(str(root / 'absent.txt'))):
        ImageList('absent.txt', data_root=str(root))
    ann = write_list(root / 'train.txt', ['n02_cat/chelsea.JPEG 1'])
    with pytest.raises(FileNotFoundError, match='n02_cat/chelsea.JPEG'):
        ImageList(ann, data_root=str(root))  # forgot data_prefix='train'
    empty = write_list(root / 'empty.txt', [''])
    with pytest.raises(ValueError, match='names no images'):
        ImageList(empty, data_root=str(root))


def unreadable_dataset(kind, tmp_path, names, **kwargs):
    """An ImageFolder or ImageList of empty files ``names``, and where it reads them from."""
    folder = tmp_path / 'train'
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b'')
    if kind == 'folder':
        return ImageFolder(str(tmp_path), pipeline=PIPELINE, **kwargs), folder
    write_list(tmp_path / 'list.txt', names)
    return (ImageList('list.txt', data_root=str(tmp_path), data_prefix='train',
                      pipeline=PIPELINE, **kwargs), tmp_path / 'list.txt')


@pytest.mark.parametrize('kind', ['folder', 'list'])
def test_a_dataset_of_unreadable_files_ends_in_one_error_naming_it(kind, tmp_path):
    """mmengine re-draws another index max_refetch times, then raised a bare ``Exception``
    ('Cannot find valid image after 1000!'), a traceback under tools/train.py. A folder of 4
    broken files gave ~1,000 warnings of the same 4 before it: the dataset now stops once
    every one of its files was skipped, each named in one warning."""
    names = ['a.jpg', 'b.jpg', 'c.jpg', 'd.jpg']
    dataset, where = unreadable_dataset(kind, tmp_path, names)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        with pytest.raises(ValueError) as error:
            dataset[0]
    message = str(error.value)
    assert message.startswith(f"{type(dataset).__name__} ('{where}'): no readable image: all 4 "
                              'of its files were skipped as unreadable (')
    assert sum(str(where.parent / 'train' / name) in message for name in names) == 3  # and 1 more
    warned = sorted(str(w.message).split(' (')[0] for w in record
                    if issubclass(w.category, UnreadableImageWarning))
    assert warned == [f'skipped unreadable image {where.parent / "train" / name}'
                      for name in names]


@pytest.mark.parametrize('kind', ['folder', 'list'])
def test_mmengines_refetch_bound_is_named_when_it_comes_first(kind, tmp_path):
    """Two tries cannot meet three broken files: mmengine's bound ends the search."""
    dataset, where = unreadable_dataset(kind, tmp_path, ['a.jpg', 'b.jpg', 'c.jpg'],
                                        max_refetch=1)
    with pytest.warns(UnreadableImageWarning):
        with pytest.raises(ValueError, match=re.escape(f"{type(dataset).__name__} ('{where}'): "
                                                       'no readable image in 2 tries')):
            dataset[0]


def test_each_dataloader_worker_stops_with_the_one_line_error(tmp_path):
    """With several workers each process warns of each file once and ends in the same error,
    which the DataLoader passes on as a ValueError."""
    from torch.utils.data import DataLoader
    dataset, where = unreadable_dataset('folder', tmp_path, ['a.jpg', 'b.jpg', 'c.jpg'])
    loader = DataLoader(dataset, batch_size=1, num_workers=2, collate_fn=lambda batch: batch)
    with pytest.raises(ValueError, match=re.escape(
            f"ImageFolder ('{where}'): no readable image: all 3 of its files were skipped")):
        next(iter(loader))


def truncate_one_image(imagenet_tree):
    root, files = imagenet_tree
    broken = files['n02_cat'][0]
    with open(broken, 'r+b') as file:
        file.truncate(600)  # the header is intact, the pixels are not
    return root, broken


@pytest.mark.parametrize('kind', ['folder', 'list'])
def test_an_evaluation_dataset_names_an_unreadable_image_instead_of_replacing_it(
        kind, imagenet_tree):
    """With test_mode=True mmengine does not draw another index (the metric would count that
    image twice and this one not at all), but raised a bare ``Exception('Test time pipline
    should not get `None` data_sample')`` that named neither the file nor what was wrong."""
    root, broken = truncate_one_image(imagenet_tree)
    if kind == 'folder':
        dataset = ImageFolder(str(root), with_label=True, pipeline=PIPELINE, test_mode=True)
    else:
        write_list(root / 'val.txt', ['n01_person/astro.jpg 0', 'n02_cat/chelsea.JPEG 1'])
        dataset = ImageList('val.txt', data_root=str(root), data_prefix='train',
                            pipeline=PIPELINE, test_mode=True)
    index = [info['img_path'] for info in dataset.load_data_list()].index(broken)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        with pytest.raises(ValueError, match=re.escape(f"sample {index}, '{broken}': OSError: ")
                           + '.*[Tt]runcated'):
            dataset[index]
    with pytest.raises(ValueError, match='replace or remove the file .*--resume'):
        dataset[index]  # a validation inside training: what to do after fixing it
    # only the error: a warning 'skipped' before it said the opposite
    assert not [w for w in record if issubclass(w.category, UnreadableImageWarning)]


def test_the_evaluation_datasets_of_the_recipes_do_not_replace_unreadable_images(
        imagenet_tree):
    """The fine-tuning recipes' validation (and test) set: an unreadable image was evaluated as
    a copy of a random other one, with its label, and only a warning said so."""
    root, broken = truncate_one_image(imagenet_tree)
    cfg = Config.fromfile(str(ROOT / 'configs' / '_base_' / 'datasets' / 'imagenet_ft_224.py'))
    dataset_cfg = dict(cfg.val_dataloader.dataset, data_root=str(root), data_prefix='train')
    dataset = DATASETS.build(dataset_cfg)
    index = [info['img_path'] for info in dataset.load_data_list()].index(broken)
    with warnings.catch_warnings():
        warnings.simplefilter('error', UnreadableImageWarning)  # the error only
        with pytest.raises(ValueError, match=re.escape(broken)):
            dataset[index]


def test_image_list_from_windows_tools_reads_as_written(imagenet_tree):
    """Notepad and Excel save a UTF-8 BOM and CRLF line ends: the BOM became part of the first
    path, and the error blamed data_root."""
    root, files = imagenet_tree
    ann = root / 'train.txt'
    ann.write_bytes(b'\xef\xbb\xbfn02_cat/chelsea.JPEG 1\r\nn01_person/astro.jpg 0\r\n')
    dataset = ImageList(str(ann), data_root=str(root / 'train'), with_label=True)
    assert [(info['img_path'], info['gt_label']) for info in dataset.load_data_list()] == [
        (files['n02_cat'][0], 1), (files['n01_person'][0], 0)]


@pytest.mark.parametrize('end', ['\n', '\r\n', '\r'])
def test_image_list_not_in_utf8_names_file_and_line(end, imagenet_tree):
    """A list saved as Latin-1 / cp1252 raised a bare UnicodeDecodeError (byte offset within a
    read chunk, no file, no line). With old Mac line ends (a lone CR) the error said line 1."""
    root, _ = imagenet_tree
    ann = root / 'train.txt'
    cp1252 = end.join(['n02_cat/chelsea.JPEG 1', '', 'n01_person/caf\xe9.jpg 0', '']).encode(
        'cp1252')
    for bom in (b'', b'\xef\xbb\xbf'):
        ann.write_bytes(bom + cp1252)
        with pytest.raises(ValueError, match=re.escape(f'{ann}, line 3: not UTF-8 (byte 0xe9)')):
            ImageList(str(ann), data_root=str(root / 'train'))


@pytest.mark.parametrize('with_label', [False, True])
def test_a_symlink_loop_in_the_folder_is_named_not_walked(with_label, imagenet_tree):
    """os.walk(followlinks=True) follows a link back up until the path is too long: a link
    ``n01_person/up -> ..`` listed the whole tree about 40 times over, without a word."""
    root, _ = imagenet_tree
    link = root / 'train' / 'n01_person' / 'up'
    link.symlink_to('..')
    with pytest.raises(ValueError, match=re.escape(f"'{link}") + ".* again"):
        ImageFolder(str(root), with_label=with_label)


@pytest.mark.parametrize('link_name, target', [('n04_person_too', 'n01_person'),
                                               ('n00_cat_sub', 'n02_cat/sub')])
def test_two_classes_linked_to_one_folder_are_named(link_name, target, imagenet_tree):
    """Each class folder was walked on its own, so a class linked to another class's folder
    (or to a folder inside it) listed the same images under two labels without a word, where
    the unlabelled listing of the same tree raises."""
    root, _ = imagenet_tree
    link = root / 'train' / link_name
    link.symlink_to(root / 'train' / target)
    with pytest.raises(ValueError, match=re.escape(f"'{root / 'train'}/") + ".* again"):
        ImageFolder(str(root), with_label=True)
    with pytest.raises(ValueError, match='again'):
        ImageFolder(str(root), with_label=False)


def test_symlinked_class_folders_are_followed(imagenet_tree, tmp_path_factory):
    root, files = imagenet_tree
    elsewhere = tmp_path_factory.mktemp('other_disk') / 'n02_cat'
    (root / 'train' / 'n02_cat').rename(elsewhere)
    (root / 'train' / 'n02_cat').symlink_to(elsewhere)
    dataset = ImageFolder(str(root), with_label=True)
    assert dataset.metainfo['classes'] == ('n01_person', 'n02_cat', 'n03_rocket')
    assert [info['gt_label'] for info in dataset.load_data_list()] == [0, 1, 1, 2]


def test_a_class_folder_linked_to_a_missing_disk_is_named(imagenet_tree):
    """A broken link is no folder to os.scandir: the class was dropped without a word and every
    later class got the label of the one before it."""
    root, _ = imagenet_tree
    link = root / 'train' / 'n02_bird'
    link.symlink_to(root / 'unmounted' / 'n02_bird')
    with pytest.raises(FileNotFoundError,
                       match=re.escape(f"'{link}' -> '{root / 'unmounted'}")):
        ImageFolder(str(root), with_label=True)


@pytest.mark.parametrize('with_label', [False, True])
def test_a_folder_that_cannot_be_listed_is_named(with_label, imagenet_tree, monkeypatch):
    """os.walk skips a folder it cannot list (permissions on a shared disk): its images were
    left out without a word, or its class called 'without images'. (Simulated: the tests may
    run as root, who may list anything.)"""
    root, _ = imagenet_tree
    locked = str(root / 'train' / 'n02_cat' / 'sub')
    scandir = os.scandir

    def scandir_except_locked(path='.'):
        if str(path) == locked:
            raise PermissionError(13, 'Permission denied', locked)
        return scandir(path)

    monkeypatch.setattr(os, 'scandir', scandir_except_locked)
    with pytest.raises(PermissionError, match=re.escape(locked)):
        ImageFolder(str(root), with_label=with_label)


def test_image_list_takes_mmpretrain_s_prefix_dict(imagenet_tree):
    """ImageFolder took ``data_prefix=dict(img_path='train')`` (mmpretrain's form), ImageList
    failed in mmengine with 'prefix should be a string', naming no setting."""
    root, files = imagenet_tree
    ann = write_list(root / 'train.txt', ['n02_cat/chelsea.JPEG 1'])
    dataset = DATASETS.build(dict(type='ImageList', ann_file=ann, data_root=str(root),
                                  data_prefix=dict(img_path='train')))
    assert dataset.get_data_info(0)['img_path'] == files['n02_cat'][0]
    with pytest.raises(ValueError, match=re.escape("data_prefix must be a folder name or "
                                                   "dict(img_path=...), got {'img': 'train'}")):
        ImageList(ann, data_root=str(root), data_prefix=dict(img='train'))


def test_image_list_with_windows_separators_says_so(imagenet_tree):
    """A list written on Windows (os.path.join) names 'n02_cat\\chelsea.JPEG', a file that does
    not exist on Linux: the error sent the user to check data_root and data_prefix."""
    root, _ = imagenet_tree
    ann = write_list(root / 'train.txt', ['n02_cat\\chelsea.JPEG 1'])
    with pytest.raises(FileNotFoundError, match=re.escape("Windows separators ('\\'); write "
                                                          "them as '/'")):
        ImageList(ann, data_root=str(root / 'train'))


# What macOS writes beside a file it copies to a non-Mac disk: an AppleDouble header, then
# Finder data (about 4 KB in all). Same name with '._' in front, so the same extension.
APPLEDOUBLE = b'\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ' + bytes(4070)


@pytest.fixture
def current_log(caplog):
    """Records of mmengine's current logger (MMLogger calls its own handlers only)."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    logger.addHandler(caplog.handler)
    caplog.set_level('INFO')
    yield caplog
    logger.removeHandler(caplog.handler)


@pytest.mark.parametrize('with_label', [False, True])
def test_macos_metadata_is_left_out_when_listed_with_one_log_line(with_label, imagenet_tree,
                                                                  current_log, recwarn):
    """'._*' AppleDouble files have the image's extension: they were listed, failed to decode
    and were skipped with an UnreadableImageWarning, every epoch."""
    root, files = imagenet_tree
    train = root / 'train'
    (train / 'n02_cat' / '._chelsea.JPEG').write_bytes(APPLEDOUBLE)
    (train / 'n02_cat' / 'sub' / '._coffee.png').write_bytes(APPLEDOUBLE)
    (train / '__MACOSX' / 'n01_person').mkdir(parents=True)  # a zip archive made on a Mac
    (train / '__MACOSX' / 'n01_person' / '._astro.jpg').write_bytes(APPLEDOUBLE)
    for name in ('.DS_Store', 'Thumbs.db', 'desktop.ini'):  # no image extension: ignored
        (train / 'n03_rocket' / name).write_bytes(b'\x00\x00\x00\x01Bud1')

    dataset = ImageFolder(str(root), with_label=with_label, pipeline=PIPELINE)
    assert {dataset.get_data_info(i)['img_path'] for i in range(len(dataset))} == {
        path for group in files.values() for path in group}
    if with_label:
        assert dataset.metainfo['classes'] == ('n01_person', 'n02_cat', 'n03_rocket')
    lines = [r.getMessage() for r in current_log.records if 'macOS metadata' in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].startswith('ImageFolder: left out 3 macOS metadata files and folders')
    assert str(train / '__MACOSX') in lines[0] and '._chelsea.JPEG' in lines[0]
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no UnreadableImageWarning when loading, in any epoch
        for index in range(len(dataset)):
            dataset[index]
    assert not [w for w in recwarn if issubclass(w.category, DatasetListingWarning)]


def test_hidden_images_are_used_as_torchvision_does_and_named_once(imagenet_tree, photos):
    """A hidden file with an image extension may be data: listed, as torchvision and mmpretrain
    list it, but named, since most are thumbnails or a cache of the images beside them."""
    root, files = imagenet_tree
    hidden = [save_photo(photos['camera'], root / 'train' / 'n01_person' / '.camera.png'),
              save_photo(photos['rocket'], root / 'train' / 'n03_rocket' / '.thumbnails' /
                         'rocket.png')]
    with pytest.warns(DatasetListingWarning, match=re.escape(
            f"ImageFolder: 2 images under '{root / 'train'}' are in hidden files or "
            f'folders; they are used')) as record:
        dataset = ImageFolder(str(root), with_label=True)
    assert len([w for w in record if issubclass(w.category, DatasetListingWarning)]) == 1
    assert all(path in str(record[0].message) for path in hidden)
    assert len(dataset) == 6


def test_images_beside_the_class_folders_are_named(imagenet_tree, photos, tmp_path):
    """with_label=True takes images from the class folders only: images lying directly in the
    top folder were not used, without a word."""
    root, files = imagenet_tree
    loose = [save_photo(photos[name], root / 'train' / f'{name}.jpg')
             for name in ('camera', 'coffee', 'rocket', 'chelsea')]
    with pytest.warns(DatasetListingWarning, match=re.escape(
            f"ImageFolder: 4 image(s) directly in '{root / 'train'}' are not used")) as record:
        dataset = ImageFolder(str(root), with_label=True)
    assert len(dataset) == 4 and dataset.metainfo['classes'] == ('n01_person', 'n02_cat',
                                                                 'n03_rocket')
    message = str(record[0].message)
    assert all(path in message for path in sorted(loose)[:3]) and message.endswith('and 1 more')

    flat = tmp_path / 'flat'  # no class folder at all: the error names the images found
    camera = save_photo(photos['camera'], flat / 'train' / 'camera.png')
    with pytest.raises(ValueError, match=re.escape(
            f'found none, only 1 image(s): {camera} (use with_label=False')):
        ImageFolder(str(flat), with_label=True)


def test_image_list_repeats_are_kept_and_named_once(imagenet_tree):
    """A line naming an image listed before made it count twice without a word (two
    overlapping lists joined); repeats meant for oversampling must still work."""
    root, files = imagenet_tree
    lines = ['n02_cat/chelsea.JPEG 1', 'n01_person/astro.jpg 0', '',
             'n02_cat/chelsea.JPEG 1', './n01_person/astro.jpg 2', 'n03_rocket/rocket.Png 2',
             'n02_cat/chelsea.JPEG 1', 'n02_cat//chelsea.JPEG 1']
    ann = write_list(root / 'train.txt', lines)
    with pytest.warns(DatasetListingWarning) as record:
        dataset = ImageList(ann, data_root=str(root / 'train'), with_label=True)
    assert len(record) == 1
    assert str(record[0].message) == (
        f'ImageList: {ann}: 4 line(s) name an image listed on an earlier line, so it counts '
        f'more than once; remove them unless the repeats are meant (oversampling): '
        f"line 4 repeats line 1 ('n02_cat/chelsea.JPEG'), line 5 repeats line 2 "
        f"('./n01_person/astro.jpg' with label 2, not 0), line 7 repeats line 1 "
        f"('n02_cat/chelsea.JPEG') and 1 more")
    assert len(dataset) == 7  # kept: oversampling works
    assert [dataset.get_data_info(i)['img_path'] for i in (0, 2, 5)] == [files['n02_cat'][0]] * 3


def test_image_files_of_other_formats_pil_decodes_are_named_once(tmp_path, photos):
    """A folder of 4 .jpg and 4 .jfif photos (and a .gif, a .jpe) listed the 4 .jpg files
    without a word: the others are left out, as torchvision leaves them out, but named."""
    folder = tmp_path / 'mixed'
    for index in range(4):
        save_photo(photos['coffee'], folder / f'a{index}.jpg')
        save_photo(photos['coffee'], folder / f'b{index}.jfif', format='JPEG')
    save_photo(photos['camera'], folder / 'c.gif')
    save_photo(photos['camera'], folder / 'd.jpe', format='JPEG')
    (folder / 'notes.txt').write_text('not an image')
    with pytest.warns(DatasetListingWarning, match=re.escape(
            f"ImageFolder: 6 image file(s) under '{folder}/' with extensions ['.gif', "
            f"'.jfif', '.jpe'] are not used")) as record:
        dataset = ImageFolder(str(folder), data_prefix='')
    assert len(dataset) == 4
    listing = [w for w in record if issubclass(w.category, DatasetListingWarning)]
    assert len(listing) == 1
    message = str(listing[0].message)
    assert "extensions=IMG_EXTENSIONS + ('.gif', '.jfif', '.jpe')" in message
    assert str(folder / 'b0.jfif') in message and message.endswith('and 3 more')
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # extensions given: the others are left out on purpose
        assert len(ImageFolder(str(folder), data_prefix='', extensions=('.jpg', ))) == 4
    with pytest.warns(DatasetListingWarning, match=re.escape(
            f"6 image file(s) under '{tmp_path}/' with extensions")):  # in class folders
        assert len(ImageFolder(str(tmp_path), data_prefix='', with_label=True)) == 4

    only = tmp_path / 'only'  # none of the listed extensions: the error names the others
    save_photo(photos['coffee'], only / 'train' / 'b.jfif', format='JPEG')
    with pytest.raises(ValueError, match=re.escape(
            f"1 files of other image formats PIL decodes: {only / 'train' / 'b.jfif'}")):
        ImageFolder(str(only))


def test_pre_training_on_a_root_with_train_and_val_folders_is_named(imagenet_tree, photos):
    """with_label=False on data/imagenet (data_prefix='') took the val images too."""
    root, _ = imagenet_tree
    save_photo(photos['camera'], root / 'val' / 'n01_person' / 'camera.png')
    with pytest.warns(DatasetListingWarning, match=re.escape(
            f"ImageFolder: '{root}/' holds split folders 'train' (4 image(s)), 'val' (1 "
            f"image(s)), and with_label=False uses every image under it, the 'val' images "
            f"too; set data_prefix='train'")):
        assert len(ImageFolder(str(root), data_prefix='')) == 5
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert len(ImageFolder(str(root), data_prefix='train')) == 4
    with pytest.warns(DatasetListingWarning, match=re.escape(
            f"the class folders of '{root}/' include 'train' and 'val', split folders")):
        ImageFolder(str(root), data_prefix='', with_label=True)


@pytest.mark.parametrize('name, hint', [('imgs.tar', 'an archive: extract it'),
                                        ('photo.jpg', 'give the folder that holds the images')])
def test_a_data_root_that_is_a_file_says_so(name, hint, tmp_path, photos):
    path = save_photo(photos['camera'], tmp_path / name, format='PNG')
    for prefix in ('', 'train'):
        with pytest.raises(FileNotFoundError, match=re.escape(
                f"{path!r} is a file, not a folder ({hint}")):
            ImageFolder(path, data_prefix=prefix)


def test_a_data_root_under_the_home_folder_is_expanded(imagenet_tree, monkeypatch):
    root, files = imagenet_tree
    monkeypatch.setenv('HOME', str(root.parent))
    dataset = ImageFolder(f'~/{root.name}', data_prefix='train')
    assert len(dataset) == 4 and dataset.folder == str(root / 'train')
    write_list(root / 'val.txt', ['n01_person/astro.jpg 0', 'n02_cat/chelsea.JPEG 1'])
    listed = ImageList('val.txt', data_root=f'~/{root.name}', data_prefix='train')
    assert len(listed) == 2 and listed.ann_file == str(root / 'val.txt')
