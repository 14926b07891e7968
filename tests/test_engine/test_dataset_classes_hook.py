"""DatasetClassesCheckHook: the splits of a run name the same classes, and the model has an
output for each, checked before the first iteration."""
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from PIL import Image
from skimage import data as skdata

from fastmim.datasets import EmbeddedPhotos
from fastmim.datasets.utils import dataset_labels
from fastmim.engine.hooks import ClassCountWarning, DatasetClassesCheckHook
from fastmim.engine.hooks.dataset_classes_hook import check_classes
from fastmim.engine.launch import adapt_to_device

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'


def loader(classes):
    return SimpleNamespace(dataset=SimpleNamespace(metainfo=dict(classes=classes)))


def test_names_that_differ_only_in_unicode_normalisation_are_explained():
    """A class folder made on macOS (NFD: 'e' + a combining accent) and one made on Linux (NFC)
    printed as "missing ['café'], extra ['café']"."""
    with pytest.raises(ValueError, match=r"accents encoded differently \(Unicode NFC / NFD, "
                                         r"e.g. 'caf\\xe9' vs 'cafe\\u0301'\)"):
        check_classes([('train_dataloader.dataset', ('caf\u00e9', 'dog')),
                       ('val_dataloader.dataset', ('cafe\u0301', 'dog'))], None)


def test_splits_with_different_class_folders_are_named():
    with pytest.raises(ValueError, match=r"val_dataloader.dataset has 3 classes, train_data"
                                         r"loader.dataset 2, .*extra \['bird'\]"):
        check_classes([('train_dataloader.dataset', ('cat', 'dog')),
                       ('val_dataloader.dataset', ('bird', 'cat', 'dog'))], 3)


def test_fewer_outputs_than_classes_fail_and_more_warn():
    named = [('train_dataloader.dataset', ('cat', 'dog'))]
    with pytest.raises(ValueError, match="has 2 classes but the model's num_classes is 1"):
        check_classes(named, 1)
    with pytest.warns(ClassCountWarning, match='37 outputs are never a target'):
        check_classes(named, 39)
    check_classes(named, 2)
    check_classes(named, None)  # FastMIM: no class outputs


def test_the_hook_compares_the_knn_bank_with_the_test_set():
    runner = SimpleNamespace(
        model=SimpleNamespace(num_classes=None),
        test_loop=SimpleNamespace(dataloader=loader(('a', 'b')),
                                  bank_dataloader=loader(('a', 'b', 'c'))))
    with pytest.raises(ValueError, match='test_dataloader.dataset has 2 classes, '
                                         'test_cfg.bank_dataloader.dataset 3'):
        DatasetClassesCheckHook().before_test(runner)


def test_list_labels_beyond_the_model_outputs_fail_before_training():
    """A list file has no class names; its largest label used to fail only at the batch that
    held it, which could be hours into an epoch."""
    labelled_list = SimpleNamespace(dataset=SimpleNamespace(metainfo=dict(max_label=5)))
    runner = SimpleNamespace(model=SimpleNamespace(num_classes=2), val_loop=None,
                             train_loop=SimpleNamespace(dataloader=labelled_list))
    with pytest.raises(ValueError, match="train_dataloader.dataset has labels up to 5 but the "
                                         "model's num_classes is 2; set num_classes=6"):
        DatasetClassesCheckHook().before_train(runner)
    runner.model.num_classes = 6
    DatasetClassesCheckHook().before_train(runner)


def write_class_folders(root, classes):
    photo = Image.fromarray(skdata.astronaut()).resize((64, 64))
    for name in classes:
        (root / name).mkdir(parents=True)
        for index in range(2):
            photo.save(root / name / f'{index}.jpg')
    return str(root)


def fine_tuning_runner(tmp_path, num_classes, **datasets):
    """The Runner of the demo fine-tuning config on this machine, without pre-trained weights,
    one epoch, a head of ``num_classes``, and each split's dataset given as
    ``<split>=dataset config`` (the config's train pipeline for ``train``, its test pipeline
    for the others)."""
    cfg = Config.fromfile(str(CONFIGS / 'finetune' / 'demo_vit_tiny_embedded_ft.py'))
    options = {'work_dir': str(tmp_path / 'work'), 'model.backbone.init_cfg': None,
               'model.head.num_classes': num_classes, 'train_cfg.max_epochs': 1}
    for split, dataset in datasets.items():
        pipeline = cfg.train_pipeline if split == 'train' else cfg.test_pipeline
        options[f'{split}_dataloader'] = dict(
            batch_size=2, num_workers=0, persistent_workers=False,
            dataset=dict(dataset, _delete_=True, with_label=True, pipeline=pipeline))
    cfg.merge_from_dict(options)
    adapt_to_device(cfg)
    return Runner.from_cfg(cfg)


