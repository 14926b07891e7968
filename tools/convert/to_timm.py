"""Convert a fastmim checkpoint (pre-training or fine-tuned) to a plain timm state dict.

    .venv/bin/python tools/convert/to_timm.py CHECKPOINT OUT [--arch TIMM_MODEL] [--safetensors]
        [--overwrite] [--trust-checkpoint]

fastmim's ViT, Swin and PVTv2 backbones subclass timm's models, so their weights already carry
timm names: the conversion strips the ``backbone.`` prefix, maps a classifier
(``head.fc.weight`` / ``head.weight``, and a ``fc_norm`` of the pooled features) onto timm's
classifier, and leaves out what timm models do not have (the pre-training decoder ``neck.*``,
``mask_token``). What is particular to one backbone, the backbone says (``timm_model`` /
``timm_state_dict`` / ``timm_pooled_norm`` of its contract): a ``fc_norm`` goes where timm's
model of the family normalises its pooled features (ViT's ``fc_norm``) and is refused where it
has no such norm (PVTv2, Swin, a ``TimmBackbone``), Swin's extra detection norms
``out_norms.*`` are left out, a ViT with BEiT's relative-position tables is refused, and a
``TimmBackbone`` checkpoint gets the names of the full timm model it wraps (``model.`` and the
renames of timm's ``features_only`` extractors removed), its classifier the name timm gives it.
The output is a dict of plain tensors saved with
``torch.save`` (and as ``.safetensors`` next to it with ``--safetensors``), which
``TimmBackbone(checkpoint_path=OUT)`` and, with ``--arch``, the ``timm.create_model`` call
the tool prints load (``num_classes`` given twice: see :func:`loading_call`).

With ``--arch`` (a timm model name, e.g. ``vit_base_patch16_224``), the weights are fitted to
that model: the position embedding and relative-position tables are resized to its resolution
and window (as fine-tuning does), and the result must load into it with ``strict=True``.
Without it, the tensors keep the checkpoint's shapes.
"""
import argparse
import os
import os.path as osp
import re
import sys

if __name__ == '__main__':  # a missing CHECKPOINT is refused before fastmim imports torch
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/
    from early_checks import refuse_a_missing_checkpoint  # imports no fastmim
    refuse_a_missing_checkpoint(sys.argv[1:], 0)

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from out_name import check_out_name  # noqa: E402  (beside this file, shared by the converters)


def parse_args(argv):
    from fastmim.cli import add_debug_arg, add_overwrite_arg, add_trust_checkpoint_arg
    parser = argparse.ArgumentParser(description='fastmim checkpoint -> timm state dict')
    parser.add_argument('checkpoint', help='fastmim checkpoint (pre-training or fine-tuned)')
    parser.add_argument('out', help='output file (torch.save of a dict of tensors)')
    parser.add_argument('--arch', help='timm model name to fit and check the weights against, '
                        'e.g. vit_base_patch16_224 or swin_base_patch4_window7_224')
    parser.add_argument('--safetensors', action='store_true',
                        help='also write OUT with the suffix .safetensors')
    add_overwrite_arg(parser, 'OUT (and its .safetensors copy)')
    add_trust_checkpoint_arg(parser)
    add_debug_arg(parser)
    return parser.parse_args(argv)


# Classifier weights of fastmim fine-tuning checkpoints (mmpretrain-style ``head.fc`` or a bare
# ``head``) -> the parameter name under timm's classifier module.
CLASSIFIER_KEYS = {'head.fc.weight': 'weight', 'head.fc.bias': 'bias',
                   'head.weight': 'weight', 'head.bias': 'bias'}
FC_NORM_KEY = re.compile(r'(?:.*\.)?fc_norm\.(weight|bias)')


def split_checkpoint(state):
    """fastmim keys -> (backbone tensors, classifier tensors, fc_norm tensors, left-out keys)."""
    backbone, classifier, fc_norm, left_out = {}, {}, {}, []
    for key, value in state.items():
        if key.startswith('backbone.'):
            backbone[key[len('backbone.'):]] = value
        elif key in CLASSIFIER_KEYS:
            classifier[CLASSIFIER_KEYS[key]] = value
        elif FC_NORM_KEY.fullmatch(key):
            fc_norm[FC_NORM_KEY.fullmatch(key)[1]] = value
        else:
            left_out.append(key)
    return backbone, classifier, fc_norm, left_out


def check_arch(arch):
    """Refuse a name timm does not know before the checkpoint is read: timm's own refusal is a
    RuntimeError deep in its factory, which reaches the user as a traceback."""
    from fastmim.models.backbones.timm_backbone import check_timm_model_name
    check_timm_model_name(arch, '--arch')


