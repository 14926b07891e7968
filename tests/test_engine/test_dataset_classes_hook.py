"""DatasetClassesCheckHook: the splits of a run name the same classes, and the model has an
output for each, checked before the first iteration."""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from PIL import Image
from skimage import data as skdata

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


def test_fine_tuning_with_a_val_folder_of_other_classes_stops_before_training(tmp_path):
    """It used to train and validate, on labels numbered differently in each split."""
    cfg = Config.fromfile(str(CONFIGS / 'finetune' / 'demo_vit_tiny_embedded_ft.py'))
    train_root = write_class_folders(tmp_path / 'train', ['cat', 'dog'])
    val_root = write_class_folders(tmp_path / 'val', ['bird', 'cat', 'dog'])
    loader_options = dict(batch_size=2, num_workers=0, persistent_workers=False)
    cfg.merge_from_dict({
        'work_dir': str(tmp_path / 'work'),
        'model.backbone.init_cfg': None,
        'model.head.num_classes': 3,
        'train_dataloader': dict(loader_options, dataset=dict(
            _delete_=True, type='ImageFolder', data_root=train_root, data_prefix='',
            with_label=True, pipeline=cfg.train_pipeline)),
        'val_dataloader': dict(loader_options, dataset=dict(
            _delete_=True, type='ImageFolder', data_root=val_root, data_prefix='',
            with_label=True, pipeline=cfg.test_pipeline)),
        'train_cfg.max_epochs': 1,
    })
    adapt_to_device(cfg)
    runner = Runner.from_cfg(cfg)
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