def test_fine_tuning_with_a_val_folder_of_other_classes_stops_before_training(tmp_path):
    """It used to train and validate, on labels numbered differently in each split."""
    train_root = write_class_folders(tmp_path / 'train', ['cat', 'dog'])
    val_root = write_class_folders(tmp_path / 'val', ['bird', 'cat', 'dog'])
    runner = fine_tuning_runner(
        tmp_path, 3,
        train=dict(type='ImageFolder', data_root=train_root, data_prefix=''),
        val=dict(type='ImageFolder', data_root=val_root, data_prefix=''))
    with pytest.raises(ValueError, match=r"extra \['bird'\]"):
        runner.train()
    assert runner.iter == 0 and not list((tmp_path / 'work').glob('*.pth'))


def test_a_linear_probe_whose_epochs_end_in_one_image_stops_before_training(tmp_path):
    """BatchNorm1d in the probe's head cannot normalise one image: with drop_last=False and 33
    images in batches of 4 the run used to stop at the end of its first epoch."""
    cfg = Config.fromfile(str(CONFIGS / 'finetune' / 'demo_vit_tiny_embedded_linear.py'))
    cfg.merge_from_dict({
        'work_dir': str(tmp_path / 'work'),
        'model.backbone.init_cfg': None,
        'train_dataloader.batch_size': 4,
        'train_dataloader.drop_last': False,
        'train_dataloader.dataset.num_samples': 33,
        'train_cfg.max_epochs': 1,
    })
    adapt_to_device(cfg)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=r'train_dataloader: 33 images per process in batches '
                                         r'of 4 end every epoch in a batch of one image, which '
                                         r'head.fc_norm \(BatchNorm1d\) cannot normalise'):
        runner.train()
    assert runner.iter == 0


