"""Fail before training when a config's dataset points at a folder or file that is not there.

mmdet's ``CocoDataset`` reads its annotation file only when the Runner builds the dataloader,
after the model, and never looks at its image folder: a wrong ``data_root`` or ``data_prefix``
surfaces as an image that cannot be read in a dataloader worker, mid-epoch. mmseg's
``ADE20KDataset`` with a missing folder lists no files and trains on nothing. This check reads
the paths from the config the way mmengine's ``BaseDataset`` joins them and names every one
missing, a folder with no file under it, or one with no file its dataset reads (an
``ImageFolder`` without images), with the config key that set it.

A COCO metric must read the annotation file of the dataset it evaluates. It also holds the
``num_classes`` of the heads that classify the dataset's classes to the number of those classes
in the dataset they train or test on: a head with fewer classes than the dataset stops the
first iteration with ``IndexError: Target 98 is out of bounds`` from the loss (and with more
it trains classes that never appear).
"""
import importlib
import os
import os.path as osp

from fastmim.datasets.utils import is_local
from fastmim.errors import LaunchError
from fastmim.file_checks import file_in_place_of, what_to_give_instead
from fastmim.registry import type_class, type_name

# Wrapper datasets (MultiImageMixDataset, RepeatDataset, ConcatDataset, ...) keep the datasets
# they wrap under these keys.
WRAPPED = ('dataset', 'datasets')


def _dataset_paths(dataset, key):
    """``(config key, path, kind)`` for the data root, annotation file and data prefixes of one
    dataset config, joined to ``data_root`` as ``BaseDataset._join_prefix`` does."""
    data_root = dataset.get('data_root')
    prefix = dataset.get('data_prefix')
    prefixes = [(name, path) for name, path in (
        prefix.items() if isinstance(prefix, dict) else [(None, prefix)])
        if isinstance(path, str) and path]
    if data_root:
        # The folder the data is read from when no prefix names another ('images': it must
        # hold a file), else only the root the prefixes and annotation file are joined to.
        yield f'{key}.data_root', data_root, 'folder' if prefixes else 'images'

    def join(path):
        return osp.join(data_root, path) if data_root and not osp.isabs(path) else path

    if dataset.get('ann_file'):
        yield f'{key}.ann_file', join(dataset['ann_file']), 'file'
    for name, path in prefixes:
        # mmdet's data_prefix may name a file (``proposals``); only its existence is checked.
        yield (f'{key}.data_prefix' + (f'.{name}' if name else ''), join(path), 'path')


def _datasets(dataset, key):
    """``(config key, dataset config)`` of a dataset config and of those it wraps."""
    if not isinstance(dataset, dict):
        return
    yield key, dataset
    for name in WRAPPED:
        inner = dataset.get(name)
        if isinstance(inner, dict):
            yield from _datasets(inner, f'{key}.{name}')
        elif isinstance(inner, (list, tuple)):
            for index, item in enumerate(inner):
                yield from _datasets(item, f'{key}.{name}.{index}')


def _local_paths(dataset, key):
    """:func:`_dataset_paths` of one dataset config read from the local file system."""
    return [(name, path, kind) for name, path, kind in _dataset_paths(dataset, key)
            if is_local(path, dataset.get('backend_args'))]


def _walk(dataset, key):
    for inner_key, inner in _datasets(dataset, key):
        yield from _local_paths(inner, inner_key)


def _split_datasets(cfg, split):
    """``(config key, dataset config)`` of every dataset that ``split`` reads: a kNN test's
    bank first (read before the test split), wrapped datasets included."""
    if split == 'test':
        bank = (cfg.get('test_cfg') or {}).get('bank_dataloader') or {}
        yield from _datasets(bank.get('dataset'), 'test_cfg.bank_dataloader.dataset')
    loader = cfg.get(f'{split}_dataloader')
    if loader:
        yield from _datasets(loader.get('dataset'), f'{split}_dataloader.dataset')


