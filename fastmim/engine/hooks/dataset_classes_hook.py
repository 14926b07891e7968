"""Check before the first iteration that a run's datasets agree on their classes and that the
model has an output for each, and that no training batch is one image that the model cannot
normalise.

``ImageFolder`` numbers classes by their sorted folder names, per dataset: a val folder with one
class more or less than the train folder shifts every label after it, and the run then trains
and validates without a word, on labels that mean different classes in each split. A head with
fewer outputs than the dataset has classes fails only at the first batch; one with more trains
outputs that no image is labelled with. A ``BatchNorm1d`` (the linear probe's head) cannot
normalise a batch of one in training: with ``drop_last=False`` and a dataset that leaves one
image over, the run would stop at the end of its first epoch, after a whole epoch of work. A
val split with a class that the train split has no image of (a list file, a train subset) would
train and validate without a word too, its top-1 capped by the images no model can get right.
A classifier fine-tuned on a train split of one class would report loss 0 and top-1 100.
"""
import unicodedata
import warnings
from typing import List, Optional, Tuple

from mmengine.hooks import Hook
from torch import nn

from fastmim.datasets.utils import describe_labels, label_coverage
from fastmim.engine.runner_model import bare_model
from fastmim.registry import HOOKS


class ClassCountWarning(UserWarning):
    """The model has more outputs than the dataset has classes."""


def _metainfo(dataloader) -> dict:
    return getattr(getattr(dataloader, 'dataset', None), 'metainfo', None) or {}


def dataset_classes(dataloader) -> Optional[Tuple[str, ...]]:
    """``metainfo['classes']`` of a dataloader's dataset, or ``None`` when it names none (a list
    file, a flat folder of unlabelled images)."""
    classes = _metainfo(dataloader).get('classes')
    return tuple(classes) if classes else None


def dataset_max_label(dataloader) -> Optional[int]:
    """``metainfo['max_label']`` of a dataloader's dataset (a labelled ``ImageList``, which
    names no classes), or ``None``."""
    return _metainfo(dataloader).get('max_label')


def check_max_label(key: str, max_label: Optional[int], num_classes: Optional[int]) -> None:
    """Raise ``ValueError`` when a split's largest label has no model output."""
    if max_label is not None and num_classes is not None and max_label >= num_classes:
        raise ValueError(f"{key} has labels up to {max_label} but the model's num_classes is "
                         f'{num_classes}; set num_classes={max_label + 1} '
                         f'(model.head.num_classes for a classifier)')


def model_num_classes(model) -> Optional[int]:
    """The model's number of class outputs (``ImageClassifier``, ``KNNClassifier``), or
    ``None`` when it has none (``FastMIM``) or infers it (``KNNClassifier(num_classes=None)``)."""
    num_classes = getattr(model, 'num_classes', None)
    return num_classes if isinstance(num_classes, int) else None


def check_last_batch(key: str, dataloader, model) -> None:
    """Raise ``ValueError`` when ``dataloader`` ends each epoch of every process in a batch of
    one image and ``model`` has a ``BatchNorm1d``, which needs more than one value per channel
    to normalise in training (its running statistics serve evaluation, where one is fine)."""
    batch_size = getattr(dataloader, 'batch_size', None)
    if not batch_size or getattr(dataloader, 'drop_last', True):
        return  # a batch sampler sizes its own batches
    per_process = len(dataloader.sampler)
    if per_process % batch_size != 1:
        return
    norms = [name for name, module in model.named_modules()
             if isinstance(module, nn.BatchNorm1d)]
    if norms:
        raise ValueError(
            f'{key}: {per_process} images per process in batches of {batch_size} end every '
            f'epoch in a batch of one image, which {norms[0]} (BatchNorm1d) cannot normalise in '
            f'training; set train_dataloader.drop_last=True, or a batch_size that leaves no '
            f'single image over')


