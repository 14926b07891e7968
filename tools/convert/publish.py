"""Make a fastmim checkpoint small enough to share: its weights and what loading them needs.

    .venv/bin/python tools/convert/publish.py CHECKPOINT OUT [--overwrite] [--trust-checkpoint]

A checkpoint of a training run holds, besides the weights, the optimiser's state (twice the
weights for AdamW), the parameter schedulers, mmengine's message hub and the run's details in
``meta``. Only two parts are kept:

- ``state_dict`` whole: a pre-training's backbone, decoder (``neck.*``) and ``mask_token``,
  a classifier's backbone and head. With mmengine's ``EMAHook`` it already holds the averaged
  weights, the ones validated, and the live ones (``ema_state_dict``) are left out;
- the ``meta`` entries that fastmim reads when it loads weights (:data:`KEPT_META`).

The file is written as ``<OUT without .pth>-<first 8 hex digits of its sha256>.pth``
(mmpretrain's convention), so a copy can be checked against its name. It loads wherever a
checkpoint's weights load (``FastMIMPretrained`` / ``init_cfg``, ``load_from``,
``tools/test.py``); ``--resume`` has nothing to continue from it.
"""
import argparse
import hashlib
import os
import os.path as osp
import re
import sys

if __name__ == '__main__':  # a missing CHECKPOINT is refused before fastmim imports torch
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/
    from early_checks import refuse_a_missing_checkpoint  # imports no fastmim
    refuse_a_missing_checkpoint(sys.argv[1:], 0)

from fastmim.cli import (  # noqa: E402
    add_debug_arg, add_overwrite_arg, add_trust_checkpoint_arg, check_output_file,
    refuse_an_existing_output, refuse_overwriting_input)

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from out_name import check_out_name  # noqa: E402  (beside this file, shared by the converters)

# meta entries a published file keeps, and who reads them. The others record the run (its
# config, seed, time, epoch and iteration, optimiser type): only --resume reads them, and the
# study runners in their own work dirs.
KEPT_META = {
    'geometry': 'the backbone and input size the weights were trained for: FastMIMPretrained '
                'resizes them by it, the converters read the backbone from it',
    'dataset_meta': "the classes of the training split: tools/test.py compares the test "
                    "split's classes with them",
    'converted_from': 'the source of a converted file (tools/convert/from_*.py)',
    'timm_evaluation': "the timm model's evaluation settings (tools/convert/from_timm.py)",
}
HASH_LENGTH = 8
HASH_SUFFIX = re.compile(rf'(-[0-9a-f]{{{HASH_LENGTH}}})\.pth$')


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description='fastmim checkpoint -> a file to share: weights and meta only, named '
        'with its hash')
    parser.add_argument('checkpoint', help='fastmim checkpoint (pre-training or fine-tuned)')
    parser.add_argument('out', help='output name ending in .pth; the file is written as '
                        '<OUT without .pth>-<first 8 hex digits of its sha256>.pth')
    add_overwrite_arg(parser, 'file of the final name whose content differs')
    add_trust_checkpoint_arg(parser)
    add_debug_arg(parser)
    return parser.parse_args(argv)


def check_publish_name(out):
    """OUT names the file before its hash is added: a ``.pth`` name without a hash suffix (a
    published file's name given as OUT was written as ``name-<old>-<new>.pth``)."""
    check_out_name(out)
    if not out.endswith('.pth'):
        raise ValueError(f'OUT {out}: give it a .pth name; the hash goes before .pth')
    suffix = HASH_SUFFIX.search(out)
    if suffix:
        raise ValueError(f'OUT {out} already ends in what reads as a hash ({suffix[1]}): give '
                         'the name without it, the tool appends the hash of the file it writes')


def published(checkpoint, path):
    """``checkpoint`` (as loaded) -> ``(what to write, names of what was left out)``."""
    from fastmim.errors import CheckpointError

    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get('state_dict'), dict):
        found = (', '.join(map(str, checkpoint)) if isinstance(checkpoint, dict)
                 else type(checkpoint).__name__)
        raise CheckpointError(
            f'{path} is not a fastmim checkpoint (a dict with a state_dict; found: {found}): '
            'a plain state dict is already weights only; convert a reference-release file '
            'with tools/convert/from_reference.py first')
    meta = checkpoint.get('meta') if isinstance(checkpoint.get('meta'), dict) else {}
    kept_meta = {key: value for key, value in meta.items() if key in KEPT_META}
    left_out = [key for key in checkpoint if key not in ('state_dict', 'meta')]
    left_out += [f"meta['{key}']" for key in meta if key not in KEPT_META]
    return dict(state_dict=checkpoint['state_dict'], meta=kept_meta), left_out


def hashed_name(out, digest):
    """``name.pth`` -> ``name-<first 8 hex digits of digest>.pth``."""
    return f'{out[:-len(".pth")]}-{digest[:HASH_LENGTH]}.pth'


def should_write(final, digest, source, overwrite):
    """Whether to write ``final``: not when an identical file is there already; a file of
    that name with other content (a copy cut off, a file edited since) is replaced only with
    ``--overwrite``, and never when it is the input ``source``."""
    from fastmim.fileio import file_sha256

    check_output_file(final, 'OUT', folders_made=True)
    if not osp.exists(final):
        return True
    if osp.isfile(final) and file_sha256(final) == digest:
        return False
    refuse_an_existing_output(final, overwrite, flag=None,
                              held='with other content than the file to publish (its name '
                              'says which content it should have: a copy cut off, or edited '
                              'since?)')
    refuse_overwriting_input(final, source)
    return True


def main(argv):
    args = parse_args(argv)
    check_publish_name(args.out)
    from mmengine.fileio import get_file_backend
    from mmengine.runner.checkpoint import _load_checkpoint

    import fastmim  # noqa: F401  registers modules, safe checkpoint I/O
    from fastmim.engine.checkpoint import checkpoint_bytes, trust_checkpoint
    from fastmim.fileio import format_size

    check_output_file(args.out, 'OUT', folders_made=True)
    if args.trust_checkpoint:
        trust_checkpoint(args.checkpoint)
    checkpoint = _load_checkpoint(args.checkpoint, map_location='cpu')
    result, left_out = published(checkpoint, args.checkpoint)
    data = checkpoint_bytes(result)  # the file's name holds their hash: hashed before writing
    digest = hashlib.sha256(data).hexdigest()
    final = hashed_name(args.out, digest)
    if should_write(final, digest, args.checkpoint, args.overwrite):
        get_file_backend(final).put(data, final)  # atomic, as save_checkpoint_file writes
        print(f'wrote {final}')
    else:
        print(f'{final} is there already, identical: nothing written')
    print(f'kept: state_dict ({len(result["state_dict"])} tensors), meta: '
          f'{", ".join(result["meta"]) or "none"}')
    if left_out:
        print(f'left out: {", ".join(left_out)}')
    print(f'size: {format_size(os.path.getsize(args.checkpoint))} -> {format_size(len(data))}')
    print(f'sha256: {digest}')


if __name__ == '__main__':
    from fastmim.cli import run_cli
    run_cli(main)