def test_a_last_batch_of_one_is_fine_without_batch_norm_or_with_drop_last():
    from fastmim.engine.hooks.dataset_classes_hook import check_last_batch
    probe = torch.nn.Sequential(torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    loader = SimpleNamespace(batch_size=4, drop_last=False, sampler=range(33))
    with pytest.raises(ValueError, match='0 \\(BatchNorm1d\\)'):
        check_last_batch('train_dataloader', loader, probe)
    check_last_batch('train_dataloader', loader, torch.nn.Linear(4, 2))
    check_last_batch('train_dataloader', SimpleNamespace(**{**vars(loader), 'drop_last': True}),
                     probe)
    check_last_batch('train_dataloader', SimpleNamespace(**{**vars(loader), 'sampler': range(34)}),
                     probe)


def write_image_list(root, name, labels):
    """A list file naming one copy of a real photo per label, labelled as given."""
    photo = Image.fromarray(skdata.astronaut()).resize((64, 64))
    lines = []
    for index, label in enumerate(labels):
        photo.save(root / f'{name}_{index}.jpg')
        lines.append(f'{name}_{index}.jpg {label}\n')
    (root / name).write_text(''.join(lines))
    return name


def test_fine_tuning_with_a_val_class_the_train_list_lacks_stops_before_training(tmp_path):
    """Train labels 0-2, val 0-3, num_classes=4: the run trained and validated without a word
    (top-1 25.0 here), though no image of class 3 could ever be learned."""
    train_list = write_image_list(tmp_path, 'train.txt', [0, 1, 2, 0, 1, 2])
    val_list = write_image_list(tmp_path, 'val.txt', [0, 1, 2, 3, 3, 3, 3, 3])
    runner = fine_tuning_runner(
        tmp_path, 4,
        train=dict(type='ImageList', ann_file=train_list, data_root=str(tmp_path)),
        val=dict(type='ImageList', ann_file=val_list, data_root=str(tmp_path)))
    with pytest.raises(ValueError, match=r'val_dataloader.dataset: 5 of its 8 images are of 1 '
                                         r'class that train_dataloader.dataset has no image of '
                                         r'\(3\)'):
        runner.train()
    assert runner.iter == 0 and not list((tmp_path / 'work').glob('*.pth'))


class LabelledDataset:
    """Annotations only, as ``get_data_info`` gives them: the check decodes no image."""

    def __init__(self, labels, classes=None):
        self.labels = labels
        self.metainfo = dict(classes=classes) if classes else {}

    def __len__(self):
        return len(self.labels)

    def get_data_info(self, index):
        return dict(img_path=f'{index}.jpg', gt_label=self.labels[index])


def runner_of(train, val, num_classes=None):
    return SimpleNamespace(
        model=SimpleNamespace(num_classes=num_classes),
        train_loop=SimpleNamespace(dataloader=SimpleNamespace(dataset=train, batch_size=None)),
        val_loop=SimpleNamespace(dataloader=SimpleNamespace(dataset=val)))


def test_val_classes_without_a_train_image_are_named_with_their_class_names():
    """Class folders of the same names, but a train subset (``indices``) that misses some."""
    names = ('ant', 'bee', 'cat', 'dog', 'eel', 'fox', 'gnu', 'hen')
    train = LabelledDataset([0, 0, 1, 1], names)
    val = LabelledDataset(list(range(8)) * 2, names)
    with pytest.raises(ValueError, match=r"12 of its 16 images are of 6 classes that train_"
                                         r"dataloader.dataset has no image of \(2 'cat', "
                                         r"3 'dog', 4 'eel', 5 'fox', 6 'gnu', \.\.\.\)"):
        DatasetClassesCheckHook().before_train(runner_of(train, val, num_classes=8))
    # Train classes that val lacks are fine (a val subset), and so is an unlabelled split.
    DatasetClassesCheckHook().before_train(runner_of(val, train, num_classes=8))
    DatasetClassesCheckHook().before_train(runner_of(train, SimpleNamespace(metainfo={}), 8))


def test_labels_are_read_from_the_annotations_without_decoding_an_image(monkeypatch):
    """EmbeddedPhotos' get_data_info adds the decoded photo: the labels need none of it."""
    dataset = EmbeddedPhotos(pipeline=[], sources='skimage', num_samples=20)

    def refuse_decoding(path):
        raise AssertionError(f'decoded {path} to read a label')

    monkeypatch.setattr('fastmim.datasets.embedded.load_photo', refuse_decoding)
    photos = len(dataset.metainfo['classes'])  # sample i is photo i % photos
    assert dataset_labels(dataset) == Counter(index % photos for index in range(20))


def test_testing_a_checkpoint_on_classes_it_was_not_trained_on_is_refused(tmp_path):
    """mmengine saves the train split's metainfo in every checkpoint (meta.dataset_meta); a
    test folder of as many classes of other names (or order) was evaluated without a word,
    each output scored against another class."""
    test_root = write_class_folders(tmp_path / 'test', ['cat', 'eel'])
    runner = fine_tuning_runner(
        tmp_path, 2, test=dict(type='ImageFolder', data_root=test_root, data_prefix=''))
    checkpoint = tmp_path / 'fine_tuned.pth'
    torch.save(dict(meta=dict(dataset_meta=dict(classes=('cat', 'dog'))),
                    state_dict=runner.model.state_dict()), checkpoint)
    runner._load_from = str(checkpoint)  # tools/test.py CONFIG CHECKPOINT
    with pytest.raises(ValueError, match=r"test_dataloader.dataset has 2 classes, the "
                                         r"checkpoint's train split \(meta.dataset_meta\) 2, "
                                         r"and they differ \(missing \['dog'\], extra \['eel'\]"):
        runner.test()


def test_a_checkpoint_loaded_to_train_from_is_not_compared_with_a_later_test():
    """Fine-tuning from a checkpoint of other classes is a transfer, not a mismatch."""
    hook = DatasetClassesCheckHook()
    train = LabelledDataset([0, 1], ('cat', 'dog'))
    runner = runner_of(train, train, num_classes=2)
    hook.after_load_checkpoint(runner, dict(meta=dict(dataset_meta=dict(classes=('a', 'b')))))
    hook.before_train(runner)
    runner.test_loop = SimpleNamespace(dataloader=SimpleNamespace(dataset=train))
    hook.before_test(runner)


def test_names_that_differ_only_in_letter_case_are_explained():
    """'Cat' in the train folders and 'cat' in the val ones printed as missing and extra."""
    with pytest.raises(ValueError, match=r"the same names in another letter case \(e.g. 'Cat' "
                                         r"vs 'cat'\)"):
        check_classes([('train', ('Cat', 'Dog')), ('val', ('cat', 'dog'))], None)
    with pytest.raises(ValueError, match=r"missing \['Cat', 'Dog'\], extra \['bird', 'cat'\]"):
        check_classes([('train', ('Cat', 'Dog')), ('val', ('bird', 'cat'))], None)


def test_fine_tuning_on_a_train_split_of_one_class_stops_before_training(tmp_path):
    """A data_root pointed at one class folder trained nothing and reported top-1 100."""
    train_root = write_class_folders(tmp_path / 'train', ['cat'])
    runner = fine_tuning_runner(
        tmp_path, 2, train=dict(type='ImageFolder', data_root=train_root, data_prefix=''),
        val=dict(type='ImageFolder', data_root=train_root, data_prefix=''))
    with pytest.raises(ValueError, match=re.escape(
            f"train_dataloader.dataset holds only class 'cat' in '{train_root}/' (2 images): "
            f'a classifier trained on one class learns nothing')):
        runner.train()
    assert runner.iter == 0


def test_a_list_file_of_label_0_only_is_refused_for_a_classifier_only():
    from fastmim.engine.hooks.dataset_classes_hook import check_more_than_one_class
    one_label = SimpleNamespace(dataset=type('D', (), dict(
        metainfo=dict(max_label=0), ann_file='train.txt', __len__=lambda self: 7))())
    with pytest.raises(ValueError, match=r"holds only label 0 in 'train.txt' \(7 images\)"):
        check_more_than_one_class('train_dataloader.dataset', one_label, 2)
    check_more_than_one_class('train_dataloader.dataset', one_label, None)  # not a classifier
    check_more_than_one_class('train_dataloader.dataset', loader(('cat', 'dog')), 2)
