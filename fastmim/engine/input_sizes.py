"""Warn when a config's pipelines feed another input size than its backbone is built for.

A change of input size touches several keys: the training crop, RandAugment's size and the test
crop in the pipelines, and ``model.backbone.img_size``, the size the backbone's
resolution-dependent tables are built for and that its checkpoints record. The backbones take
inputs of any size (a learned position table is resized, a sin-cos one recomputed), so a config
that changes only some of them runs without an error: a child config that set ``img_size=160``
alone pre-trained on the base's 128-px crops, and its checkpoints recorded both sizes. The
pipelines are what the run feeds; they are compared with ``img_size`` once the config is
complete.
"""
import logging
from typing import List, Optional, Tuple

from mmengine.logging import print_log

from fastmim.engine.config_loading import dataloaders
from fastmim.registry import type_name

# The transforms whose argument is the side of the image the model gets, and that argument.
INPUT_SIZE_ARGUMENTS = {'RandomResizedCrop': 'size', 'RandAugment': 'img_size',
                        'ResizeShorterCenterCrop': 'crop_size'}
DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
# The downstream (mmseg, mmdet) training crop and its argument, fed as it is unless the data
# preprocessor pads it.
DOWNSTREAM_CROP_ARGUMENTS = {'RandomCrop': 'crop_size'}
# The crops of fastmim's pipelines (pre-training, fine-tuning, probing, kNN) and their
# argument, fed as they are unless the data preprocessor pads them (pad_size_divisor pads every
# batch there, the evaluation ones too).
FASTMIM_CROP_ARGUMENTS = {'RandomResizedCrop': 'size', 'ResizeShorterCenterCrop': 'crop_size'}
# The crop whose size a ProgressiveResolutionHook's stages set in the training pipeline.
STAGED_CROP = 'RandomResizedCrop'
# The data preprocessor's arguments that pad every image to a multiple: mmseg's, mmdet's.
PAD_DIVISOR_ARGUMENTS = ('size_divisor', 'pad_size_divisor')
# mmseg's data preprocessor: its size and size_divisor pad the training batches, its test_cfg
# (size or size_divisor) the evaluation images, which are stacked as they are without one.
EVALUATION_PADDED_BY_TEST_CFG = 'SegDataPreProcessor'
EVALUATION_LOADERS = ('val_dataloader', 'test_dataloader')
# mmdet's data preprocessor: its pad_size_divisor pads the evaluation batches as it pads the
# training ones (its default, 1, pads nothing).
EVALUATION_PADDED_BY_DIVISOR = 'DetDataPreprocessor'
# Pipeline transforms that make an image's sides multiples of their size_divisor (mmseg's,
# mmcv's).
SIZE_DIVISOR_TRANSFORMS = ('ResizeToMultiple', 'Pad')
# The hook whose stages set the training input size epoch by epoch.
PROGRESSIVE_HOOK = 'ProgressiveResolutionHook'


def warn_input_size_mismatch(cfg, path) -> None:
    """Log one warning naming every pipeline transform whose input size is not
    ``model.backbone.img_size``. Configs whose backbone names no ``img_size`` (a CNN, PVTv2)
    or whose pipelines hold none of these transforms (mmdet, mmseg) are not compared."""
    backbone = (cfg.get('model') or {}).get('backbone') or {}
    built = size_pair(backbone.get('img_size'))
    if built is None:
        return
    others = [place for place in _input_sizes(cfg) if place[1] != built]
    if not others:
        return
    places = ', '.join(f'{where} {_shown(size)}' for where, size in others)
    print_log(f'{path}: model.backbone.img_size is {_shown(built)}, but the pipelines feed '
              f'other sizes: {places}. The run uses what the pipelines feed (the backbone '
              f'takes any size); img_size sets what its position tables are built for and what '
              f'its checkpoints record. Give them one size', logger='current',
              level=logging.WARNING)


def fed_input_size(cfg) -> Optional[Tuple[str, Tuple[int, int]]]:
    """``(where, (h, w))`` of the first input-size argument of the pipelines, the training one
    first: the size the run feeds the model, at which tools measure it
    (tools/analysis/get_flops.py); None where the pipelines name none (mmdet, mmseg)."""
    return next(iter(_input_sizes(cfg)), None)


