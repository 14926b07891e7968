"""Convert a checkpoint of the reference release (ggjy/FastMIM.pytorch) to a fastmim checkpoint.

    .venv/bin/python tools/convert/from_reference.py CHECKPOINT OUT --backbone {vit,swin,pvtv2,cmt}
        [--img-size N] [--num-heads N [N ...]] [--overwrite] [--trust-checkpoint]

The release saves MAE-style files, ``{'model': state_dict, 'optimizer', 'epoch', 'args', ...}``:
the ViT encoder at the top level (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.N``, ``norm``; timm names), Swin / PVTv2 / CMT encoders under ``encoder.`` in their
original layouts, the decoder as ``decoder_*`` and the RGB ``mask_token``. The output is what
fastmim's pre-training writes: ``state_dict`` with ``backbone.*`` (fastmim / timm names) and
``mask_token``, the decoder as ``neck.*`` (fastmim's MIMDecoder; CMT's final pre-training
LayerNorm, which its decoder reads, as ``neck.in_norm``), and ``meta['geometry']`` describing
the backbone. So the FastMIM config of the backbone (``configs/fastmim/``) loads it strictly
(``fastmim.apis.get_model``, ``apis.reconstruct``, tools/visualize/visualize_reconstruction.py),
and fine-tuning configs load its backbone with ``init_cfg=dict(type='FastMIMPretrained',
checkpoint=OUT)``, resized as needed. The release orders each token's predicted HOG values
(channel, ky, kx), fastmim (ky, kx, channel): the prediction's rows are reordered, and a Swin,
PVTv2 or CMT decoder then predicts what the release's does. The ViT decoder is close, not exact:
the release's attends over the class token too, which fastmim's never sees (the report says so).

The release's ImageNet fine-tuned files (``vit_base_fastmim_hog_800e_finetune_100e.pth``,
``swin_base_fastmim_hog_400e_finetune_100e.pth``: the encoder at the top level, ``fc_norm``,
``head``, no final ``norm``) become fastmim ``ImageClassifier`` checkpoints that
``tools/test.py configs/finetune/{vit_b,swin_b}_ft_100e.py OUT`` evaluates and downstream configs
initialise from: ``head`` -> ``head.fc``; ViT's ``fc_norm`` (after pooling) -> ``head.fc_norm``;
Swin's ``fc_norm`` (its final norm before pooling) -> ``backbone.norm``. The PVTv2-B2 file
(``head``, mean of the tokens after ``norm4``) becomes one for ``configs/finetune/
pvtv2_b2_ft_100e.py``, the CMT-S file (``_fc`` 1x1 conv, ``_bn``, swish, pooling, ``head``) one
for ``configs/finetune/cmt_s_ft_100e.py``, whose ``ConvPoolClsHead`` takes its classifier:
``_fc`` -> ``head.conv``, ``_bn`` -> ``head.bn``.

The release's files also pickle an ``argparse.Namespace`` (``args``), which weights-only
loading refuses: pass ``--trust-checkpoint`` for a file whose origin you trust.
"""
import argparse
import os.path as osp
import sys

if __name__ == '__main__':  # a missing CHECKPOINT is refused before fastmim imports torch
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/
    from early_checks import refuse_a_missing_checkpoint  # imports no fastmim
    refuse_a_missing_checkpoint(sys.argv[1:], 0)

from fastmim.cli import (  # noqa: E402
    add_debug_arg, add_overwrite_arg, add_trust_checkpoint_arg, check_output_file, positive_int,
    refuse_an_existing_output, refuse_overwriting_input)
# The published recipe of each backbone type: its fine-tuning config is the one whose classifier
# a converted fine-tuned file fits (a generic hint for a backbone without one).
from fastmim.recipes import RECIPES  # noqa: E402

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from out_name import check_out_name  # noqa: E402  (beside this file, shared by the converters)


