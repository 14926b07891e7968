"""Draw what a FastMIM pre-training checkpoint reconstructs on your images.

    .venv/bin/python tools/visualize/visualize_reconstruction.py CONFIG CHECKPOINT
        (--img PATH [PATH ...] | --embedded N) --out-dir DIR [--overwrite]
        [--input-size N] [--seed 0] [--device DEVICE] [--cell-px 16]

``--img`` takes image files and folders (their image files, by name). Each image is read as RGB, its shorter side resized (bicubic) to ``--input-size`` (default:
the backbone's ``img_size``, the size the config pre-trains at) and centre cropped to a square,
normalised by the model's data preprocessor, masked with a mask drawn from ``--seed`` and
reconstructed. One PNG per image (input | masked input | target | prediction, see
``fastmim.visualization.make_reconstruction_panel``) goes to ``--out-dir``; the paths are
printed. PNGs already there are refused before the model loads, unless ``--overwrite``;
``--out-dir`` is checked writable then, and made only once the model has drawn, so a refusal
leaves no empty folder.
``--embedded N`` uses the first N photos of the toolbox's embedded dataset (real photos
installed with its requirements, see docs/data.md), so the tool runs without any data at hand.
The same from Python: ``fastmim.apis.get_model`` and ``fastmim.apis.reconstruct``.
"""
import argparse
import os
import os.path as osp
import sys


def parse_args(argv):
    from fastmim.cli import add_debug_arg, add_trust_checkpoint_arg, positive_int

    parser = argparse.ArgumentParser(description='Draw FastMIM reconstructions of images')
    parser.add_argument('config', help='the pre-training config of the checkpoint')
    parser.add_argument('checkpoint', help='a FastMIM pre-training checkpoint')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--img', nargs='+', metavar='PATH',
                        help='image files, or folders of them (their image files, by name)')
    source.add_argument('--embedded', type=int, metavar='N',
                        help='the first N photos of the embedded dataset (docs/data.md)')
    parser.add_argument('--out-dir', required=True, help='where the PNGs go')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace PNGs of the same names already in --out-dir (refused '
                        'otherwise)')
    parser.add_argument('--input-size', type=positive_int, default=None,
                        help="side of the square model input (default: the backbone's img_size, "
                        'the pre-training size)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the mask')
    parser.add_argument('--device', default=None,
                        help='torch device (default: cuda when available, else cpu)')
    parser.add_argument('--cell-px', type=cell_px, default=16,
                        help='drawn size of a target cell in pixels (at least 4)')
    add_trust_checkpoint_arg(parser)
    add_debug_arg(parser)
    return parser.parse_args(argv)


def cell_px(text):
    """argparse type of ``--cell-px``: refused where it is typed, not after the model loaded (the
    drawing's own message names the argument ``cell_px``, not the flag)."""
    from fastmim.visualization.hog_drawing import MIN_CELL_PX
    value = int(text)
    if value < MIN_CELL_PX:
        raise argparse.ArgumentTypeError(
            f'must be an int >= {MIN_CELL_PX} (a drawn cell needs {MIN_CELL_PX} px for a line '
            f'through its centre), got {text}')
    return value


def image_sources(args):
    """``[(name, path)]`` of the requested images: ``--img``'s files and the image files of its
    folders (:func:`images_of`), or the embedded photos."""
    if args.embedded is None:
        paths = [image for path in args.img for image in images_of(path)]
        return [(osp.splitext(osp.basename(path))[0], path) for path in paths]
    from fastmim.datasets import find_embedded_photos
    photos = find_embedded_photos()
    if not 1 <= args.embedded <= len(photos):
        raise ValueError(f'--embedded must be between 1 and {len(photos)}, got {args.embedded}')
    return [(name.replace('/', '_'), path) for name, path in photos[:args.embedded]]


def images_of(path):
    """``[path]`` for anything but a folder (the loader names what is wrong with it); for a
    folder, its image files sorted by name, not those of its subfolders (the loader takes
    files only). A folder without any is refused."""
    from fastmim.datasets.utils import IMG_EXTENSIONS, has_extension

    if not osp.isdir(path):
        return [path]
    images = sorted(osp.join(path, name) for name in os.listdir(path)
                    if has_extension(name, IMG_EXTENSIONS) and osp.isfile(osp.join(path, name)))
    if not images:
        raise FileNotFoundError(f'--img {path} is a folder without image files '
                                f'({", ".join(IMG_EXTENSIONS)})')
    return images