def trained_input_sizes(cfg) -> List[Tuple[str, object, Tuple[int, int], str]]:
    """``(key, value, (h, w), setter)`` of each input size the training feeds the model: the
    stages of a ``ProgressiveResolutionHook`` (:func:`_stage_sizes`), which replace the
    training crop's size, else the crops of the training pipeline; ``setter`` is the hook or
    the transform whose argument the key is."""
    staged = _stage_sizes(cfg)
    if staged is not None:
        return staged
    return [crop for crop in _fastmim_crops(cfg) if crop[0].startswith('train_dataloader.')]


def _stage_sizes(cfg) -> Optional[List[Tuple[str, object, Tuple[int, int], str]]]:
    """``(key, value, (h, w), setter)`` of each stage's input size of the config's
    ``ProgressiveResolutionHook``, which sets the training crop's size from the first stage
    on; None without such a hook. A stage size that is no int or pair is left out (the hook
    refuses it as it is built)."""
    for index, hook in enumerate(cfg.get('custom_hooks') or []):
        stages = hook.get('stages') if isinstance(hook, dict) else None
        if type_name(hook) == PROGRESSIVE_HOOK and isinstance(stages, (list, tuple)):
            return [(f'custom_hooks.{index}.stages.{number}.input_size', stage['input_size'],
                     size_pair(stage['input_size']), PROGRESSIVE_HOOK)
                    for number, stage in enumerate(stages)
                    if isinstance(stage, dict) and size_pair(stage.get('input_size'))]
    return None


def test_resize_size(cfg) -> Optional[Tuple[str, Tuple[int, int]]]:
    """``(where, (h, w))`` of the largest image the test pipeline's ``Resize`` makes (mmdet's):
    its ``scale`` ``(long, short)`` with ``keep_ratio`` bounds an image's long and short sides,
    reached by a landscape image of that aspect ratio, ``(short, long)``; without
    ``keep_ratio`` ``scale`` is ``(w, h)``. None where the test pipeline has no such
    ``Resize``. The size mmdet's own FLOPs tables use (1333 x 800: ``(800, 1333)``), before
    the data preprocessor's padding."""
    pipeline = ((cfg.get('test_dataloader') or {}).get('dataset') or {}).get('pipeline') or []
    for index, transform in enumerate(pipeline):
        name = str(transform.get('type', '')).rsplit('.', 1)[-1]
        scale = size_pair(transform.get('scale')) if name == 'Resize' else None
        if scale is not None:
            long_or_w, short_or_h = scale
            size = ((min(scale), max(scale)) if transform.get('keep_ratio')
                    else (short_or_h, long_or_w))
            return f'test_dataloader.dataset.pipeline.{index}.scale ({name})', size
    return None


