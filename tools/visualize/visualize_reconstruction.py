"""Draw what a FastMIM pre-training checkpoint reconstructs on your images.

    python tools/visualize/visualize_reconstruction.py CONFIG CHECKPOINT
        (--img PATH [PATH ...] | --embedded N) --out-dir DIR
        [--input-size 128] [--seed 0] [--device DEVICE] [--cell-px 16]

Each image is read as RGB, its shorter side resized (bicubic) to ``--input-size`` and centre
cropped to a square, normalised by the model's data preprocessor, masked with a mask drawn from
``--seed`` and reconstructed. One PNG per image (input | masked input | target | prediction, see
``fastmim.visualization.make_reconstruction_panel``) goes to ``--out-dir``; the paths are
printed. ``--embedded N`` uses the first N photos of the toolbox's embedded dataset (real photos
installed with its requirements, see docs/data.md), so the tool runs without any data at hand.
"""
import argparse
import os
import os.path as osp

import numpy as np

def parse_args(argv):
    parser = argparse.ArgumentParser(description='Draw FastMIM reconstructions of images')
    parser.add_argument('config', help='the pre-training config of the checkpoint')
    parser.add_argument('checkpoint', help='a FastMIM pre-training checkpoint')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--img', nargs='+', metavar='PATH', help='image files')
    source.add_argument('--embedded', type=int, metavar='N',
                        help='the first N photos of the embedded dataset (docs/data.md)')
    parser.add_argument('--out-dir', required=True, help='where the PNGs go')
    parser.add_argument('--input-size', type=int, default=128,
                        help='side of the square model input (default 128, the pre-training size)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the mask')
    parser.add_argument('--device', default=None,
                        help='torch device (default: cuda when available, else cpu)')
    parser.add_argument('--cell-px', type=int, default=16, help='drawn size of a target cell')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='allow full unpickling of CHECKPOINT (only for files you trust)')
    return parser.parse_args(argv)


def read_images(args):
    """``[(name, PIL RGB image)]`` of the requested images, every problem named up front."""
    from PIL import Image, UnidentifiedImageError
    if args.embedded is not None:
        from fastmim.datasets import find_embedded_photos
        photos = find_embedded_photos()
        if not 1 <= args.embedded <= len(photos):
            raise ValueError(f'--embedded must be between 1 and {len(photos)}, '
                             f'got {args.embedded}')
        named_paths = [(name.replace('/', '_'), path) for name, path in photos[:args.embedded]]
    else:
        named_paths = [(osp.splitext(osp.basename(path))[0], path) for path in args.img]
    images = []
    for name, path in named_paths:
        if not osp.isfile(path):
            raise FileNotFoundError(f'image not found: {path}')
        try:
            with Image.open(path) as image:
                images.append((name, image.convert('RGB')))
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f'cannot read image {path}: {error}') from None
    return images


def resize_and_crop(image, size):
    """Shorter side to ``size`` (bicubic), then the central ``size x size`` square, uint8 HWC."""
    from PIL import Image
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    image = image.resize(new_size, Image.BICUBIC)
    left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    return np.array(image.crop((left, top, left + size, top + size)))


def build_model(config_path, checkpoint_path, device):
    """The config's model with the checkpoint's weights, strictly (a mismatch is an error)."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    from fastmim.engine.checkpoint import CheckpointError
    from fastmim.engine.launch import load_config
    from fastmim.registry import MODELS

    cfg = load_config(config_path)
    init_default_scope(cfg.get('default_scope', 'fastmim'))
    model = MODELS.build(cfg.model)
    if not hasattr(model, 'reconstruct'):
        raise TypeError(f'{config_path} builds a {type(model).__name__}, which cannot '
                        'reconstruct: use the FastMIM pre-training config of the checkpoint')
    try:
        # 'silent': stdout holds only the paths of the pictures.
        load_checkpoint(model, checkpoint_path, map_location='cpu', strict=True,
                        logger='silent')
    except RuntimeError as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f'{checkpoint_path} does not fit the model of {config_path}: '
                              f'{error}') from None
    return model.to(device)


def output_paths(names, out_dir):
    """``<out_dir>/<name>.png``, with ``_<i>`` appended to names that repeat."""
    paths, seen = [], set()
    for index, name in enumerate(names):
        stem = name if name not in seen else f'{name}_{index}'
        seen.add(name)
        paths.append(osp.join(out_dir, f'{stem}.png'))
    return paths


def main(argv):
    args = parse_args(argv)
    import torch
    from PIL import Image

    import fastmim  # noqa: F401  registers modules, safe checkpoint I/O
    from fastmim.engine.checkpoint import trust_checkpoint
    from fastmim.visualization import draw_reconstructions

    if args.input_size < 1:
        raise ValueError(f'--input-size must be positive, got {args.input_size}')
    images = read_images(args)
    if args.trust_checkpoint:
        trust_checkpoint(args.checkpoint)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    model = build_model(args.config, args.checkpoint, device)

    batch = [torch.from_numpy(resize_and_crop(image, args.input_size)).permute(2, 0, 1)
             for _, image in images]
    inputs = model.data_preprocessor(dict(inputs=batch), False)['inputs']
    panels = draw_reconstructions(model, inputs, seed=args.seed, cell_px=args.cell_px)

    os.makedirs(args.out_dir, exist_ok=True)
    for path, panel in zip(output_paths([name for name, _ in images], args.out_dir), panels):
        Image.fromarray(panel).save(path)
        print(path)


if __name__ == '__main__':
    from fastmim.engine.launch import run_cli
    run_cli(main)