def backbone_class(geometry):
    """The fastmim backbone class that ``geometry`` names, or None for a file that names none
    (a plain state dict): ``MODELS.get('')`` raises a RuntimeError instead of returning None."""
    from fastmim.registry import MODELS

    name = (geometry or {}).get('type')
    return MODELS.get(name) if name else None


def check_family(model, geometry, path, families):
    """The checkpoint's backbone must be of the timm ``families`` (:func:`timm_families`) of
    ``model``.

    The resize rules of a fastmim backbone read attributes of its timm parent class (ViT's
    ``pos_embed``, Swin's windows); on a timm model of another family they fail with an
    AttributeError, so the mismatch is named here instead."""
    from fastmim.errors import CheckpointError

    if families and not isinstance(model, families):
        name = geometry['type']
        if 'model_name' in geometry:  # a backbone that wraps the timm model of that name
            name = f"{name}({geometry['model_name']!r})"
        raise CheckpointError(f'{path} holds a {name} backbone, but --arch names a timm '
                              f'{type(model).__name__}; expected a timm {families[0].__name__}')


def timm_families(geometry, path, wrapped):
    """The timm classes a checkpoint of ``geometry``'s backbone converts to: its timm parent
    classes, or for a backbone that wraps a timm model the class of that model (``wrapped``:
    its ``timm_model``); () for a file that names no backbone. A backbone timm has no
    model of (CMT) is refused: its weights written as a 'timm state dict' would be a file that
    no timm model loads, made without a word."""
    from fastmim.errors import CheckpointError

    source_class = backbone_class(geometry)
    if source_class is None:
        return ()
    if wrapped is not None:
        return (type(wrapped), )
    families = tuple(base for base in source_class.__mro__
                     if base.__module__.startswith('timm.'))
    if not families:
        raise CheckpointError(f"{path} holds a {geometry['type']} backbone, of which timm has "
                              'no model: there is nothing to convert it to')
    return families


def pooled_norm_name(source_class, fc_norm, state, path):
    """Where the classifier's norm of the pooled features (``fc_norm``, LinearClsHead's
    ``pre_norm``) goes in timm: the backbone's ``timm_pooled_norm`` (ViT's and EVA-02's
    ``fc_norm``), or ``fc_norm`` for a file that names no backbone. A classifier with such a
    norm whose timm model has none is refused: without it timm's model would compute other
    logits, and ``--arch`` would call its tensors 'unexpected keys' without saying why."""
    from fastmim.errors import CheckpointError

    if source_class is None:
        return 'fc_norm'
    name = source_class.timm_pooled_norm
    if fc_norm and name is None:
        keys = sorted(key for key in state if FC_NORM_KEY.fullmatch(key))
        raise CheckpointError(
            f'{path}: its classifier normalises the pooled features ({", ".join(keys)}), and '
            f'timm\'s model of {source_class.__name__} has no norm after pooling to hold them: '
            f'converted without it, timm would compute other logits; nothing was written')
    return name


def timm_arguments(classifier, fc_norm):
    """``timm.create_model`` arguments of the model the weights fit: as many classes as the
    checkpoint's classifier (none when it has none), average pooling when the checkpoint has a
    norm of the pooled features (timm's ViT and EVA-02 build their ``fc_norm`` with it)."""
    kwargs = dict(num_classes=classifier['weight'].shape[0] if 'weight' in classifier else 0)
    if fc_norm:
        kwargs['global_pool'] = 'avg'
    return kwargs


def create_timm_model(arch, kwargs):
    import timm
    return timm.create_model(arch, pretrained=False, **kwargs)


def loading_call(arch, kwargs, out):
    """The ``timm.create_model`` call that loads ``out`` whole. timm's pretrained loading
    compares ``num_classes`` with the file's ``pretrained_cfg`` (1000 classes unless overlaid):
    with the default, a file without a classifier fails ('Missing key(s): head.weight'), and
    with another ``num_classes`` alone timm drops the file's classifier without a word."""
    arguments = ''.join(f', {key}={value!r}' for key, value in kwargs.items())
    return (f'timm.create_model({arch!r}, pretrained=True{arguments}, pretrained_cfg_overlay='
            f'dict(file={out!r}, num_classes={kwargs["num_classes"]}))')