def sizes_off_the_backbone_multiple(cfg) -> List[Tuple[str, object, str]]:
    """``(key, value, why)`` for each size that reaches a backbone that takes multiples of a
    number only (a plain ViT's patch size, Swin's and CMT's total stride: :meth:`~fastmim.
    models.utils.backbone_contract.BackboneContract.input_multiple`, asked of the class the
    config names, not built) and is no multiple of it: ``model.backbone.img_size``, the size
    the backbone is built for, which such a backbone refuses as it is built (after the dataset
    and the work dir are made), ``model.data_preprocessor.size``
    (what mmseg pads the training images to), the training pipeline's ``RandomCrop.crop_size``,
    the crops of fastmim's pipelines (:func:`_fastmim_crops`, pre-training's too) and the
    sizes of progressive-resolution stages (:func:`_stage_sizes`) where the data preprocessor
    pads them to neither that size nor a multiple of the number, ``model.test_cfg.crop_size``
    of slide inference (its crops reach the backbone unpadded), the evaluation images of
    mmseg's whole-image inference (:func:`_whole_inference_sizes`) and mmdet's evaluation
    padding (:func:`_detection_evaluation_sizes`). Each fails otherwise in the backbone's
    forward, naming no key: the evaluation sizes only at the first validation."""
    stated = _backbone_multiple(cfg)
    if stated is None:
        return []
    multiple, why = stated
    model = cfg['model']
    preprocessor = model.get('data_preprocessor') or {}
    padded_to = size_pair(preprocessor.get('size'))
    off = []
    built_for = model['backbone'].get('img_size')
    if size_pair(built_for) is not None and not _multiples(size_pair(built_for), multiple):
        off.append(('model.backbone.img_size', built_for, why))
    if padded_to is not None and not _multiples(padded_to, multiple):
        off.append(('model.data_preprocessor.size', preprocessor['size'], why))
    divisors = [preprocessor.get(name) for name in PAD_DIVISOR_ARGUMENTS]
    if not any(isinstance(divisor, int) and divisor % multiple == 0 for divisor in divisors):
        for where, value, crop, _ in [*_training_crops(cfg), *_fastmim_crops(cfg),
                                      *(_stage_sizes(cfg) or [])]:
            fed = crop if padded_to is None else tuple(map(max, crop, padded_to))
            if not _multiples(fed, multiple):
                off.append((where, value, why))
    test_cfg = model.get('test_cfg') or {}
    test_crop = size_pair(test_cfg.get('crop_size'))
    if test_cfg.get('mode') == 'slide' and test_crop and not _multiples(test_crop, multiple):
        off.append(('model.test_cfg.crop_size', test_cfg['crop_size'],
                    f'{why}; slide inference feeds its crops unpadded'))
    return (off + _whole_inference_sizes(cfg, multiple, why)
            + _detection_evaluation_sizes(cfg, multiple, why))


def pretraining_sizes_off_the_output_stride(cfg) -> List[Tuple[str, object, str]]:
    """``(key, value, why)`` for each input size a FastMIM model is trained at
    (:func:`trained_input_sizes`) that the backbone's output stride does not divide
    (:meth:`~fastmim.models.utils.backbone_contract.BackboneContract.output_stride`, asked of
    the class the config names, not built): FastMIM predicts the target on the grid of the
    backbone's last map, and its ``check_input_size`` refuses such a size only at the first
    training iteration. It matters where the backbone itself takes any size (PVTv2's padded
    patch embeddings: a 144-px crop that 16-px blocks tile, stride 32 does not); others refuse
    the size as off their input multiple first. Where the data preprocessor pads the batches
    (``pad_size_divisor``) the sizes are left to the model."""
    model = cfg.get('model')
    if not isinstance(model, dict) or type_name(model) != 'FastMIM':
        return []
    if (model.get('data_preprocessor') or {}).get('pad_size_divisor', 1) != 1:
        return []
    backbone = model.get('backbone') or {}
    asked = getattr(_fastmim_backbone_class(backbone), 'output_stride', None)
    stride = asked(backbone) if asked else None
    if not isinstance(stride, int) or stride <= 1:
        return []
    why = (f'the backbone output stride {stride} ({type_name(backbone)}) does not divide it: '
           f'FastMIM predicts the target on the grid of the last map; make it a multiple of '
           f'{stride}')
    return [(key, value, why) for key, value, size, _ in trained_input_sizes(cfg)
            if not _multiples(size, stride)]


