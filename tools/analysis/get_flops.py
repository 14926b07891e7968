"""Count the parameters and forward FLOPs of a config's model, per image.

    python tools/analysis/get_flops.py CONFIG [--shape H [W]] [--cfg-options k=v ...]

The config is loaded as tools/train.py loads it (``fastmim::<path>`` names a packaged one), and
its whole model built on the CPU with random weights (no checkpoint is read; SyncBN as BN). What
is counted, with a row for each part of the model below the total (the backbone among them):

- a fastmim model (pre-training, fine-tuning, linear probe, kNN): mmengine's network forward
  (``mode='tensor'``) of one image: for FastMIM the masking, the backbone on the masked image
  and the decoder (the HOG target, computed without gradients from the clean image, and the
  loss are left out); for a classifier the backbone and the head;
- mmseg's UperNet (``default_scope`` mmseg): its network forward, backbone + neck + decode head,
  as mmseg's get_flops counts it; the auxiliary head, trained only, holds parameters and no
  multiply-adds (mmseg's tool drops it from its parameter count, it is listed here);
- mmdet's Mask R-CNN (``default_scope`` mmdet): its network forward, backbone + neck + RPN head
  + RoI heads (box and mask heads listed), the RoI heads on ``test_cfg.rpn.max_per_img``
  proposals (1000), the mask head on the first 100 of them as mmdet's ``StandardRoIHead.forward``
  runs them. The RoI heads' cost grows with the number of proposals, which depends on the image
  (mmdet's get_flops averages over test images and says so); these are the most the config
  lets through, fixed boxes in place of what a random RPN would keep.

The input is one image of the config's own size (default): the first crop of the pipelines (the
training crop: 128 px for FastMIM pre-training, 224 px for fine-tuning); mmseg's crop
(``model.data_preprocessor.size``, 512 x 512 for ADE20K; mmseg's own tool defaults to
``--shape 2048 1024``); the largest image of mmdet's test ``Resize`` (``scale`` (long, short)
with ``keep_ratio``: a landscape image of that aspect ratio, 800 x 1333 for mmdet's 1333 x 800,
1024 x 1666 for FastMIM's Swin-B Mask R-CNN), where mmdet's tool reads the first test image;
else the backbone's ``img_size``. ``--shape`` counts at another size. mmdet's inputs are padded
to the data preprocessor's ``pad_size_divisor`` (32), as it pads every image.

FLOPs are mmengine's ``FlopAnalyzer`` counts, with fused attention added
(fastmim.benchmark.measure): one multiply-add is one operation (GMACs), the convention of timm's
and the papers' "FLOPs" (ViT-B/16 at 224 px: 17.6 G); FLOPs counted as multiplies plus adds are
twice as many. Parameters are mmengine's ``parameter_count``; trainable ones are those with
``requires_grad`` (a linear probe's frozen backbone has none).
"""
import argparse
import os.path as osp
import sys

# The unit of the printed FLOPs, said once in the output.
UNIT = ('GMACs: multiply-adds per image as mmengine\'s FlopAnalyzer counts them (one '
        'multiply-add = one op, the "FLOPs" of timm and the papers); x2 for FLOPs')


def parse_args(argv):
    from fastmim.cli import CfgOptionsAction, add_debug_arg, positive_int
    parser = argparse.ArgumentParser(
        description="Parameters and forward GMACs per image of a config's model",
        epilog=UNIT)
    parser.add_argument('config', help="config file (or 'fastmim::<path>', a packaged one)")
    parser.add_argument('--shape', type=positive_int, nargs='+', metavar='SIZE',
                        help="input height and width (one number: square; default: the "
                        "config's own input size: its first pipeline crop, mmseg's crop, "
                        "mmdet's test Resize scale)")
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                        help='override config keys, as tools/train.py does, e.g. '
                        'model.backbone.arch=l')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if args.shape is not None and len(args.shape) > 2:
        parser.error(f'argument --shape: expected H or H W, got {len(args.shape)} numbers')
    return args


def built_model(cfg):
    """``(model, description)``: the config's model, built by fastmim's registry when it holds
    the model's type, else by the registry of the config's ``default_scope`` (mmdet, mmseg)."""
    from fastmim.registry import MODELS
    model_type = cfg.model['type']
    if MODELS.get(model_type) is not None:
        return MODELS.build(cfg.model), model_type
    scope = cfg.get('default_scope')
    backbone = (cfg.model.get('backbone') or {}).get('type')
    if scope in (None, 'fastmim'):
        raise ValueError(f'{cfg.filename}: model.type {model_type!r} is not a fastmim model, '
                         'and the config names no default_scope (mmdet, mmseg) to build it')
    return downstream_model(cfg, scope), f'{model_type} of {scope}, backbone {backbone}'


