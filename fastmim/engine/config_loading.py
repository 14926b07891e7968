"""Loading a config file for a run: ``--cfg-options`` merged, and what neither the file nor
the options can mean refused or warned about before any work starts (a missing or invalid file,
a key the config lacks, a word or a list given for a number, a dict on the command line, a
training length or seed no run can use, a dataloader size or lr that torch refuses).

Every tool that starts a Runner loads its config here (:func:`load_config`); the command line
itself is parsed in :mod:`fastmim.cli`.
"""
import ast
import difflib
import importlib.util
import logging
import os
import os.path as osp

from mmengine.logging import print_log

from fastmim.errors import LaunchError


def _check_config_package(config: str) -> None:
    """The package of ``'<package>::<path>'`` must be one whose configs mmengine reads: a
    misspelt one ('fastmin::') would fail on an assertion of mmengine, a traceback in the
    tools."""
    from mmengine.config.utils import MODULE2PACKAGE
    package = config.split('::', 1)[0]
    if package not in MODULE2PACKAGE:
        raise ValueError(f'config {config!r}: {package!r} is not a package whose configs '
                         f'mmengine reads; expected one of {sorted(MODULE2PACKAGE)}')


def packaged_config_file(config) -> str:
    """The file ``'<package>::<path>'`` names (``'fastmim::fastmim/vit_b_hog_800e.py'``, as
    ``get_model`` and ``_base_`` take it): ``<path>`` under the package's ``.mim/configs``,
    where mmengine resolves a ``_base_`` (read as a path, the tools would call it 'config file
    not found'). Any other config is returned as given."""
    config = str(config)
    if '::' not in config:
        return config
    from mmengine.config.utils import MODULE2PACKAGE
    from mmengine.utils import get_installed_path
    _check_config_package(config)
    package, relative = config.split('::', 1)
    if importlib.util.find_spec(package) is None:  # mmengine's lookup: a pkg_resources traceback
        raise ValueError(f'config {config!r}: {package} is not installed')
    return osp.join(get_installed_path(MODULE2PACKAGE[package]), '.mim', 'configs', relative)