def check_dataset_paths(cfg, splits):
    """Raise :class:`LaunchError` naming the missing dataset paths of ``splits``
    (``'train'``, ``'val'``, ``'test'``): the data root, annotation file and data prefixes of
    each ``<split>_dataloader.dataset`` (wrapped datasets included), of a kNN test's bank
    (``test_cfg.bank_dataloader.dataset``, read before the test split) and the annotation file
    of ``<split>_evaluator`` (COCO's metric reads its own copy); then a folder that holds
    files but none its dataset reads (:func:`_refuse_folders_without_images`)."""
    checks = []
    datasets = []  # (dataset config, its local paths), for the image check after the others
    for split in splits:
        for key, dataset in _split_datasets(cfg, split):
            paths = _local_paths(dataset, key)
            checks += paths
            datasets.append((dataset, paths))
        evaluators = cfg.get(f'{split}_evaluator') or []
        for index, evaluator in enumerate(
                [evaluators] if isinstance(evaluators, dict) else evaluators):
            ann_file = evaluator.get('ann_file')
            if ann_file and is_local(ann_file, evaluator.get('backend_args')):
                key = f'{split}_evaluator' + ('' if isinstance(evaluators, dict) else f'.{index}')
                checks.append((f'{key}.ann_file', ann_file, 'file'))
    _refuse_missing_paths(checks)
    empty = [(key, path) for key, path, kind in checks
             if kind in ('images', 'path') and osp.isdir(path) and not _holds_a_file(path)]
    for key, path in empty:
        # the data prefix rather than the data root above it, which is then empty too
        if not any(_lies_under(inner, path) for _, inner in empty):
            raise LaunchError(f'{key}: folder {path} holds no files (an unfinished download '
                              f'or extraction?); set it with --cfg-options {key}=...')
    _refuse_folders_without_images(cfg, datasets)
    check_evaluator_files(cfg, splits)
    check_head_classes(cfg, splits)


def _refuse_folders_without_images(cfg, datasets):
    """A folder the data is read from that holds files, but none that its dataset reads (a
    folder of notes or CSV files, images of another format): the dataset says why through
    ``missing_images(folder, settings)`` (``ImageFolder``'s scan, stopped at the first
    image), else finds out only once the Runner builds it, after the start-up, naming no
    config key. ``datasets``: ``(dataset config, its local paths)`` in the order of the
    checks; call it after the folders are known to exist and hold files."""
    for dataset, paths in datasets:
        missing_images = getattr(_dataset_class(cfg, dataset.get('type')),
                                 'missing_images', None)
        if missing_images is None:
            continue
        for name, path, kind in paths:
            reason = missing_images(path, dataset) if kind in ('images', 'path') else ''
            if reason:
                raise LaunchError(f'{name}: folder {path} holds {reason}; set it with '
                                  f'--cfg-options {name}=...')


def _refuse_missing_paths(checks):
    """Name every missing path of ``checks`` in one error: a user with the data elsewhere
    moves the train and val roots and the metric's annotation file together (named one per
    start, they would cost a start of 10-15 s each). A path joined to a missing data root is left out: setting
    the root finds it."""
    exists = {'folder': osp.isdir, 'images': osp.isdir, 'file': osp.isfile, 'path': osp.exists}
    missing = [(key, path, kind) for key, path, kind in checks if not exists[kind](path)]
    missing_roots = [(key[:-len('data_root')], path) for key, path, _ in missing
                     if key.endswith('.data_root')]
    missing = [(key, path, kind) for key, path, kind in missing
               if not any(key.startswith(dataset) and key != f'{dataset}data_root'
                          and _lies_under(path, root) for dataset, root in missing_roots)]
    if not missing:
        return

    def described(key, path, kind):
        where = '' if osp.isabs(path) else f' (relative to {os.getcwd()})'
        file = file_in_place_of(path)
        if file is not None:
            return (f'{key}: {file}{where} is a file, not a folder '
                    f'({what_to_give_instead(file)})')
        return f'{key}: {"folder" if kind == "images" else kind} {path}{where} not found'

    if len(missing) == 1:
        key, path, kind = missing[0]
        raise LaunchError(described(key, path, kind) + (
            _repeated_folder(path) or f'; set it with --cfg-options {key}=...'))
    raise LaunchError(
        f'{len(missing)} dataset paths not found:\n' + ''.join(
            f'  {described(key, path, kind)}{_repeated_folder(path)}\n'
            for key, path, kind in missing)
        + 'set them with --cfg-options ' + ' '.join(f'{key}=...' for key, _, _ in missing))