def check_size(source_class, geometry, model, path):
    """Refuse a timm model of another size than the checkpoint's (another width, depth or
    heads) in one line that names the sizes of both, as fine-tuning's loader names them:
    a list of every tensor's two shapes (or of every block one of them lacks) says neither.
    The file's sizes are its geometry's, the model's those its backbone reads from timm's
    attributes (``timm_sizes``: ViT, EVA-02, Swin and PVTv2 say). A file without geometry,
    or of a backbone that does not say (``TimmBackbone``, whose size is its timm model's
    name), is left to the strict load's list of keys."""
    from fastmim.errors import CheckpointError
    from fastmim.models.utils.pretrained import sizes_compared

    sizes = source_class.timm_sizes(model) if source_class is not None else None
    if not sizes:
        return
    arch = model.pretrained_cfg.get('architecture', type(model).__name__)
    compared = sizes_compared(geometry, sizes, source_class.size_keys, f"--arch {arch}'s")
    if compared:
        raise CheckpointError(
            f'{path} does not fit --arch {arch}: {compared}: give --arch a timm model of the '
            "file's size, or leave --arch out to convert the tensors unchecked")


def fit_to_model(state, model, geometry, path, families):
    """Resize ``state`` to ``model`` (of one of the checkpoint's timm ``families``) and check
    that it loads with ``strict=True``.

    The resize rules are those of the fastmim backbone the checkpoint names: fastmim's ViT and
    Swin subclass timm's, and their ``adapt_state_dict`` reads only timm's attributes, so it
    applies to the plain timm model of the same family."""
    from fastmim.errors import CheckpointError
    from fastmim.models.utils.pretrained import transfer_state

    check_family(model, geometry, path, families)
    source_class = backbone_class(geometry)
    check_size(source_class, geometry, model, path)
    adapted = (source_class.adapt_state_dict(model, state, geometry)
               if source_class is not None else state)
    transferred = transfer_state(adapted, model, geometry)
    provided = set(transferred.state) | set(transferred.mismatched_keys)
    transferred.problems.missing = [f'{key} {tuple(value.shape)}'
                                    for key, value in model.state_dict().items()
                                    if key not in provided]
    if transferred.problems:
        raise CheckpointError(transferred.problems.message(
            path, f'timm {type(model).__name__}', 'converted for timm, strict'))
    model.load_state_dict(transferred.state, strict=True)
    resized = {key: (tuple(state[key].shape), tuple(value.shape))
               for key, value in transferred.state.items()
               if key in state and state[key].shape != value.shape}
    return transferred.state, resized


def convert(checkpoint, path, arch=None):
    """A loaded fastmim checkpoint -> ``(timm state dict, resized keys, left-out keys, timm
    arguments, note)``, the note for a file checked against nothing (:func:`unchecked_note`)."""
    from fastmim.errors import CheckpointError
    from fastmim.models.utils.pretrained import read_checkpoint

    source = read_checkpoint(checkpoint, path, prefix='backbone.')
    source_class = backbone_class(source.geometry)
    # A whole timm model (on meta) for a backbone that wraps one: its class and classifier name
    # (timm_state_dict builds its own once more to read the names, a second meta model).
    wrapped = source_class.timm_model(source.geometry) if source_class is not None else None
    families = timm_families(source.geometry, path, wrapped)
    backbone, classifier, fc_norm, left_out = split_checkpoint(source.state)
    left_out = list(source.dropped) + left_out  # a reference file's decoder, read but not kept
    if not backbone:
        raise CheckpointError(f'{path} holds no backbone.* weights to convert')
    norm_name = pooled_norm_name(source_class, fc_norm, source.state, path)
    if source_class is not None:
        backbone, kept_out = source_class.timm_state_dict(backbone, source.geometry, path)
        left_out += [f'backbone.{key}' for key in kept_out]
    kwargs = timm_arguments(classifier, fc_norm)
    model = create_timm_model(arch, kwargs) if arch else None
    if model is not None:
        classifier_name = model.pretrained_cfg.get('classifier', 'head')
    elif wrapped is not None:
        classifier_name = wrapped.pretrained_cfg.get('classifier', 'head')
    else:  # the backbone knows where its timm family keeps the classifier
        classifier_name = getattr(source_class, 'timm_classifier', 'head')
    state = dict(backbone)
    state.update({f'{classifier_name}.{name}': value for name, value in classifier.items()})
    state.update({f'{norm_name}.{name}': value for name, value in fc_norm.items()})
    resized = {}
    if model is not None:
        state, resized = fit_to_model(state, model, source.geometry, path, families)
    note = unchecked_note(path) if model is None and source.geometry is None else None
    return state, resized, left_out, kwargs, note