def downstream_model(cfg, scope):
    """The model of an mmdet or mmseg config, built as their get_flops tools build it: in the
    config's scope, its SyncBN layers plain BN (the counting process has no process group)."""
    import importlib

    from mmengine.registry import init_default_scope

    from fastmim.engine.launch import replace_sync_bn
    replace_sync_bn(cfg.model)
    init_default_scope(scope)
    return importlib.import_module(f'{scope}.registry').MODELS.build(cfg.model)


def input_size(cfg, shape):
    """``((h, w), where it comes from)``: ``--shape``, else the config's own size (module
    docstring), padded to the data preprocessor's size divisor (mmdet's 32) as it pads every
    image; none found is an error asking for ``--shape``."""
    size, where = (((shape[0], shape[-1]), '--shape') if shape else own_input_size(cfg))
    divisor = (cfg.model.get('data_preprocessor') or {}).get('pad_size_divisor')
    if divisor:
        padded = tuple(-(-side // divisor) * divisor for side in size)
        if padded != size:
            where += (f', {size[0]} x {size[1]} padded to a multiple of {divisor} '
                      '(model.data_preprocessor.pad_size_divisor)')
        size = padded
    return size, where


def check_input_size(model, size, shape, where):
    """The model's own check of the input size (FastMIM's mask blocks and backbone stride),
    telling to change ``--shape`` where it gave the size: the model's own error would tell a
    user who gave ``--shape`` to change the pipeline's crop size. A model without one (a
    classifier) has its backbone's patch size checked here, before tracing: the backbone's own
    error, raised inside the trace, showed traced tensors and named no setting. ``where``: the
    source of a size ``--shape`` did not give."""
    check = getattr(model, 'check_input_size', None)
    if check is not None:
        check(*size, **({'size_setting': '--shape'} if shape else {}))
        return
    patch = getattr(getattr(model, 'backbone', None), 'patch_size', None)
    if isinstance(patch, int) and (size[0] % patch or size[1] % patch):
        raise ValueError(f'input {size[0]}x{size[1]} is not a multiple of the backbone patch '
                         f'size {patch} (model.backbone.patch_size); make the input size '
                         f"({'--shape' if shape else where}) a multiple of {patch}")


def own_input_size(cfg):
    """``((h, w), where)`` of the first size the config names: a crop of fastmim's pipelines,
    mmseg's crop (``model.data_preprocessor.size``), the largest image of mmdet's test
    ``Resize`` (:func:`fastmim.engine.input_sizes.test_resize_size`), the backbone's
    ``img_size``."""
    from fastmim.engine.input_sizes import fed_input_size, size_pair, test_resize_size
    model = cfg.model
    for found in (fed_input_size(cfg),
                  ('model.data_preprocessor.size',
                   size_pair((model.get('data_preprocessor') or {}).get('size'))),
                  test_resize_size(cfg),
                  ('model.backbone.img_size',
                   size_pair((model.get('backbone') or {}).get('img_size')))):
        if found is not None and found[1] is not None:
            where, size = found
            return size, where
    raise ValueError(f'{cfg.filename}: no input size found (no crop in the pipelines, no test '
                     'Resize scale, no model.data_preprocessor.size or model.backbone.img_size '
                     'to read); give --shape H [W]')


def counted_forward(model, size):
    """The module whose ``forward(images)`` is counted, wrapping ``model`` as ``.model``:
    mmdet's two-stage forward on a fixed number of proposals (:func:`two_stage_forward`), else
    mmengine's network forward (``mode='tensor'``: a fastmim model, mmseg's
    backbone + neck + decode head)."""
    import torch
    if getattr(model, 'with_rpn', False) and getattr(model, 'with_roi_head', False):
        return two_stage_forward(model, size)

    class NetworkForward(torch.nn.Module):

        def __init__(self, model):
            super().__init__()
            self.model = model
            self.parts = [name for name, _ in model.named_children()]
            self.notes = []

        def forward(self, images):
            return self.model(images, mode='tensor')

    return NetworkForward(model)


def two_stage_forward(detector, size):
    """mmdet's ``TwoStageDetector._forward`` (backbone, neck, RPN head, RoI heads) with the
    RPN's proposals replaced by ``test_cfg.rpn.max_per_img`` fixed boxes: the RoI heads run on
    every proposal, so their cost is that of the number the config lets through, not of what a
    randomly initialised RPN keeps after NMS. The RoI heads' parts are listed too."""
    import torch
    from mmengine.structures import InstanceData

    count = detector.test_cfg['rpn']['max_per_img']
    generator = torch.Generator().manual_seed(0)
    extent = torch.tensor([size[1], size[0]], dtype=torch.float32)
    corner = torch.rand(count, 2, generator=generator) * extent / 2
    proposals = torch.cat([corner, corner + 1 + torch.rand(count, 2, generator=generator)
                           * extent / 2], dim=1)

    class TwoStageForward(torch.nn.Module):

        def __init__(self, model):
            super().__init__()
            self.model = model
            self.parts = [name for name, _ in model.named_children()] + [
                f'roi_head.{name}' for name, _ in model.roi_head.named_children()]
            self.notes = [
                f'RoI heads on {count} proposals (model.test_cfg.rpn.max_per_img), the mask '
                "head on the first 100 at most, as mmdet's StandardRoIHead.forward runs them: "
                'their GMACs grow with the number of proposals, which depends on the image; '
                "mmcv's RoIAlign counts no multiply-adds"]

        def forward(self, images):
            features = self.model.extract_feat(images)
            objectness, deltas = self.model.rpn_head(features)
            heads = self.model.roi_head(features, [InstanceData(bboxes=proposals)])
            return (*objectness, *deltas, *heads)

    return TwoStageForward(detector)


def count(forward, size):
    """``[(name, params, trainable params, GMACs)]``: the model, then each of its parts that
    holds parameters or multiply-adds (``forward.parts``)."""
    import torch
    from mmengine.analysis import parameter_count

    from fastmim.benchmark.measure import flop_analyzer
    images = torch.randn(1, 3, *size)
    forward = forward.eval()
    with torch.no_grad():
        macs = flop_analyzer(forward, images).by_module()
    model = forward.model
    params = parameter_count(model)
    counted = []
    for name in [''] + forward.parts:
        part = model.get_submodule(name)
        trainable = sum(p.numel() for p in part.parameters() if p.requires_grad)
        gmacs = macs.get(f'model.{name}' if name else 'model', 0) / 1e9
        if params.get(name, 0) or gmacs:
            counted.append((name, params.get(name, 0), trainable, gmacs))
    return counted


# Said under the table when a part holds parameters but the counted forward does not run it.
UNRUN_NOTE = ('a part with parameters and 0 GMACs is not run by the inference forward counted '
              "(mmseg's auxiliary head trains only; mmseg's get_flops leaves it out)")


def report(config, model_name, size, where, rows, notes):
    lines = [f'config: {config}', f'model: {model_name}',
             f'input: 1 x 3 x {size[0]} x {size[1]} ({where})', '',
             f'{"":<28}{"params (M)":>12}{"trainable (M)":>15}{"GMACs":>10}']
    for name, params, trainable, gmacs in rows:
        shown = '  ' * (name.count('.') + 1) + name.rsplit('.', 1)[-1] if name else 'total'
        lines.append(f'{shown:<28}{params / 1e6:>12.2f}{trainable / 1e6:>15.2f}{gmacs:>10.2f}')
    if any(params and not gmacs for name, params, _, gmacs in rows):
        notes = notes + [UNRUN_NOTE]
    lines += [''] + notes + [UNIT]
    return '\n'.join(lines)


def main(argv):
    args = parse_args(argv)
    import fastmim  # noqa: F401  registers modules
    from fastmim.engine.config_loading import load_config
    cfg = load_config(args.config, args.cfg_options)
    model, model_name = built_model(cfg)
    size, where = input_size(cfg, args.shape)
    check_input_size(model, size, args.shape, where)
    forward = counted_forward(model, size)
    rows = count(forward, size)
    print(report(args.config, model_name, size, where, rows, forward.notes))
    return rows


if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/
    from early_checks import refuse_a_missing_config  # imports no fastmim
    refuse_a_missing_config(sys.argv[1:])
    from fastmim.cli import run_cli
    run_cli(main)