def warn_unpadded_slide_crops(cfg, path) -> None:
    """Warn where mmseg's slide inference (``model.test_cfg.mode='slide'``) may feed a backbone
    that takes multiples of a number (:func:`_backbone_multiple`) an evaluation image at its
    own size: it crops an image smaller than ``model.test_cfg.crop_size`` at that size,
    unpadded, and a test ``Resize`` with ``keep_ratio`` makes a side smaller than the crop for
    the most elongated images only (at scale (2048, 512) and a 512 crop, those wider than
    4:1). A warning, not a refusal: a dataset may hold none, and the others evaluate. Not where
    ``model.data_preprocessor.test_cfg`` pads such images to the crop or to multiples of the
    number (:func:`_pads_for_slide_inference`), or the pipeline makes the sides multiples
    after the Resize."""
    model = cfg.get('model') or {}
    test_cfg = model.get('test_cfg') or {}
    crop = size_pair(test_cfg.get('crop_size'))
    preprocessor = model.get('data_preprocessor') or {}
    if (test_cfg.get('mode') != 'slide' or crop is None
            or type_name(preprocessor) != EVALUATION_PADDED_BY_TEST_CFG):
        return
    stated = _backbone_multiple(cfg)
    padding = preprocessor.get('test_cfg')
    if stated is None or _pads_for_slide_inference(padding, crop, stated[0]):
        return
    multiple, why = stated
    for where, resize in _evaluation_resizes(cfg, multiple):
        scale = size_pair(resize.get('scale'))
        if scale is None or not resize.get('keep_ratio'):
            continue
        elongated = (f' (at scale {tuple(resize["scale"])}: one more elongated than '
                     f'{max(scale) / max(crop):g}:1)' if min(scale) >= max(crop) else '')
        print_log(f"{path}: model.test_cfg.mode='slide' with {where} (Resize, keep_ratio=True): "
                  f'an evaluation image that the Resize makes smaller than '
                  f'model.test_cfg.crop_size {crop} on a side{elongated} is cropped at its own '
                  f"size, unpadded (mmseg's slide inference pads nothing, and "
                  f'model.data_preprocessor.test_cfg={padding!r} pads it neither to the crop '
                  f'nor to multiples of {multiple}), and {why}: the validation fails at such '
                  f'an image. Set model.data_preprocessor.test_cfg=dict(size={crop}, '
                  f'size_divisor=None) to pad it to the crop (mmseg cuts the padding off the '
                  f'prediction)', logger='current', level=logging.WARNING)
        return


def _pads_for_slide_inference(padding, crop: Tuple[int, int], multiple: int) -> bool:
    """Whether mmseg's evaluation ``padding`` (``model.data_preprocessor.test_cfg``) makes
    every slide window a multiple of ``multiple``: a ``size`` as large as the crop pads the
    smaller images to it (the larger ones are cut into windows of the crop's size), a
    ``size_divisor`` of multiples pads every image to them."""
    padding = padding or {}
    size, divisor = size_pair(padding.get('size')), padding.get('size_divisor')
    return ((size is not None and size[0] >= crop[0] and size[1] >= crop[1])
            or (isinstance(divisor, int) and divisor % multiple == 0))


def _whole_inference_sizes(cfg, multiple: int, why: str) -> List[Tuple[str, object, str]]:
    """``(key, value, why)`` where mmseg's whole-image inference (``model.test_cfg.mode=
    'whole'``) feeds the backbone evaluation images whose sides are no multiples of
    ``multiple``: each image is fed at the size the evaluation pipeline's last ``Resize``
    gives it, padded only by ``model.data_preprocessor.test_cfg``: its ``size_divisor`` to a
    multiple, its ``size`` (h, w) only where the image is smaller. With ``keep_ratio`` the
    resized size follows each image's aspect ratio (512 x 683 for a 375 x 500 photo at scale
    (2048, 512)), a side up to the scale's longer one, so only a divisor, or a size of
    multiples that no side exceeds, makes it one; without, ``scale`` (w, h) is the size. A
    pipeline without ``Resize`` feeds the dataset's own sizes, which the config does not
    state: not judged."""
    model = cfg.get('model') or {}
    preprocessor = model.get('data_preprocessor') or {}
    padding = preprocessor.get('test_cfg') or {}
    divisor = padding.get('size_divisor')
    if ((model.get('test_cfg') or {}).get('mode') != 'whole'
            or type_name(preprocessor) != EVALUATION_PADDED_BY_TEST_CFG
            or (isinstance(divisor, int) and divisor % multiple == 0)):
        return []
    padded_to = size_pair(padding.get('size'))
    padded_only = 'padded only as model.data_preprocessor.test_cfg says (size and ' \
                  'size_divisor pad the training batches)'
    for where, resize in _evaluation_resizes(cfg, multiple):
        scale = size_pair(resize.get('scale'))
        if scale is None:
            continue
        if resize.get('keep_ratio'):
            longest = max(scale)  # either side of an image, whichever way round it is
            if (padded_to is None or not _multiples(padded_to, multiple)
                    or min(padded_to) < longest):
                return [('model.test_cfg.mode', 'whole',
                         f'{why}; whole-image inference feeds each image as {where} (Resize, '
                         f'keep_ratio=True) resizes it, to sides that follow its aspect '
                         f'ratio, {padded_only}: {_divisor_advice(padded_to, multiple)}')]
        elif not _multiples(_padded((scale[1], scale[0]), padded_to), multiple):
            return [(f'{where}.scale', resize['scale'],
                     f'{why}; whole-image inference feeds each image at this size (Resize '
                     f'scale (w, h) without keep_ratio), {padded_only}')]
    return []