def write_safetensors_aside(plain, path):
    """Write ``path``'s content to a temporary file beside it and return that file's name.

    safetensors writes in place, so a failure (a folder of that name, no space) would leave a
    partial file, or the ``.pth`` written without its copy; the caller renames the temporary
    file into place only once both are written."""
    import tempfile

    import torch
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from fastmim.errors import CheckpointError

    if osp.isdir(path):
        raise CheckpointError(f'cannot write {path}: it is a folder; nothing was written')
    folder = osp.dirname(osp.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix='.tmp_', suffix='.safetensors')
        os.close(handle)
    except OSError as error:
        raise CheckpointError(f'cannot write {path}: {error.strerror}; nothing was '
                              'written') from None
    try:
        save_file({key: value.to(torch.device('cpu')) for key, value in plain.items()},
                  temporary)
    except (OSError, SafetensorError) as error:  # safetensors' I/O errors are its own class
        os.unlink(temporary)
        raise CheckpointError(f'cannot write {path}: {error}; nothing was written') from None
    return temporary


def safetensors_path(out):
    """Where ``--safetensors`` writes the copy of ``out``: beside it, the suffix replaced."""
    return osp.splitext(out)[0] + '.safetensors'


def paths_written(out, safetensors):
    """The files a conversion writes."""
    return [out, safetensors_path(out)] if safetensors else [out]


def save(state, out, safetensors):
    """``torch.save`` of plain contiguous tensors (atomic for local files), plus a safetensors
    copy: both files are written, or neither is changed."""
    from fastmim.engine.checkpoint import save_checkpoint_file
    from fastmim.fileio import mode_for_new_file

    plain = {key: value.detach().clone().contiguous() for key, value in state.items()}
    safetensors_out = safetensors_path(out)
    temporary = write_safetensors_aside(plain, safetensors_out) if safetensors else None
    try:
        save_checkpoint_file(plain, out)
    except BaseException:
        if temporary:
            os.unlink(temporary)
        raise
    if temporary is None:
        return [out]
    os.chmod(temporary, mode_for_new_file(safetensors_out))  # mkstemp's 0600, as the .pth
    os.replace(temporary, safetensors_out)
    return [out, safetensors_out]


def unchecked_note(path):
    """A line for a file converted without ``--arch`` that names no backbone (no
    ``meta['geometry']``: a plain ``name -> tensor`` dict, another release's ``{'model': ...}``
    or ``{'state_dict': ...}``): its tensors are copied under their own names and checked
    against nothing, so that a file of another architecture, wrapped or not, is not
    'converted' without a word of that."""
    return (f'note: {path} records no fastmim backbone (no meta[\'geometry\']): its tensors were '
            'copied under their own names and checked against no model (--arch NAME checks '
            'them against a timm model)')


def main(argv):
    args = parse_args(argv)
    from mmengine.runner.checkpoint import _load_checkpoint

    import fastmim  # noqa: F401  registers modules, safe checkpoint I/O
    import fastmim.models  # noqa: F401
    from fastmim.engine.checkpoint import trust_checkpoint
    from fastmim.cli import (
        check_output_file, refuse_an_existing_output, refuse_overwriting_input)
    from fastmim.load_problems import top_level_names

    # With --safetensors the copy replaced such an OUT under the same name, 'written' twice.
    check_out_name(args.out, f' and add --safetensors for a '
                   f'{osp.splitext(osp.basename(args.out))[0]}.safetensors copy beside it')
    check_output_file(args.out, 'OUT', folders_made=True)
    refuse_overwriting_input(args.out, args.checkpoint)
    for out in paths_written(args.out, args.safetensors):
        refuse_an_existing_output(out, args.overwrite)
    if args.arch:
        check_arch(args.arch)
    if args.trust_checkpoint:
        trust_checkpoint(args.checkpoint)
    checkpoint = _load_checkpoint(args.checkpoint, map_location='cpu')
    state, resized, left_out, kwargs, note = convert(checkpoint, args.checkpoint, args.arch)
    paths = save(state, args.out, args.safetensors)
    for path in paths:
        print(f'wrote {len(state)} tensors to {path}')
    if note:
        print(note)
    for key, (old, new) in resized.items():
        print(f'resized {key}: {old} -> {new}')
    if left_out:
        print(f'left out {len(left_out)} tensors timm has no place for: '
              f'{", ".join(sorted(top_level_names(left_out, within="backbone.")))}')
    if args.arch:
        print(f'load it with {loading_call(args.arch, kwargs, paths[-1])}')


if __name__ == '__main__':
    from fastmim.cli import run_cli
    run_cli(main)