def _differences(reference: Tuple[str, ...], classes: Tuple[str, ...]) -> str:
    only_reference = [name for name in reference if name not in classes]
    only_here = [name for name in classes if name not in reference]
    if not only_reference and not only_here:
        return 'the same names in another order'
    normalised = {unicodedata.normalize('NFC', name) for name in only_reference}
    if normalised == {unicodedata.normalize('NFC', name) for name in only_here}:
        # Names that print alike: macOS writes an accent as a separate mark (NFD).
        return (f'the same names with accents encoded differently (Unicode NFC / NFD, e.g. '
                f'{ascii(only_reference[0])} vs {ascii(only_here[0])}): rename the folders of '
                f'one split')
    casefolded = {name.casefold() for name in only_reference}
    if casefolded == {name.casefold() for name in only_here}:
        # 'Cat' in one split, 'cat' in the other: two folders made by different tools.
        return (f'the same names in another letter case (e.g. {only_reference[0]!r} vs '
                f'{only_here[0]!r}), which class folder names are not compared in: rename the '
                f'folders of one split')
    return f'missing {only_reference[:5]}, extra {only_here[:5]}'


def check_classes(named_classes: List[Tuple[str, Tuple[str, ...]]],
                  num_classes: Optional[int]) -> None:
    """Raise ``ValueError`` naming the split whose classes differ from the first split's, or
    that has more classes than the model has outputs; warn when the model has more outputs.

    Args:
        named_classes: ``(config key, classes)`` of each split that names its classes, the
            reference (the training or kNN bank split) first.
        num_classes: the model's number of outputs, ``None`` to skip that check.
    """
    if not named_classes:
        return
    reference_key, reference = named_classes[0]
    for key, classes in named_classes[1:]:
        if classes != reference:
            raise ValueError(
                f'{key} has {len(classes)} classes, {reference_key} {len(reference)}, and they '
                f'differ ({_differences(reference, classes)}): a label index would mean '
                f'another class in each; give both the same class folders (and the same '
                f"metainfo['classes'], where one is given)")
    if num_classes is None or num_classes == len(reference):
        return
    if num_classes < len(reference):
        raise ValueError(f"{reference_key} has {len(reference)} classes but the model's "
                         f'num_classes is {num_classes}; set num_classes={len(reference)} '
                         f'(model.head.num_classes for a classifier)')
    warnings.warn(f"{reference_key} has {len(reference)} classes but the model's num_classes is "
                  f'{num_classes}: {num_classes - len(reference)} outputs are never a target; '
                  f'set num_classes={len(reference)} unless that is intended',
                  ClassCountWarning, stacklevel=2)


def check_more_than_one_class(key: str, dataloader, num_classes: Optional[int]) -> None:
    """Raise ``ValueError`` when a classifier (``num_classes`` not ``None``) would be trained
    on a split of one class (a data_root pointed at one class folder, a list file of label 0
    only): its loss is 0 from the first iteration and every top-1 is 100, after a run of
    hours that learned nothing. Read from the metainfo (class names, a list's largest label),
    so without reading an annotation."""
    if num_classes is None:
        return
    classes, max_label = dataset_classes(dataloader), dataset_max_label(dataloader)
    if classes is not None and len(classes) == 1:
        only = f'class {classes[0]!r}'
    elif classes is None and max_label == 0:
        only = 'label 0'
    else:
        return
    dataset = getattr(dataloader, 'dataset', None)
    source = getattr(dataset, 'folder', None) or getattr(dataset, 'ann_file', None)
    where = f' in {source!r}' if source else ''
    raise ValueError(
        f'{key} holds only {only}{where} ({len(dataset)} images): a classifier trained on one '
        f'class learns nothing (its loss is 0 and every top-1 is 100); point {key} at the '
        f'folder of class sub-folders (or list file) of the train split')