def _holds_a_file(folder) -> bool:
    """Whether anything but folders lies under ``folder``, stopping at the first such entry.
    The datasets find an empty folder only after the model is built (ImageNet's 1,000 empty
    class folders, ADE20K's before unzipping: 'no images', or with mmseg no samples at all),
    which costs a ViT-B run some 15 s of start-up. A link counts as content unread: following
    links could loop; so does a folder this user may not read (a mount point's lost+found)."""
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
                    return True
                if _holds_a_file(entry.path):
                    return True
    except OSError:
        return True
    return False


def _lies_under(path, folder) -> bool:
    return osp.abspath(path).startswith(osp.join(osp.abspath(folder), ''))


def _repeated_folder(path) -> str:
    """Why a joined path is missing when it names one folder twice in a row and exists
    without the repeat: a data_root given down to the folder its data_prefix starts with
    (``.../ade/images`` + ``images/training``). Empty otherwise."""
    parts = path.split('/')
    for index in range(1, len(parts)):
        if parts[index] and parts[index] == parts[index - 1]:
            once = '/'.join(parts[:index] + parts[index + 1:])
            if osp.exists(once):
                return (f' ({parts[index]!r} twice in a row; {once} exists: does data_root end '
                        'in the folder data_prefix starts with?)')
    return ''


# Metrics that score against an annotation file of their own, which must be the dataset's.
OWN_FILE_METRICS = ('CocoMetric', )


def check_evaluator_files(cfg, splits):
    """Raise :class:`LaunchError` when a COCO metric reads another annotation file than the
    dataset it evaluates. mmdet's ``CocoMetric`` scores the images and ground truth of its own
    ``ann_file``: a test set changed in ``test_dataloader.dataset.ann_file`` alone would end
    after the whole inference in 'Results do not correspond to current coco set', or, where the
    image ids overlap, score the wrong ground truth without a word. Call it after the paths are
    known to exist."""
    for split in splits:
        evaluator = cfg.get(f'{split}_evaluator')
        dataset = (cfg.get(f'{split}_dataloader') or {}).get('dataset')
        if not (isinstance(evaluator, dict) and type_name(evaluator) in OWN_FILE_METRICS
                and isinstance(dataset, dict) and evaluator.get('ann_file')):
            continue
        files = [path for key, path, _ in _walk(dataset, f'{split}_dataloader.dataset')
                 if key == f'{split}_dataloader.dataset.ann_file']
        own = evaluator['ann_file']
        if (files and is_local(own, evaluator.get('backend_args'))
                and not osp.samefile(own, files[0])):
            key = f'{split}_evaluator.ann_file'
            raise LaunchError(f'{key}: {own} is not the annotation file of '
                              f'{split}_dataloader.dataset ({files[0]}); the metric scores the '
                              f'images and ground truth of its own file; set --cfg-options '
                              f'{key}={files[0]}')


# The heads that classify the dataset's classes, by scope and config key, with the metainfo
# entry that lists those classes: mmdet's box and mask heads classify its thing classes (which
# a panoptic dataset lists apart from its stuff classes; else its classes), mmseg's decode and
# auxiliary heads every class. Other heads keep a num_classes of their own: mmdet's RPN scores
# objectness (1 class), HTC's and SCNet's semantic heads the 183 COCO-stuff classes, ...
CLASS_HEADS = {
    'mmdet': {'bbox_head': 'thing_classes', 'mask_head': 'thing_classes'},
    'mmseg': {'decode_head': 'classes', 'auxiliary_head': 'classes'},
}
# Head types that sit under one of those keys but classify something else: STDC's detail head
# (an auxiliary head) tells boundary pixels from the rest (2 classes); Grounding DINO's box head
# scores the tokens of the text prompt (256, its longest prompt), which names the classes.
OWN_CLASSES_HEAD_TYPES = ('STDCHead', 'GroundingDINOHead')


