"""Convert the weights of a timm classifier to a fastmim ImageClassifier checkpoint.

    .venv/bin/python tools/convert/from_timm.py WEIGHTS OUT --model-name TIMM_MODEL
        [--match-by-order] [--num-classes N] [--overwrite] [--trust-checkpoint]

WEIGHTS holds the state dict of the whole timm classifier ``TIMM_MODEL``: a ``.pth`` / ``.bin``
file (loaded with ``weights_only=True``; a dict that wraps the weights under ``'state_dict'`` or
``'model'`` is unwrapped) or a ``.safetensors`` file. OUT is what a fastmim classifier with
``TimmBackbone(TIMM_MODEL, features_only=False)`` and ``LinearClsHead(pre_norm=None)`` loads
(``tools/test.py CONFIG OUT``, e.g. configs/timm/tf_efficientnet_lite0_foolbox_eval.py):
``state_dict`` with the body under ``backbone.model.<timm name>`` and timm's classifier
(``pretrained_cfg['classifier']``, e.g. ``classifier`` or ``head.fc``) as ``head.fc``, and
``meta`` naming the source and timm's evaluation settings for the model (mean, std, crop).

How WEIGHTS is matched to ``timm.create_model(TIMM_MODEL)``:

- by default, by name, strictly: every key must be one of timm's and every tensor of the model
  must be there, with its shape; all disagreements are reported together;
- ``--match-by-order``: for weights saved by another implementation of the same architecture
  (e.g. lukemelas' EfficientNet names ``_blocks.0._depthwise_conv.weight``): tensors are paired
  by position, which needs the same number of tensors and the same shape in every pair; the
  first pair that differs is named.

Before anything is written, the result is loaded with ``strict=True`` into the ImageClassifier
those two modules build (the body is ``timm.create_model(TIMM_MODEL, num_classes=0)``). OUT is
written atomically and holds only plain types, so it loads with ``weights_only=True``. A file
fastmim wrote (``meta['geometry']``) is refused as such: it needs no conversion.
"""
import argparse
import os.path as osp
import sys

if __name__ == '__main__':  # a missing WEIGHTS is refused before fastmim imports torch
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/
    from early_checks import refuse_a_missing_checkpoint  # imports no fastmim
    refuse_a_missing_checkpoint(sys.argv[1:], 0)

from fastmim.cli import (  # noqa: E402
    add_debug_arg, add_overwrite_arg, add_trust_checkpoint_arg, check_output_file, positive_int,
    refuse_an_existing_output, refuse_overwriting_input)

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from out_name import check_out_name  # noqa: E402  (beside this file, shared by the converters)

WRAPPER_KEYS = ('state_dict', 'model')


def parse_args(argv):
    parser = argparse.ArgumentParser(description='timm classifier weights -> fastmim checkpoint')
    parser.add_argument('weights', help='state dict of the timm classifier (.pth, .bin or '
                        '.safetensors)')
    parser.add_argument('out', help='output fastmim checkpoint')
    parser.add_argument('--model-name', required=True,
                        help='timm model name, e.g. tf_efficientnet_lite0')
    parser.add_argument('--match-by-order', action='store_true',
                        help='pair tensors by position instead of by name (weights saved by '
                        'another implementation of the same architecture)')
    parser.add_argument('--num-classes', type=positive_int, default=None,
                        help="classes of the classifier in WEIGHTS (default: the timm model's, "
                        'usually 1000)')
    add_overwrite_arg(parser)
    add_trust_checkpoint_arg(parser, 'WEIGHTS')
    add_debug_arg(parser)
    return parser.parse_args(argv)