def load_config(path, cfg_options=None, builds_model=True):
    """Load a config file (or ``'<package>::<path>'``, :func:`packaged_config_file`) and apply
    ``--cfg-options``: a missing file is one error naming it (a missing ``_base_`` file with the
    config that names it), a config that is no valid Python one naming the file and line, and a key
    the config lacks is added with a warning (:func:`added_keys`; none for an argument the entry's
    class names, :func:`~fastmim.engine.config_keys.added_arguments`), as is an option that sets a
    variable whose value the settings copied when the file was read (:func:`warn_copied_variables`),
    a pipeline variable that is not the pipeline that runs (:func:`warn_unused_pipelines`), a
    progressive-resolution stages variable the hook does not run (:func:`warn_unused_stages`), a
    schedule that does not span the training (:func:`warn_schedule_length`) and pipelines that feed
    another input size than the backbone is built for (:func:`warn_input_size_mismatch`), and slide
    inference that may crop an unpadded evaluation image the backbone cannot take
    (:func:`warn_unpadded_slide_crops`, where the model is built); a training length or seed no run
    can use is refused (:func:`_refuse_unusable_counts`), as are a dataloader's ``batch_size`` or
    ``num_workers`` and an ``lr`` that torch refuses (:func:`_refuse_unusable_loader_sizes_and_lr`),
    a scheduler that does not end after it begins (:func:`_refuse_empty_schedulers`), a FastMIM
    training input size that the mask blocks do not tile or ``mask_ratio`` that leaves none of them
    visible (:func:`_refuse_what_the_mask_blocks_cannot_take`), an mmseg training or evaluation
    padding of both or neither of size and size_divisor (:func:`_refuse_paddings_mmseg_refuses`), a
    crop, padded size or ``model.backbone.img_size`` the backbone cannot take
    (:func:`_refuse_sizes_the_backbone_cannot_take`, where the model is built), a FastMIM training
    input size the backbone's output stride does not divide
    (:func:`_refuse_pretraining_sizes_off_the_output_stride`, where the model is built) and a key
    added where no class takes it or a type no registry knows (:func:`_refuse_what_no_class_takes`),
    a list entry the config lacks (:func:`_refuse_list_entries_the_config_lacks`) and a key with an
    empty part (:func:`_refuse_empty_key_parts`). ``builds_model``: the caller builds the config's
    model, so a config that cannot give one, a ``_base_`` fragment, is refused first
    (:func:`_refuse_what_builds_no_model`); False where the config is only read (printed)."""
    from mmengine.config import Config

    from fastmim.config_file import check_config_file
    from fastmim.engine.copied_variables import warn_copied_variables
    from fastmim.engine.hooks.progressive_resolution_hook import STAGES_VARIABLE, warn_unused_stages
    from fastmim.engine.input_sizes import warn_input_size_mismatch, warn_unpadded_slide_crops
    from fastmim.engine.pipeline_variables import warn_unused_pipelines
    from fastmim.engine.schedule_length import (LENGTH_VARIABLES, WARMUP_VARIABLES,
                                                warn_schedule_length)
    try:
        check_config_file(packaged_config_file(path), given=path)
    except (OSError, ValueError) as error:
        raise LaunchError(str(error)) from None
    path = packaged_config_file(path)
    try:
        cfg = Config.fromfile(path)
    except SyntaxError as error:
        raise LaunchError(_syntax_error_message(error, path)) from None
    except FileNotFoundError as error:
        raise LaunchError(_missing_base_message(error, path)) from None
    if builds_model:
        _refuse_what_builds_no_model(cfg, cfg_options or {}, path)
    copied = set()
    if cfg_options:
        tree = cfg.to_dict()
        _refuse_empty_key_parts(cfg_options)
        _refuse_list_entries_the_config_lacks(tree, cfg_options, path)
        _refuse_dict_values(cfg_options, path)
        _refuse_text_for_numbers(tree, cfg_options, path)
        _warn_lists_for_numbers(tree, cfg_options, path)
        _refuse_what_no_class_takes(tree, cfg_options, path, cfg.get('default_scope'))
        from fastmim.engine.config_keys import added_arguments
        arguments = added_arguments(tree, cfg_options)
        for key, close in added_keys(tree, cfg_options):
            if key in arguments:
                continue
            hint = f' (did you mean {" or ".join(close)}?)' if close else ''
            print_log(f'--cfg-options {key}: {path} has no such key, it is added{hint}',
                      logger='current', level=logging.WARNING)
        copied = warn_copied_variables(
            tree, cfg_options, path,
            checked_elsewhere=(*LENGTH_VARIABLES, *WARMUP_VARIABLES, STAGES_VARIABLE))
        _open_unset_settings(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    _refuse_unusable_counts(cfg, path)
    _refuse_unusable_loader_sizes_and_lr(cfg, path)
    _refuse_empty_schedulers(cfg, path)
    _refuse_what_the_mask_blocks_cannot_take(cfg, path)
    _refuse_paddings_mmseg_refuses(cfg, path)
    if builds_model:  # asks the backbone's class: imports the models
        _refuse_sizes_the_backbone_cannot_take(cfg, path)
        _refuse_pretraining_sizes_off_the_output_stride(cfg, path)
    _no_worker_settings_without_workers(cfg)
    warn_unused_pipelines(cfg, path, cfg_options, warned=copied)
    warn_unused_stages(cfg, path, cfg_options)
    warn_schedule_length(cfg, path, cfg_options)
    warn_input_size_mismatch(cfg, path)
    if builds_model:  # asks the backbone's class: imports the models
        warn_unpadded_slide_crops(cfg, path)
    return cfg


# What a config given to a tool that builds a model is pointed to instead of a fragment.
FULL_CONFIGS = 'configs/fastmim/vit_b_hog_800e.py or configs/finetune/vit_b_ft_100e.py'


def _refuse_what_builds_no_model(cfg, cfg_options, path):
    """A config without a ``model`` (a ``_base_`` fragment such as ``default_runtime.py``, a
    results JSON) ends in ``KeyError: model`` or an AttributeError traceback where the tool
    reaches for it; one whose model is fastmim's but that sets no ``default_scope`` (a model
    fragment: ``configs/_base_/default_runtime.py`` sets it) makes mmengine look the model up
    in its own registry, which refuses it only after the work dir is made. A config that sets
    its own scope (the mmdet and mmseg projects') or names ``fastmim.X`` is left alone."""
    from mmengine.registry import MODELS as MMENGINE_MODELS

    from fastmim.registry import MODELS
    model = cfg.get('model')
    if not isinstance(model, dict):
        raise LaunchError(f'{path} sets no `model`: a `_base_` fragment or not a training '
                          f'config; give a full config such as {FULL_CONFIGS}')
    model_type = cfg_options.get('model.type', model.get('type'))
    if (cfg_options.get('default_scope', cfg.get('default_scope')) is None
            and isinstance(model_type, str) and '.' not in model_type
            and model_type not in MMENGINE_MODELS.module_dict
            and MODELS.get(model_type) is not None):
        raise LaunchError(f"{path} sets no default_scope, so mmengine looks its model "
                          f"{model_type} up among its own, which lack it (a `_base_` "
                          f"fragment?); give a full config such as {FULL_CONFIGS}, or set "
                          f"default_scope = 'fastmim' (configs/_base_/default_runtime.py sets it)")


def missing_checkpoint_hint(cfg, key, path) -> str:
    """What to do about the start checkpoint ``path`` (set at ``key``, a config key or
    ``--resume``) that is not there: run the command that writes it, when the config names
    one in its variable ``checkpoints_made_by`` (``{path: command}``: the demo fine-tuning
    configs start from the last checkpoint of the pre-training demo), and, for a pre-trained
    ``init_cfg``, train from scratch instead. Empty for a file that exists: an unreadable one
    is a problem of its own. A relative path that is there from the config's checkout (a
    tool run from another directory) is named there instead
    (:func:`_relative_to_the_checkout`)."""
    if osp.exists(osp.expanduser(path)):
        return ''
    made_by = {osp.normpath(made): command
               for made, command in (cfg.get('checkpoints_made_by') or {}).items()}
    hints = []
    elsewhere = _relative_to_the_checkout(cfg, path)
    if elsewhere:
        hints.append(elsewhere)
    elif osp.normpath(path) in made_by:
        hints.append(f'it is made by {made_by[osp.normpath(path)]}')
    if key.endswith('.init_cfg.checkpoint'):
        hints.append('to train from scratch instead: --cfg-options '
                     f'{key[:-len(".checkpoint")]}=None')
    return ''.join(f'; {hint}' for hint in hints)


def _relative_to_the_checkout(cfg, path) -> str:
    """For a relative ``path`` that is not there from the current directory but is from the
    checkout of the config (the folder above its ``configs/``, where the demos write
    ``work_dirs/``), where it is and how to reach it; else ''."""
    if osp.isabs(osp.expanduser(path)) or not cfg.filename:
        return ''
    folder = osp.dirname(osp.abspath(cfg.filename))
    while osp.basename(folder) != 'configs':
        if osp.dirname(folder) == folder:
            return ''
        folder = osp.dirname(folder)
    checkout = osp.dirname(folder)
    there = osp.join(checkout, path)
    if not osp.exists(there):
        return ''
    return (f'it is relative to the current directory {os.getcwd()}, and {there} exists: run '
            f'from {checkout} or give the full path')


def _refuse_what_no_class_takes(tree, cfg_options, path, default_scope):
    """A key added under an entry whose class cannot take it, or a ``type`` that no registry
    knows, is refused in one line with the close names
    (:func:`~fastmim.engine.config_keys.mistyped_option_keys`,
    :func:`~fastmim.engine.config_keys.unknown_option_types`): the class or the registry
    would refuse it only once the Runner is built, after the start-up."""
    from fastmim.engine.config_keys import mistyped_option_keys, unknown_option_types
    for option, refusal, close in [*mistyped_option_keys(tree, cfg_options),
                                   *unknown_option_types(tree, cfg_options, default_scope)]:
        hint = f'; did you mean {" or ".join(map(repr, close))}?' if close else ''
        raise LaunchError(f'--cfg-options {option}: {path}: {refusal}{hint}')


def _open_unset_settings(cfg, cfg_options):
    """Make a setting the config leaves ``None`` an empty dict where ``--cfg-options`` sets a
    key below it: ``optim_wrapper.clip_grad.max_norm=3`` (the recipes set ``clip_grad=None``;
    the guarded wrappers' errors advise clipping) would fail in mmengine's merge ('cannot
    inherit from base because clip_grad is a dict in the child config but is of type
    NoneType'), and a whole dict is refused on the command line, so the setting could not be
    turned on there."""
    for key in cfg_options:
        node = cfg._cfg_dict
        for part in key.split('.')[:-1]:
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                if node[part] is None:
                    node[part] = {}
                    print_log(f'--cfg-options {key}: {part} is None in the config; it becomes '
                              f'a dict of the keys given', logger='current')
                node = node[part]
            else:
                break


# numpy seeds its generators (mmengine's set_random_seed) with 32-bit unsigned integers only.
SEED_LIMIT = 2 ** 32


def _refuse_unusable_counts(cfg, path):
    """A training length, validation interval or seed (from the file or ``--cfg-options``) that
    no run can use. mmengine refuses ``max_epochs=1.5`` with a bare assertion, numpy a seed of
    -1 from compiled code, and ``val_interval=0`` divides by zero after the first epoch: each
    a traceback naming no key. A whole float (``max_epochs = 800 * 0.5``) is accepted, as
    mmengine's loops accept it."""
    train_cfg = cfg.get('train_cfg') or {}
    for key in ('max_epochs', 'max_iters', 'val_interval'):
        value = train_cfg.get(key)
        if value is not None and not (_is_number(value) and float(value).is_integer()
                                      and value >= 1):
            raise LaunchError(f'train_cfg.{key}={value!r} (from {path} or --cfg-options): '
                              f'expected a whole number of at least 1')
    seed = (cfg.get('randomness') or {}).get('seed')
    if seed is not None and not (isinstance(seed, int) and not isinstance(seed, bool)
                                 and 0 <= seed < SEED_LIMIT):
        raise LaunchError(f'randomness.seed={seed!r} (from {path} or --cfg-options): expected '
                          f'an integer from 0 to 2**32 - 1, or None for a random one')


def _refuse_unusable_loader_sizes_and_lr(cfg, path):
    """A dataloader's ``batch_size`` below 1 or ``num_workers`` below 0, or an optimiser ``lr``
    below 0 (from the file or ``--cfg-options``): torch refuses each only once the Runner
    builds the dataloader or the optimiser, seconds into the start-up, in errors that name no
    key ('batch_size should be a positive integer value', 'Invalid learning rate: -1'). A
    setting left out is not checked; a bool is refused (Python counts ``True`` as 1);
    an ``lr`` of 0 is taken, as torch and mmengine take it (a warm-up from zero)."""
    for key, loader in dataloaders(cfg):
        for setting, least in (('batch_size', 1), ('num_workers', 0)):
            value = loader.get(setting, least)  # left out: torch's default
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise LaunchError(f'{key}.{setting}={value!r} (from {path} or --cfg-options): '
                                  f'expected an integer of at least {least}')
    optimizer = (cfg.get('optim_wrapper') or {}).get('optimizer') or {}
    lr = optimizer.get('lr', 0)  # left out: the optimiser's default
    if not (_is_number(lr) and lr >= 0):  # NaN is not >= 0 either
        raise LaunchError(f'optim_wrapper.optimizer.lr={lr!r} (from {path} or --cfg-options): '
                          'expected a number of at least 0')


def dataloaders(cfg):
    """``(key, settings)`` of each dataloader the config sets: ``train_dataloader``,
    ``val_dataloader``, ``test_dataloader`` and those a loop builds itself
    (``test_cfg.bank_dataloader``, the kNN bank). One left None is not built. The settings are
    the config's own dicts: a caller may change them in place."""
    for name, value in cfg.items():
        if name.endswith('_dataloader') and isinstance(value, dict):
            yield name, value
        elif name.endswith('_cfg') and isinstance(value, dict):
            yield from ((f'{name}.{inner}', loader) for inner, loader in value.items()
                        if str(inner).endswith('_dataloader') and isinstance(loader, dict))


def _refuse_empty_schedulers(cfg, path):
    """A scheduler that does not end after it begins (:func:`~fastmim.engine.schedule_length.
    empty_scheduler_spans`): mmengine refuses it only once the Runner is built, in
    iterations, naming no entry."""
    from fastmim.engine.schedule_length import empty_scheduler_spans
    for problem in empty_scheduler_spans(cfg):
        raise LaunchError(f'{path}: {problem}')


def _refuse_what_the_mask_blocks_cannot_take(cfg, path):
    """An input size the training feeds a FastMIM model
    (:func:`~fastmim.engine.input_sizes.trained_input_sizes`) that its mask blocks do not
    tile, or a ``model.mask_ratio`` that leaves none of them visible, in the mask generator's
    words (:func:`~fastmim.mask_blocks.blocks_do_not_tile`,
    :func:`~fastmim.mask_blocks.no_block_visible`): the model refuses either only at the first
    training iteration, once the model, the dataset and the work dir are made (a progressive
    stage's size before the first epoch). Where the config gives no plain number for the ratio,
    the block size or an input size, or its data preprocessor pads the batches to another size
    (``pad_size_divisor``), the sizes are left to the model."""
    from fastmim.engine.input_sizes import trained_input_sizes
    from fastmim.mask_blocks import blocks_do_not_tile, no_block_visible
    from fastmim.registry import type_name
    model = cfg.get('model')
    if not isinstance(model, dict) or type_name(model) != 'FastMIM':
        return
    ratio, block = model.get('mask_ratio'), model.get('block_size')
    padding = (model.get('data_preprocessor') or {}).get('pad_size_divisor', 1)
    if not (isinstance(block, int) and not isinstance(block, bool) and block >= 1) or padding != 1:
        return  # left out, refused by FastMIM as it is built, or padded
    for key, value, (height, width), setter in trained_input_sizes(cfg):
        untiled = blocks_do_not_tile(height, width, block, key)
        if untiled:
            raise LaunchError(f'{key}={value!r} (from {path} or --cfg-options): {untiled}')
        reason = (no_block_visible(ratio, height, width, block)
                  if _is_number(ratio) and 0 < ratio < 1 else '')
        if reason:
            raise LaunchError(f'model.mask_ratio={ratio!r} (from {path} or --cfg-options): '
                              f'{reason}; the input size is set at {key} ({setter}), the block '
                              'size at model.block_size')


def _refuse_sizes_the_backbone_cannot_take(cfg, path):
    """A training crop, fastmim pipeline crop (pre-training's too), progressive stage size,
    padded size, slide-test crop or ``model.backbone.img_size`` that is no multiple of what the
    backbone takes
    (:func:`~fastmim.engine.input_sizes.sizes_off_the_backbone_multiple`): the backbone
    refuses it in its forward, naming no key, an evaluation size only at the first
    validation, after hours of training; its ``img_size`` as it is built."""
    from fastmim.engine.input_sizes import sizes_off_the_backbone_multiple
    for key, value, why in sizes_off_the_backbone_multiple(cfg):
        raise LaunchError(f'{key}={value!r} (from {path} or --cfg-options): {why}')


def _refuse_pretraining_sizes_off_the_output_stride(cfg, path):
    """A FastMIM training input size that the backbone's output stride does not divide
    (:func:`~fastmim.engine.input_sizes.pretraining_sizes_off_the_output_stride`), which the
    model refuses only at the first training iteration, once the dataset and the work dir are
    made."""
    from fastmim.engine.input_sizes import pretraining_sizes_off_the_output_stride
    for key, value, why in pretraining_sizes_off_the_output_stride(cfg):
        raise LaunchError(f'{key}={value!r} (from {path} or --cfg-options): {why}')


def _refuse_paddings_mmseg_refuses(cfg, path):
    """An mmseg training or ``test_cfg`` padding that SegDataPreProcessor asserts against
    (:func:`~fastmim.engine.input_sizes.paddings_mmseg_refuses`) only at the first training
    iteration or validation."""
    from fastmim.engine.input_sizes import paddings_mmseg_refuses
    for key, value, why in paddings_mmseg_refuses(cfg):
        raise LaunchError(f'{key}={value!r} (from {path} or --cfg-options): {why}')


def _no_worker_settings_without_workers(cfg):
    """Leave out ``persistent_workers`` and ``prefetch_factor`` of a dataloader with
    ``num_workers=0``, the usual way to shrink a run for a test: torch's DataLoader refuses
    either without workers ('persistent_workers option needs num_workers > 0'), naming no
    config key, and without workers neither means anything."""
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(name)
        if not isinstance(loader, dict) or loader.get('num_workers') != 0:
            continue
        dropped = [key for key in ('persistent_workers', 'prefetch_factor')
                   if loader.get(key) not in (None, False)]
        for key in dropped:
            loader.pop(key)
        if dropped:
            print_log(f'{name}.num_workers=0: {" and ".join(dropped)} left out (they need '
                      f'worker processes)', logger='current')


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _refuse_empty_key_parts(cfg_options):
    """A key with an empty part between its dots (``model..mask_ratio``, a leading or a
    trailing dot) names no setting: the checks below would name a key ``''`` (a message
    cut off at 'takes no '), and mmengine would add it or fail in a TypeError."""
    for key in cfg_options:
        if '' in key.split('.'):
            raise LaunchError(f'--cfg-options {key}: an empty key part (a leading, trailing '
                              'or double dot)')


def _refuse_list_entries_the_config_lacks(tree, cfg_options, path):
    """A key that runs into a list (``tree``, plain) past its end (``custom_hooks.1.interval``
    where the config lists one hook), or with a name where the list takes an index: mmengine
    cannot add a list entry, and its merge ends in a KeyError that prints the whole list and
    names no option, or a TypeError traceback."""
    for key in cfg_options:
        parts = key.split('.')
        node, followed = follow_key(tree, key)
        if followed == len(parts) or not isinstance(node, (list, tuple)):
            continue
        holder, count = '.'.join(parts[:followed]), len(node)
        if not count:
            raise LaunchError(f'--cfg-options {key}: {path}: {holder} is an empty list')
        entries = f'{count} {"entry" if count == 1 else "entries"}'
        if parts[followed].isdigit():
            raise LaunchError(f'--cfg-options {key}: {path}: {holder} has {entries} '
                              f'(index 0 to {count - 1})')
        raise LaunchError(f'--cfg-options {key}: {path}: {holder} is a list of {entries}: '
                          f'give an index (0 to {count - 1})')


def _refuse_dict_values(cfg_options, path):
    """mmengine's ``DictAction`` parses lists and tuples but keeps a dict as the string typed
    (``model.backbone={'type': ...}``), which would reach the module builder as ``cfg should be
    a dict ... got <class 'str'>``, naming no key."""
    for key, value in cfg_options.items():
        if isinstance(value, str) and value.lstrip().startswith(('{', 'dict(')):
            raise LaunchError(
                f'--cfg-options {key}={value}: a dict cannot be given on the command line '
                f'(mmengine keeps it as a string); set its keys one by one ({key}.type=...), '
                f"or write a config with _base_ = ['{path}'] that sets it")


def _syntax_error_message(error, path):
    """One line for a config, or one of its bases, that is no valid Python. mmengine parses
    each file without naming it (the error says ``<unknown>``), so the file given is parsed
    again here to tell whether the error is its own or a base's."""
    if error.lineno is None:  # mmengine's own wrapper, which names the file
        return str(error.msg)
    try:
        with open(path, encoding='utf-8') as source:
            ast.parse(source.read(), path)
        where = f'a _base_ file of {path}'
    except SyntaxError:
        where = path
    return f'{where}, line {error.lineno}: {error.msg}: {(error.text or "").strip()}'


def _missing_base_message(error, path):
    """mmengine's error for a ``_base_`` file that is not there names that file only
    (``[Errno 2] No such file or directory: '.../x.py'``), not the config whose ``_base_``
    line names it."""
    missing = osp.normpath(error.filename or '')
    holder = _holder_of_base(path, missing)
    if holder is None:
        return f'{path}: file not found while reading the config: {missing}'
    return f'{holder}: _base_ file not found: {missing}'


def _holder_of_base(config, missing):
    """The config among ``config`` and its bases whose ``_base_`` names the file ``missing``
    (resolved as mmengine resolves it); None if none does."""
    from mmengine.config import Config
    for base in Config._get_base_files(config):
        base_path = osp.normpath(Config._get_cfg_path(base, config)[0])
        if base_path == missing:
            return config
        found = _holder_of_base(base_path, missing) if osp.isfile(base_path) else None
        if found:
            return found
    return None


def follow_key(tree, key):
    """Follow ``key`` through the plain config ``tree`` as mmengine does (dots; list indices):
    ``(node, parts followed)``, where ``node`` is the value at ``key`` when every part was
    followed, else the last node reached."""
    node, parts = tree, key.split('.')
    for depth, part in enumerate(parts):
        if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return node, depth
    return node, len(parts)


def _refuse_text_for_numbers(tree, cfg_options, path):
    """A number or a flag of the config (``tree``, plain) given a word on the command line
    (``model.mask_ratio=abc``, ``optim_wrapper.optimizer.lr=1e-3x``) would reach the module as
    a string and fail inside it with an interpreter TypeError ('<' not supported between
    'str' and 'float'), naming neither the key nor the value."""
    for key, value in cfg_options.items():
        current, followed = follow_key(tree, key)
        if (followed == len(key.split('.')) and isinstance(value, str)
                and isinstance(current, (int, float))):
            kind = 'True or False' if isinstance(current, bool) else 'a number'
            raise LaunchError(f'--cfg-options {key}={value}: {path} has {kind} there '
                              f'({current!r}); {value!r} is not one')


def _warn_lists_for_numbers(tree, cfg_options, path):
    """mmengine reads ``model.mask_ratio=0,75`` (a decimal comma) as the list ``[0, 75]``; it
    would reach the module and fail there in an interpreter TypeError ('<' not supported
    between 'int' and 'list'). A warning, not a refusal: some numbers of a config may be given as a
    sequence (a crop ``size=224`` as ``224,160``, a jitter factor as a range)."""
    for key, value in cfg_options.items():
        current, followed = follow_key(tree, key)
        if (followed == len(key.split('.')) and isinstance(value, (list, tuple))
                and isinstance(current, (int, float)) and not isinstance(current, bool)):
            print_log(f'--cfg-options {key}: {path} has a number there ({current!r}), given '
                      f'the list {list(value)} (commas separate list items; a decimal number '
                      'takes a point)', logger='current', level=logging.WARNING)


def added_keys(tree, cfg_options):
    """``(key, close names)`` for each ``--cfg-options`` key that the config does not have yet
    (``tree``: the config as plain dicts and lists, ``cfg.to_dict()``).

    mmengine adds such a key without a word, so a typo (``train_dataloader.batch_sise=4``)
    either fails much later, inside the class it reaches, or is never read at all. Adding a
    key is legitimate too (an argument the config leaves at its default), so the caller warns
    rather than refuses; the close names are the existing keys beside it that the new one
    resembles. Only the first missing part of a path is reported, and paths through list
    indices (``train_pipeline.1.size``) are followed as mmengine follows them.
    """
    found = []
    for key in cfg_options:
        parts = key.split('.')
        node, followed = follow_key(tree, key)
        if followed < len(parts) and isinstance(node, dict):
            close = difflib.get_close_matches(parts[followed], [str(name) for name in node], n=2)
            found.append(('.'.join(parts[:followed + 1]), close))
    return found