def _detection_evaluation_sizes(cfg, multiple: int, why: str) -> List[Tuple[str, object, str]]:
    """``(key, value, why)`` where mmdet's DetDataPreprocessor feeds the backbone evaluation
    images whose sides are no multiples of ``multiple``: it pads every batch, the evaluation
    ones too, to multiples of its ``pad_size_divisor``, each image at the size the evaluation
    pipeline's last ``Resize`` gives it. With ``keep_ratio`` that size follows each image's
    aspect ratio (1024 x 1546 for a 424 x 640 photo at scale (1666, 1024)), so only a divisor
    that is a multiple of ``multiple`` makes it one; without, ``scale`` (w, h) padded to the
    divisor is the size."""
    preprocessor = (cfg.get('model') or {}).get('data_preprocessor') or {}
    divisor = preprocessor.get('pad_size_divisor', 1)
    if (type_name(preprocessor) != EVALUATION_PADDED_BY_DIVISOR or not isinstance(divisor, int)
            or divisor < 1 or divisor % multiple == 0):
        return []
    key = 'model.data_preprocessor.pad_size_divisor'
    padded = 'padded to multiples of pad_size_divisor'
    for where, resize in _evaluation_resizes(cfg, multiple):
        scale = size_pair(resize.get('scale'))
        if scale is None:
            continue
        if resize.get('keep_ratio'):
            return [(key, divisor, f'{why}; evaluation feeds each image as {where} (Resize, '
                                   f'keep_ratio=True) resizes it, to sides that follow its '
                                   f'aspect ratio, {padded}: give a multiple of {multiple}')]
        fed = tuple(-(-side // divisor) * divisor for side in (scale[1], scale[0]))
        if not _multiples(fed, multiple):
            return [(key, divisor, f'{why}; evaluation feeds each image as {where} (Resize '
                                   f'scale (w, h) without keep_ratio) resizes it, {padded}: '
                                   f'{fed[0]} x {fed[1]}; give a multiple of {multiple}')]
    return []


def _padded(size: Tuple[int, int], padded_to: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    """``size`` (h, w) once mmseg pads it to ``padded_to`` where it is smaller."""
    return size if padded_to is None else tuple(map(max, size, padded_to))


def _divisor_advice(padded_to: Optional[Tuple[int, int]], multiple: int) -> str:
    """How to pad every evaluation image to a multiple of ``multiple``; where the config's
    ``test_cfg`` pads to a size, that size goes: mmseg pads by one of the two (the segmentation
    recipe pads images smaller than its slide crop)."""
    if padded_to is None:
        return f'set model.data_preprocessor.test_cfg=dict(size_divisor={multiple})'
    return (f'set model.data_preprocessor.test_cfg=dict(size=None, size_divisor={multiple}) '
            f'(its size {padded_to} pads only the images smaller than it; mmseg pads by one '
            f'of the two)')


def paddings_mmseg_refuses(cfg) -> List[Tuple[str, object, str]]:
    """``(key, value, why)`` for an mmseg SegDataPreProcessor padding that sets both or
    neither of ``size`` and ``size_divisor``: it pads by exactly one of them (mmseg's
    ``stack_batch`` asserts 'only one of size and size_divisor should be valid'), the training
    batches by its own (:func:`_training_padding_mmseg_refuses`), the evaluation images by
    its ``test_cfg``'s where it has one, at the first validation, after the recipe's first
    16,000 iterations. Setting ``size_divisor`` on the command line, as the whole-image
    refusal advises, keeps a ``size`` the config sets."""
    preprocessor = (cfg.get('model') or {}).get('data_preprocessor') or {}
    if type_name(preprocessor) != EVALUATION_PADDED_BY_TEST_CFG:
        return []
    refused = _training_padding_mmseg_refuses(cfg, preprocessor)
    padding = preprocessor.get('test_cfg')
    if padding and (padding.get('size') is None) == (padding.get('size_divisor') is None):
        refused.append(('model.data_preprocessor.test_cfg', padding,
                        "mmseg's SegDataPreProcessor pads the evaluation images by exactly one "
                        "of size and size_divisor (its stack_batch asserts it at the first "
                        "validation): set the other one None"))
    return refused


def _training_padding_mmseg_refuses(cfg, preprocessor) -> List[Tuple[str, object, str]]:
    """``model.data_preprocessor.size`` where ``size_divisor`` is set too, or neither is, in
    a config that trains: mmseg asserts it at the first training iteration, once the datasets
    and the model are built. Without training batches (a config for testing alone) they pad
    nothing."""
    size, divisor = preprocessor.get('size'), preprocessor.get('size_divisor')
    if (size is None) != (divisor is None) or not cfg.get('train_dataloader'):
        return []
    advice = 'set one of them None' if size is not None else 'set one of them'
    return [('model.data_preprocessor.size', size,
             "mmseg's SegDataPreProcessor pads the training batches by exactly one of size "
             "and size_divisor (its stack_batch asserts it at the first training iteration), "
             f'and model.data_preprocessor.size_divisor is {divisor!r} too: {advice}')]


def _evaluation_resizes(cfg, multiple: int):
    """``(key, transform)`` of the last ``Resize`` of each evaluation pipeline (the one
    shared by validation and test named once), unless a later transform makes the sides
    multiples of ``multiple`` (:func:`_rounds_to_multiples`)."""
    for loader, pipeline in _distinct_pipelines(
            (loader, cfg.get(loader)) for loader in EVALUATION_LOADERS):
        resizes = [index for index, transform in enumerate(pipeline)
                   if type_name(transform) == 'Resize']
        if not resizes:
            continue
        last = resizes[-1]
        if not any(_rounds_to_multiples(transform, pipeline[last], multiple)
                   for transform in pipeline[last + 1:]):
            yield f'{loader}.dataset.pipeline.{last}', pipeline[last]


def _rounds_to_multiples(transform, resize, multiple: int) -> bool:
    """Whether ``transform``, after ``resize``, makes every image's sides multiples of
    ``multiple``: mmseg's ``ResizeToMultiple`` or mmcv's ``Pad`` by such a ``size_divisor``,
    or a ``Pad`` to a ``size`` of multiples that no side ``resize`` gives exceeds (mmdet's
    large-scale-jitter test pipelines pad to the Resize's scale); Pad leaves a side longer
    than its size as it is."""
    if type_name(transform) not in SIZE_DIVISOR_TRANSFORMS:
        return False
    divisor = transform.get('size_divisor')
    if isinstance(divisor, int) and divisor % multiple == 0:
        return True
    size, scale = size_pair(transform.get('size')), size_pair(resize.get('scale'))
    return (size is not None and scale is not None and _multiples(size, multiple)
            and min(size) >= max(scale))


def _backbone_multiple(cfg) -> Optional[Tuple[int, str]]:
    """``(n, why)`` where the config's backbone takes inputs whose height and width are
    multiples of a number ``n`` above 1 (:meth:`~fastmim.models.utils.backbone_contract.
    BackboneContract.input_multiple`, asked of the class the config names, not built), ``why``
    saying so for a message; None for a backbone that takes any size or states nothing."""
    backbone = (cfg.get('model') or {}).get('backbone') or {}
    asked = getattr(_fastmim_backbone_class(backbone), 'input_multiple', None)
    stated = asked(backbone) if asked else None
    if stated is None or not isinstance(stated[1], int) or stated[1] <= 1:
        return None
    source, multiple = stated
    return multiple, (f'{type_name(backbone)} takes inputs whose height and width are '
                      f'multiples of {multiple} ({source})')


def _fastmim_backbone_class(backbone) -> Optional[type]:
    """The class of a backbone entry when it is fastmim's (``'VisionTransformer'``,
    ``'fastmim.VisionTransformer'``, or the class), read from the registry's table: another
    library's backbone states no input multiple. Not ``Registry.get``, which logs, and a
    logger made before the Runner's reads the CUDA devices too early (mmengine's
    ``_get_device_id``)."""
    kind = backbone.get('type') if isinstance(backbone, dict) else None
    if isinstance(kind, type):
        return kind
    scope, _, name = kind.rpartition('.') if isinstance(kind, str) else ('-', '', '')
    if scope not in ('', 'fastmim'):
        return None
    import fastmim.models  # noqa: F401  registers the backbones (the registry's location)
    from fastmim.registry import MODELS
    found = MODELS.module_dict.get(name)
    return found if isinstance(found, type) else None


def _training_crops(cfg):
    """``(key, value, (h, w), transform)`` of each downstream crop of the training
    pipeline."""
    pipeline = ((cfg.get('train_dataloader') or {}).get('dataset') or {}).get('pipeline') or []
    for index, transform in enumerate(pipeline):
        name = type_name(transform)
        argument = DOWNSTREAM_CROP_ARGUMENTS.get(name)
        size = size_pair(transform.get(argument)) if argument else None
        if size is not None:
            yield (f'train_dataloader.dataset.pipeline.{index}.{argument}',
                   transform[argument], size, name)


def _fastmim_crops(cfg):
    """``(key, value, (h, w), transform)`` of each crop that a fastmim pipeline of any
    dataloader (pre-training, fine-tuning, probing, the kNN bank's too) feeds the model, the
    pipeline shared by validation and test named once: the size the backbone gets whatever
    its ``img_size`` (fine-tuning at another size resizes the position tables). A training
    crop whose size a ``ProgressiveResolutionHook``'s stages set is never fed
    (:func:`_stage_sizes`)."""
    staged = any(type_name(hook) == PROGRESSIVE_HOOK for hook in cfg.get('custom_hooks') or [])
    for loader, pipeline in _distinct_pipelines(dataloaders(cfg)):
        for index, transform in enumerate(pipeline):
            name = type_name(transform)
            argument = FASTMIM_CROP_ARGUMENTS.get(name)
            size = size_pair(transform.get(argument)) if argument else None
            if size is not None and not (staged and loader == 'train_dataloader'
                                         and name == STAGED_CROP):
                yield (f'{loader}.dataset.pipeline.{index}.{argument}', transform[argument],
                       size, name)


def _distinct_pipelines(loaders):
    """``(loader, pipeline)`` of each ``(key, settings)`` of ``loaders`` whose dataset's
    pipeline is not one an earlier loader has: validation and test usually share theirs, and
    a size is named once, under the first loader's key."""
    seen = []
    for loader, settings in loaders:
        pipeline = ((settings or {}).get('dataset') or {}).get('pipeline') or []
        if pipeline not in seen:
            seen.append(pipeline)
            yield loader, pipeline


def _multiples(size: Tuple[int, int], multiple: int) -> bool:
    return not (size[0] % multiple or size[1] % multiple)


def _input_sizes(cfg) -> List[Tuple[str, Tuple[int, int]]]:
    """``(where, (h, w))`` of each input-size argument in the dataloaders' pipelines, the
    pipeline shared by validation and test named once."""
    found = []
    for loader, pipeline in _distinct_pipelines(
            (loader, cfg.get(loader)) for loader in DATALOADERS):
        for index, transform in enumerate(pipeline):
            name = type_name(transform)
            argument = INPUT_SIZE_ARGUMENTS.get(name)
            size = size_pair(transform.get(argument)) if argument else None
            if size is not None:
                found.append((f'{loader}.dataset.pipeline.{index}.{argument} ({name})', size))
    return found


def size_pair(value) -> Optional[Tuple[int, int]]:
    """``(h, w)`` of an int or a pair; None for anything else (not a size)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(side, int) and not isinstance(side, bool) for side in value):
        return tuple(value)
    return None


def _shown(size: Tuple[int, int]) -> str:
    return str(size[0]) if size[0] == size[1] else f'{size[0]}x{size[1]}'
