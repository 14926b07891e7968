"""Count the parameters and forward FLOPs of a config's model, per image.

    python tools/analysis/get_flops.py CONFIG [--shape H [W]] [--cfg-options k=v ...]

The config is loaded as tools/train.py loads it (``fastmim::<path>`` names a packaged one), and
its model built on the CPU with random weights (no checkpoint is read). What is counted:

- a fastmim model (pre-training, fine-tuning, linear probe, kNN): mmengine's network forward
  (``mode='tensor'``) of one image: for FastMIM the masking, the backbone on the masked image
  and the decoder (the HOG target, computed without gradients from the clean image, and the
  loss are left out); for a classifier the backbone and the head. Each part the model is made
  of is listed below it, the backbone among them;
- a model of another library (mmdet's Mask R-CNN, mmseg's UperNet, ``default_scope`` mmdet or
  mmseg): its ``model.backbone`` alone, fastmim's backbone class.

The input is one image of the config's own size (default): the first crop of the pipelines (the
training crop: 128 px for FastMIM pre-training, 224 px for fine-tuning), else the backbone's
``img_size``; for a backbone of another library's model the data preprocessor's ``size`` (mmseg),
else ``--shape`` is needed (mmdet's pipelines resize every image to its own size). ``--shape``
counts at another size.

FLOPs are mmengine's ``FlopAnalyzer`` counts, with fused attention added
(fastmim.benchmark.measure): one multiply-add is one operation (GMACs), the convention of timm's
and the papers' "FLOPs" (ViT-B/16 at 224 px: 17.6 G); FLOPs counted as multiplies plus adds are
twice as many. Parameters are mmengine's ``parameter_count``; trainable ones are those with
``requires_grad`` (a linear probe's frozen backbone has none).
"""
import argparse

# The unit of the printed FLOPs, said once in the output.
UNIT = ('GMACs: multiply-adds per image as mmengine\'s FlopAnalyzer counts them (one '
        'multiply-add = one op, the "FLOPs" of timm and the papers); x2 for FLOPs')


def parse_args(argv):
    from fastmim.engine.launch import CfgOptionsAction, add_debug_arg, positive_int
    parser = argparse.ArgumentParser(
        description="Parameters and forward GMACs per image of a config's model",
        epilog=UNIT)
    parser.add_argument('config', help="config file (or 'fastmim::<path>', a packaged one)")
    parser.add_argument('--shape', type=positive_int, nargs='+', metavar='SIZE',
                        help="input height and width (one number: square; default: the "
                        "config's own input size, its first pipeline crop)")
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                        help='override config keys, as tools/train.py does, e.g. '
                        'model.backbone.arch=l')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if args.shape is not None and len(args.shape) > 2:
        parser.error(f'argument --shape: expected H or H W, got {len(args.shape)} numbers')
    return args


def counted_model(cfg):
    """``(module, description, whole)``: the model when fastmim's registry builds its type
    (``whole``), else its backbone (a model of mmdet or mmseg, whose backbone is fastmim's)."""
    from fastmim.registry import MODELS
    model_type, backbone = cfg.model['type'], cfg.model.get('backbone')
    if MODELS.get(model_type) is not None:
        return MODELS.build(cfg.model), model_type, True
    if backbone is None:
        raise ValueError(f'{cfg.filename}: model.type {model_type!r} is not a fastmim model, '
                         'and the model has no backbone to count')
    return (MODELS.build(backbone),
            f"{backbone['type']} (the backbone of {model_type}, counted alone)", False)


def input_size(cfg, shape, whole_model):
    """``((h, w), where it comes from)``: ``--shape``, else the config's own size (module
    docstring); none found is an error asking for ``--shape``."""
    from fastmim.engine.input_sizes import fed_input_size, size_pair
    if shape:
        return (shape[0], shape[-1]), '--shape'
    found = fed_input_size(cfg) if whole_model else None
    if found is not None:
        where, size = found
        return size, where
    model = cfg.model
    candidates = ([('model.backbone.img_size', (model.get('backbone') or {}).get('img_size'))]
                  if whole_model else [])
    candidates.append(('model.data_preprocessor.size',
                       (model.get('data_preprocessor') or {}).get('size')))
    for where, value in candidates:
        if size_pair(value) is not None:
            return size_pair(value), where
    raise ValueError(f'{cfg.filename}: no input size found (no crop in the pipelines, no '
                     'model.backbone.img_size or model.data_preprocessor.size to read); give '
                     '--shape H [W]')


def forward_of(model, whole_model):
    """The module whose ``forward(images)`` is counted: mmengine's network forward of a
    fastmim model, the backbone itself otherwise."""
    import torch

    class NetworkForward(torch.nn.Module):

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, images):
            return self.model(images, mode='tensor')

    return NetworkForward(model) if whole_model else model


def count(model, size, whole_model):
    """``[(name, params, trainable params, GMACs)]``: the model, then each of its parts that
    holds parameters or multiply-adds."""
    import torch
    from mmengine.analysis import parameter_count

    from fastmim.benchmark.measure import flop_analyzer
    images = torch.randn(1, 3, *size)
    forward = forward_of(model, whole_model).eval()
    with torch.no_grad():
        macs = flop_analyzer(forward, images).by_module()
    prefix = 'model.' if whole_model else ''
    params = parameter_count(model)
    rows = [('', model)] + list(model.named_children())
    counted = []
    for name, part in rows:
        trainable = sum(p.numel() for p in part.parameters() if p.requires_grad)
        gmacs = macs.get(f'{prefix}{name}' if name else '', 0) / 1e9
        if params.get(name, 0) or gmacs:
            counted.append((name, params.get(name, 0), trainable, gmacs))
    return counted


def report(config, model_name, size, where, rows):
    lines = [f'config: {config}', f'model: {model_name}',
             f'input: 1 x 3 x {size[0]} x {size[1]} ({where})', '',
             f'{"":<24}{"params (M)":>12}{"trainable (M)":>15}{"GMACs":>10}']
    for name, params, trainable, gmacs in rows:
        shown = '  ' + name if name else 'total'
        lines.append(f'{shown:<24}{params / 1e6:>12.2f}{trainable / 1e6:>15.2f}{gmacs:>10.2f}')
    lines += ['', UNIT]
    return '\n'.join(lines)


def main(argv):
    args = parse_args(argv)
    import fastmim  # noqa: F401  registers modules
    from fastmim.engine.config_loading import load_config
    cfg = load_config(args.config, args.cfg_options)
    model, model_name, whole_model = counted_model(cfg)
    size, where = input_size(cfg, args.shape, whole_model)
    rows = count(model, size, whole_model)
    print(report(args.config, model_name, size, where, rows))
    return rows


if __name__ == '__main__':
    from fastmim.engine.launch import run_cli
    run_cli(main)