def output_paths(names, out_dir):
    """``<out_dir>/<name>.png``, with ``_<i>`` appended to names that repeat, until the name is
    unused: without the loop ``a/x.jpg b/x.jpg c/x_1.jpg`` would give ``x_1.png`` twice, the
    second panel drawn over the first without a word."""
    paths, taken = [], set()
    for index, name in enumerate(names):
        stem, suffix = name, index
        while stem in taken:
            stem, suffix = f'{name}_{suffix}', suffix + 1
        taken.add(stem)
        paths.append(osp.join(out_dir, f'{stem}.png'))
    return paths


def refuse_to_overwrite(paths, out_dir):
    """Refuse output paths that already hold files: a second run into the same ``--out-dir``
    would replace the first run's pictures without a word."""
    existing = [osp.basename(path) for path in paths if osp.lexists(path)]
    if existing:
        raise FileExistsError(f'--out-dir {out_dir} already holds {", ".join(existing)}; give '
                              'another --out-dir, or --overwrite to replace them')


def classifier_reason(checkpoint):
    """A line naming a fine-tuned classifier's checkpoint (``meta['geometry']`` with
    ``num_classes``, :meth:`ImageClassifier.geometry`), else ''. Given to a pre-training
    config it fails as a list of keys (``head.*`` unexpected, the decoder ``neck.*`` missing)
    that does not say that no config can reconstruct from it: it has no decoder. The line
    replaces that error, whose advice about the backbone's settings (a ViT's
    ``pos_embed_type`` or ``final_norm``) no setting can make lead to a reconstruction. Read
    only once loading has failed, so a good checkpoint is read once; '' for a file that cannot
    be read, which the error names already."""
    from mmengine.runner.checkpoint import _load_checkpoint

    from fastmim.errors import CheckpointError

    try:
        loaded = _load_checkpoint(checkpoint, map_location='cpu', logger='silent')
    except CheckpointError:
        return ''
    meta = loaded.get('meta') if isinstance(loaded, dict) else None
    geometry = meta.get('geometry') if isinstance(meta, dict) else None
    if not isinstance(geometry, dict) or 'num_classes' not in geometry:
        return ''
    return (f'{checkpoint} holds an image classifier of {geometry["num_classes"]} classes '
            '(fine-tuned or converted), which has no decoder to reconstruct with: give a FastMIM '
            'pre-training checkpoint and its config')


def main(argv):
    args = parse_args(argv)
    import torch
    from PIL import Image

    from fastmim.apis import get_model, load_images, reconstruct
    from fastmim.engine.checkpoint import trust_checkpoint
    from fastmim.file_checks import check_dir_can_be_made, check_work_dir
    from fastmim.errors import CheckpointError

    sources = image_sources(args)
    images = load_images([path for _, path in sources])  # every unreadable file named up front
    check_dir_can_be_made(args.out_dir, '--out-dir')  # made once the model has drawn
    paths = output_paths([name for name, _ in sources], args.out_dir)
    if not args.overwrite:
        refuse_to_overwrite(paths, args.out_dir)
    if args.trust_checkpoint:
        trust_checkpoint(args.checkpoint)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')  # get_model checks
    try:
        model = get_model(args.config, args.checkpoint, device)
    except CheckpointError:
        reason = classifier_reason(args.checkpoint)
        if reason:
            raise CheckpointError(reason) from None
        raise
    if args.input_size is None and model.backbone.geometry().get('img_size') is None:
        raise ValueError(f'{type(model.backbone).__name__} records no img_size (the pre-training '
                         'size): give --input-size')
    panels = reconstruct(model, images, seed=args.seed, cell_px=args.cell_px,
                         input_size=args.input_size)

    check_work_dir(args.out_dir, '--out-dir')
    for path, panel in zip(paths, panels):
        Image.fromarray(panel).save(path)
        print(path)


if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/
    from early_checks import refuse_a_missing_checkpoint, refuse_a_missing_config  # no fastmim
    # Reported as get_model reports it after the imports: FileNotFoundError.
    refuse_a_missing_config(sys.argv[1:], reported_as=None)
    refuse_a_missing_checkpoint(sys.argv[1:], 1)
    from fastmim.cli import run_cli
    run_cli(main)