# --- reading ------------------------------------------------------------------------------------
def read_safetensors(path):
    """``{name: tensor}`` of a .safetensors file; a file that is none (a text file, an empty or
    cut-off download) is named instead of surfacing safetensors' own error as a traceback."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from fastmim.errors import CheckpointError

    if osp.isdir(path):
        raise CheckpointError(f'{path} is a folder, not a .safetensors file')
    if not osp.isfile(path):
        raise CheckpointError(f'checkpoint not found: {path}')
    try:
        return load_file(path)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f'{path} is not a readable .safetensors file (empty, cut off or '
                              f'another format?): {error}') from None


def refuse_fastmim_checkpoint(checkpoint, path):
    """A checkpoint fastmim wrote (``meta['geometry']``: a training run, a converter's output)
    holds fastmim names (``backbone.*``, ``neck.*``, ``head.fc.*``), never a timm classifier's.
    It is refused with the name of the tool that takes it: unwrapped, it would load as some
    hundred unexpected and missing keys, which say neither that the file is of the wrong kind
    nor which tool takes it."""
    from fastmim.errors import CheckpointError
    from fastmim.models.utils.pretrained import backbone_geometry

    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    geometry = backbone_geometry(meta.get('geometry')) if isinstance(meta, dict) else None
    if geometry is not None:
        raise CheckpointError(
            f"{path} is a fastmim checkpoint (meta['geometry'] of a {geometry.get('type')} "
            'backbone), not the weights of a timm classifier: it loads as it is (tools/test.py, '
            "init_cfg=dict(type='FastMIMPretrained')), and tools/convert/to_timm.py turns it "
            'into timm weights')


def read_weights(path):
    """``{name: tensor}`` of a .safetensors file or of a torch file, unwrapped."""
    import torch
    from mmengine.runner.checkpoint import _load_checkpoint

    from fastmim.errors import CheckpointError
    from fastmim.load_problems import listing

    if path.endswith('.safetensors'):
        return read_safetensors(path)
    weights = _load_checkpoint(path, map_location='cpu')  # weights-only (fastmim's loader)
    refuse_fastmim_checkpoint(weights, path)
    for key in WRAPPER_KEYS:
        if isinstance(weights, dict) and isinstance(weights.get(key), dict):
            weights = weights[key]
            break
    if not isinstance(weights, dict) or not weights:
        raise CheckpointError(f'{path} holds no state dict (found a {type(weights).__name__})')
    not_tensors = [str(key) for key, value in weights.items()
                   if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f'{path}: expected a name -> tensor mapping (possibly under one of '
                              f'{WRAPPER_KEYS}), but these entries are not tensors: '
                              f'{listing(not_tensors)}')
    return dict(weights)


# --- matching -----------------------------------------------------------------------------------
def match_by_order(weights, target, path, model_name):
    """Pair ``weights`` with ``target`` (timm's state dict) by position, checking every shape."""
    from fastmim.errors import CheckpointError

    if len(weights) != len(target):
        raise CheckpointError(
            f'{path} holds {len(weights)} tensors, timm {model_name} has {len(target)}: '
            f'--match-by-order pairs them by position, so it needs the same architecture '
            f'with every parameter and buffer saved, in the same order')
    paired = {}
    pairs = zip(weights.items(), target.items())
    for position, ((source_key, value), (target_key, expected)) in enumerate(pairs):
        if (tuple(value.shape) != tuple(expected.shape)
                or value.is_floating_point() != expected.is_floating_point()):
            raise CheckpointError(
                f'{path}: tensor {position} {source_key!r} {tuple(value.shape)} {value.dtype} '
                f'does not fit timm {model_name} tensor {position} {target_key!r} '
                f'{tuple(expected.shape)} {expected.dtype}: the two orders differ from here on, '
                f'or it is another architecture')
        paired[target_key] = value
    return paired


def match_by_name(weights, target, path, model_name):
    """``weights`` unchanged, after checking that they are exactly timm's tensors."""
    from fastmim.errors import CheckpointError
    from fastmim.load_problems import LoadProblems, shapes

    problems = LoadProblems.compare(shapes(weights), shapes(target))
    if problems:
        raise CheckpointError(problems.message(
            path, f'timm {model_name}', 'strict, by name; --match-by-order pairs the tensors '
            'by position instead'))
    return dict(weights)


# --- converting ---------------------------------------------------------------------------------
def check_model_name(model_name):
    """Refuse a name timm does not know, before the weights (hundreds of MB) are read."""
    from fastmim.models.backbones.timm_backbone import check_timm_model_name

    check_timm_model_name(model_name, '--model-name')


def timm_reference(model_name, num_classes):
    """timm's full classifier on the meta device (names, order and shapes; no memory)."""
    import timm
    import torch

    check_model_name(model_name)
    kwargs = dict(pretrained=False)
    if num_classes is not None:
        kwargs['num_classes'] = num_classes
    with torch.device('meta'):
        return timm.create_model(model_name, **kwargs)


def classifier_name(reference, model_name):
    """The module timm names as the classifier in the model's ``pretrained_cfg``."""
    name = reference.pretrained_cfg.get('classifier')
    if not isinstance(name, str):
        raise ValueError(f'timm {model_name} names its classifier {name!r} in pretrained_cfg; '
                         f'only models with one classifier module convert to LinearClsHead')
    return name


def check_class_count(weights, target, classifier, path, model_name):
    """A classifier fine-tuned to another number of classes than timm's default is named with
    the flag that fits it: loading it as it is would list shape mismatches, which do not say
    which flag."""
    from fastmim.errors import CheckpointError

    weight, expected = weights.get(f'{classifier}.weight'), target.get(f'{classifier}.weight')
    if (weight is not None and expected is not None and weight.dim() == expected.dim()
            and weight.shape[0] != expected.shape[0]
            and weight.shape[1:] == expected.shape[1:]):
        raise CheckpointError(f'{path}: its classifier {classifier}.weight has {weight.shape[0]} '
                              f'classes, timm {model_name} {expected.shape[0]} by default: add '
                              f'--num-classes {weight.shape[0]}')


def to_fastmim_names(state, classifier, backbone):
    """timm names -> ImageClassifier names: the classifier -> ``head.fc``, the rest the body,
    named by ``backbone`` (its ``adapt_state_dict`` maps the full timm model's names to its
    own: where it keeps timm's model is its business) under ``backbone.``."""
    prefix = classifier + '.'
    body = backbone.adapt_state_dict(
        {key: value for key, value in state.items() if not key.startswith(prefix)})
    head = {f'head.fc.{key[len(prefix):]}': value for key, value in state.items()
            if key.startswith(prefix)}
    return {**{f'backbone.{key}': value for key, value in body.items()}, **head}


def build_classifier(model_name, num_classes):
    """The fastmim ImageClassifier that configs with this timm model build."""
    from fastmim.registry import MODELS
    return MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='TimmBackbone', model_name=model_name, features_only=False),
        head=dict(type='LinearClsHead', num_classes=num_classes, pre_norm=None)))