def _head_classes(model, heads, key='model', head=None):
    """``(config key, num_classes, metainfo entry)`` of every head of ``model`` named in
    ``heads`` (:data:`CLASS_HEADS` of the scope), lists of heads (a cascade's stages) too."""
    if isinstance(model, (list, tuple)):
        for index, item in enumerate(model):
            yield from _head_classes(item, heads, f'{key}.{index}', head)
        return
    if not isinstance(model, dict):
        return
    num_classes = model.get('num_classes')
    if (head in heads and isinstance(num_classes, int)
            and type_name(model) not in OWN_CLASSES_HEAD_TYPES):
        yield f'{key}.num_classes', num_classes, heads[head]
    for name, value in model.items():
        yield from _head_classes(value, heads, f'{key}.{name}', name)


def _dataset_metainfo(cfg, dataset):
    """The metainfo a dataset config trains with, wrappers unwrapped: its type's ``METAINFO``
    updated by its ``metainfo``, as mmengine's ``BaseDataset`` merges them; None when it
    lists no classes without building the dataset."""
    while isinstance(dataset, dict) and isinstance(dataset.get('dataset'), dict):
        dataset = dataset['dataset']
    if not isinstance(dataset, dict):
        return None
    metainfo = dict(_type_metainfo(cfg, dataset.get('type')))
    metainfo.update(dataset.get('metainfo') or {})
    return metainfo if metainfo.get('classes') is not None else None


def _type_metainfo(cfg, dataset_type):
    """``METAINFO`` of a dataset type of the config's scope; empty when it cannot be found."""
    if not isinstance(dataset_type, str) or not cfg.get('default_scope'):
        return {}
    return getattr(_dataset_class(cfg, dataset_type), 'METAINFO', None) or {}


def _dataset_class(cfg, dataset_type):
    """The class a dataset ``type`` names in the config's scope (fastmim's when it sets
    none); None when it cannot be found. The scope's registry is imported for a name only."""
    scope = cfg.get('default_scope') or 'fastmim'
    try:
        datasets = (importlib.import_module(f'{scope}.registry').DATASETS
                    if isinstance(dataset_type, str) else None)
        return type_class(dataset_type, datasets)
    except (ImportError, AttributeError, KeyError):
        return None


def check_head_classes(cfg, splits):
    """Raise :class:`LaunchError` when the ``num_classes`` of a head that classifies the
    dataset's classes (:data:`CLASS_HEADS`: mmdet's box and mask heads, mmseg's decode and
    auxiliary heads) differs from the number of those classes in the dataset of the first of
    ``splits`` that has one, naming the key and the expected value. Only mmdet and mmseg
    configs: fastmim's classifiers may train on a subset of their dataset's classes."""
    heads = CLASS_HEADS.get(cfg.get('default_scope'))
    model = cfg.get('model')
    if heads is None or not isinstance(model, dict):
        return
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        metainfo = _dataset_metainfo(cfg, loader.get('dataset')) if loader else None
        if metainfo is None:
            continue
        for key, num_classes, entry in _head_classes(model, heads):
            entry = entry if metainfo.get(entry) is not None else 'classes'
            classes = metainfo[entry]
            if num_classes != len(classes):
                kind = entry.replace('_', ' ')
                shown = [*map(str, classes[:3]), *(['...'] if len(classes) > 3 else [])]
                raise LaunchError(
                    f'{key}={num_classes}, but {split}_dataloader.dataset has {len(classes)} '
                    f'{kind} ({", ".join(shown)}); set it with '
                    f'--cfg-options {key}={len(classes)}')
        return