def parse_args(argv):
    from fastmim.models.utils.reference import reference_backbones
    parser = argparse.ArgumentParser(description='reference FastMIM checkpoint -> fastmim')
    parser.add_argument('checkpoint', help='a checkpoint of ggjy/FastMIM.pytorch')
    parser.add_argument('out', help='output fastmim checkpoint')
    # Every backbone that declares how the release stores it (its reference_layout).
    parser.add_argument('--backbone', required=True, choices=sorted(reference_backbones()),
                        help='the backbone the checkpoint holds (checked against its weights)')
    parser.add_argument('--img-size', type=positive_int, default=None,
                        help='pre-training input size, where the weights do not tell it '
                        '(Swin without shifted-window masks, PVTv2)')
    parser.add_argument('--num-heads', type=positive_int, nargs='+', default=None,
                        help='attention heads, where the weights do not tell them (ViT: one '
                        'number, default embed_dim // 64; PVTv2: one per stage, default from '
                        'the published size with these shapes; Swin, CMT: must agree with the '
                        'weights)')
    add_overwrite_arg(parser)
    add_trust_checkpoint_arg(parser)
    add_debug_arg(parser)
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    check_out_name(args.out)
    from mmengine.runner.checkpoint import _load_checkpoint

    import fastmim  # noqa: F401  registers modules, safe checkpoint I/O
    from fastmim.engine.checkpoint import save_checkpoint_file, trust_checkpoint
    from fastmim.models.utils import convert_reference_checkpoint

    check_output_file(args.out, 'OUT', folders_made=True)
    refuse_overwriting_input(args.out, args.checkpoint)
    refuse_an_existing_output(args.out, args.overwrite)
    if args.trust_checkpoint:
        trust_checkpoint(args.checkpoint)
    checkpoint = _load_checkpoint(args.checkpoint, map_location='cpu')
    converted = convert_reference_checkpoint(checkpoint, args.checkpoint, backbone=args.backbone,
                                             img_size=args.img_size, num_heads=args.num_heads)
    report = conversion_report(converted, args.out)  # before writing: nothing fails after it
    save_checkpoint_file(converted, args.out)
    print('\n'.join(report))


def conversion_report(converted: dict, out: str) -> list:
    """The lines printed for the converted checkpoint ``converted`` written to ``out``."""
    geometry = converted['meta']['geometry']
    origin = converted['meta']['converted_from']
    report = [f'wrote {len(converted["state_dict"])} tensors to {out}',
              f'backbone: {geometry["backbone"]}', f'input size: {geometry["input_size"]}']
    if 'num_classes' in geometry:
        report.append(f'an ImageClassifier with {geometry["num_classes"]} classes; renamed: ' +
                      ', '.join(f'{old} -> {new}' for old, new in origin['renamed'].items()))
        report.append(evaluation_hint(geometry['backbone']['type'], out))
    elif origin.get('fine_tuned'):
        report.append('the encoder of a fine-tuned classifier, for fine-tuning and downstream '
                      "configs (init_cfg=dict(type='FastMIMPretrained', checkpoint=OUT)); its "
                      'classifier has no fastmim counterpart')
    if 'decoder' in origin:
        report.append(f'decoder: {origin["decoder"]}')
    if origin['dropped']:
        report.append(f'dropped: {", ".join(origin["dropped"])}')
    return report


def evaluation_hint(backbone_type: str, out: str) -> str:
    """How to evaluate a converted classifier: with the published fine-tuning config of its
    backbone type (:data:`fastmim.recipes.RECIPES`), or, for a type without one, with a config
    whose model is that classifier."""
    config = RECIPES.get(backbone_type, {}).get('finetune')
    if config is None:
        return (f'evaluate: tools/test.py CONFIG {out}, CONFIG a fine-tuning config '
                f'(configs/finetune/) of a {backbone_type} ImageClassifier of that size')
    return f'evaluate: tools/test.py {config} {out} (for a backbone of that size)'


if __name__ == '__main__':
    from fastmim.cli import run_cli
    run_cli(main)