def check_loads(state, model, path, model_name):
    """Load ``state`` into ``model`` with ``strict=True``; a failure names the file."""
    from fastmim.errors import CheckpointError
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f'{path}: the converted weights do not load into the fastmim '
                              f'ImageClassifier of timm {model_name} '
                              f'(TimmBackbone + LinearClsHead): {error}') from None


def evaluation_settings(reference):
    """timm's published evaluation settings for the model, to copy into a config."""
    cfg = reference.pretrained_cfg
    keys = ('input_size', 'crop_pct', 'interpolation', 'mean', 'std')
    return {key: list(cfg[key]) if isinstance(cfg[key], tuple) else cfg[key]
            for key in keys if key in cfg}


def convert(weights, path, model_name, by_order=False, num_classes=None):
    """Weights of a timm classifier -> ``{'state_dict', 'meta'}`` of a fastmim ImageClassifier,
    checked by loading it strictly into that classifier."""
    reference = timm_reference(model_name, num_classes)
    target = reference.state_dict()
    classifier = classifier_name(reference, model_name)
    if not by_order and num_classes is None:
        check_class_count(weights, target, classifier, path, model_name)
    match = match_by_order if by_order else match_by_name
    model = build_classifier(model_name, reference.num_classes)
    state = to_fastmim_names(match(weights, target, path, model_name), classifier, model.backbone)
    check_loads(state, model, path, model_name)
    settings = evaluation_settings(reference)
    geometry = model.geometry()
    if 'input_size' in settings:
        geometry['input_size'] = list(settings['input_size'][1:])
    meta = dict(geometry=geometry,
                converted_from=dict(source='timm', model_name=model_name, file=str(path),
                                    match_by_order=by_order, num_tensors=len(weights)),
                timm_evaluation=settings)
    return dict(state_dict=state, meta=meta)


def save(checkpoint, out):
    """Own copies of the tensors (no views into the source's storage), saved atomically in
    plain types."""
    from fastmim.engine.checkpoint import save_checkpoint_file

    save_checkpoint_file(dict(
        state_dict={key: value.detach().clone().contiguous()
                    for key, value in checkpoint['state_dict'].items()},
        meta=checkpoint['meta']), out)


def main(argv):
    args = parse_args(argv)
    check_out_name(args.out)
    import fastmim  # noqa: F401  registers modules, safe checkpoint I/O
    import fastmim.models  # noqa: F401
    from fastmim.engine.checkpoint import trust_checkpoint

    check_output_file(args.out, 'OUT', folders_made=True)
    refuse_overwriting_input(args.out, args.weights, source_name='WEIGHTS')
    refuse_an_existing_output(args.out, args.overwrite)
    check_model_name(args.model_name)
    if args.trust_checkpoint:
        trust_checkpoint(args.weights)
    weights = read_weights(args.weights)
    checkpoint = convert(weights, args.weights, args.model_name, args.match_by_order,
                         args.num_classes)
    save(checkpoint, args.out)
    state = checkpoint['state_dict']
    body = sum(key.startswith('backbone.') for key in state)
    how = 'paired by position' if args.match_by_order else 'matched by name'
    print(f'wrote {len(state)} tensors to {args.out} ({how}): {body} in the body '
          f'(backbone.model.*), {len(state) - body} in the classifier (head.fc, '
          f'{checkpoint["meta"]["geometry"]["num_classes"]} classes)')
    print(f'timm evaluation settings of {args.model_name}: '
          f'{checkpoint["meta"]["timm_evaluation"]}')


if __name__ == '__main__':
    from fastmim.cli import run_cli
    run_cli(main)