def check_label_coverage(reference_key: str, reference_dataset, key: str, dataset) -> None:
    """Raise ``ValueError`` naming the classes of ``dataset`` (val) that ``reference_dataset``
    (train) has no image of; nothing when either has no labels to read.

    An error, not a warning, as ``check_classes`` refuses class folders that differ and the kNN
    loop a bank that lacks a test class: no model can learn a class it never sees, so each of
    those val images is an error at every validation and the reported top-1 measures the
    split, not the model, over a run of hours; a warning scrolls away in its first lines.
    mmpretrain checks none of this, and nothing a user meant is lost: a smoke test on a train
    subset passes with a val subset of the same classes (train classes that val lacks are
    fine). Labels are read from the annotations (``label_coverage``), no image is decoded.
    """
    coverage = label_coverage(reference_dataset, dataset)
    if coverage is not None and coverage.missing:
        missing = coverage.missing
        raise ValueError(
            f'{key}: {coverage.samples_missing} of its {coverage.samples} images are of '
            f'{len(missing)} class{"es" if len(missing) > 1 else ""} that {reference_key} has '
            f'no image of ({describe_labels(missing, dataset)}): no model can learn '
            f'{"them" if len(missing) > 1 else "it"}, and every validation would count those '
            f'images wrong; give {reference_key} images of every class of {key}, or leave those '
            f'classes out of {key}')


@HOOKS.register_module()
class DatasetClassesCheckHook(Hook):
    """Runs :func:`check_classes` on the train and val datasets before training, and on the
    kNN bank and test datasets before testing, :func:`check_max_label` on each (list files),
    :func:`check_label_coverage` on the val dataset against the train one, and
    :func:`check_more_than_one_class` and :func:`check_last_batch` on the train dataloader, so
    a mismatch ends the run in one line before its first iteration (a default hook of
    ``configs/_base_/default_runtime.py``). The kNN loop checks its bank's labels against the
    test split itself (``check_bank``).

    Testing a checkpoint (``tools/test.py``) compares the test classes with those of the
    split it was trained on, which mmengine saves in its ``meta['dataset_meta']``: a test
    folder of as many classes of other names or order would be scored without a word. A
    checkpoint loaded to train from is not compared (fine-tuning on other classes is a
    transfer)."""

    priority = 'VERY_HIGH'
    CHECKPOINT_KEY = "the checkpoint's train split (meta.dataset_meta)"

    def __init__(self) -> None:
        self.checkpoint_classes: Optional[Tuple[str, ...]] = None

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        dataset_meta = (checkpoint.get('meta') or {}).get('dataset_meta') or {}
        classes = dataset_meta.get('classes')
        self.checkpoint_classes = tuple(classes) if classes else None

    def before_train(self, runner) -> None:
        self.checkpoint_classes = None  # the weights to train from, of any classes
        loaders = [('train_dataloader.dataset', runner.train_loop.dataloader)]
        if runner.val_loop is not None:
            loaders.append(('val_dataloader.dataset', runner.val_loop.dataloader))
        # First: the others would advise num_classes=1 for a split of one class.
        check_more_than_one_class(loaders[0][0], loaders[0][1],
                                  model_num_classes(bare_model(runner)))
        self._check(runner, loaders)
        check_last_batch('train_dataloader', runner.train_loop.dataloader, bare_model(runner))
        # Last: it reads every annotation (seconds for ImageNet), the others read a few values.
        (train_key, train_loader), *others = loaders
        for key, loader in others:
            check_label_coverage(train_key, getattr(train_loader, 'dataset', None), key,
                                 getattr(loader, 'dataset', None))

    def before_test(self, runner) -> None:
        loaders = [('test_dataloader.dataset', runner.test_loop.dataloader)]
        bank = getattr(runner.test_loop, 'bank_dataloader', None)
        if bank is not None:
            loaders.insert(0, ('test_cfg.bank_dataloader.dataset', bank))
        self._check(runner, loaders, [(self.CHECKPOINT_KEY, self.checkpoint_classes)])

    @staticmethod
    def _check(runner, loaders, named=()) -> None:
        """``named``: ``(key, classes)`` compared before those of the ``loaders``."""
        num_classes = model_num_classes(bare_model(runner))
        named = [*named, *((key, dataset_classes(loader)) for key, loader in loaders)]
        check_classes([(key, classes) for key, classes in named if classes is not None],
                      num_classes)
        for key, loader in loaders:
            check_max_label(key, dataset_max_label(loader), num_classes)
