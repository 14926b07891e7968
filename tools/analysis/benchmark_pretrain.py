"""Pre-training speed and memory of FastMIM against SimMIM and MAE, one backbone, one machine.

    python tools/analysis/benchmark_pretrain.py --backbone {vit_b,swin_b,pvtv2_b2,cmt_s}
        [--batch-size N] [--iters K] [--warmup W] --out results.json [--plot results.png]
        [--device cpu|cuda] [--amp [--amp-dtype float16|bfloat16]] [--compile]
        [--channels-last] [--methods fastmim simmim mae] [--arch-override JSON]
        [--mae-decoder JSON] [--matmul-size N] [--data-sizes 500 1000] [--data-samples 200]

Each method trains in a fresh process (so CPU peak memory is its own); the matmul peak, the HOG
generator and the data pipeline are timed in this one. See docs/benchmark.md for what each
number means and for measured results.
"""
import argparse
import json
import os.path as osp


def parse_args(argv):
    from fastmim.benchmark.methods import METHODS, RECIPES
    parser = argparse.ArgumentParser(description='Benchmark FastMIM pre-training speed and '
                                     'memory against SimMIM and MAE')
    parser.add_argument('--backbone', required=True, choices=sorted(RECIPES))
    parser.add_argument('--batch-size', type=int, default=8, help='images per training step')
    parser.add_argument('--iters', type=int, default=5, help='timed steps (median reported)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps before them')
    parser.add_argument('--out', required=True, help='results JSON file')
    parser.add_argument('--plot', help='PNG with bars of images/s and peak memory')
    parser.add_argument('--device', choices=['cpu', 'cuda'],
                        help='default: cuda when available, else cpu')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: bf16 autocast on CPU, fp16 autocast on CUDA')
    parser.add_argument('--amp-dtype', choices=['float16', 'bfloat16'],
                        help='the autocast dtype of --amp instead of the device default')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the loss (forward, mask, target); compiled in the '
                        'warm-up steps')
    parser.add_argument('--channels-last', action='store_true',
                        help='model and images in channels-last memory format (helps '
                        'convolutional backbones on GPUs)')
    parser.add_argument('--methods', nargs='+', choices=METHODS,
                        help='subset of the methods (default: all that apply)')
    parser.add_argument('--arch-override', type=_json_dict, metavar='JSON',
                        help='replace the backbone arch, e.g. \'{"embed_dim": 192, "depth": 6, '
                        '"num_heads": 3}\' for a ViT')
    parser.add_argument('--mae-decoder', type=_json_dict, metavar='JSON',
                        help='override MAE\'s 512-wide 8-block decoder, e.g. \'{"decoder_dim": '
                        '256, "decoder_depth": 1}\' (keys decoder_dim, decoder_depth, '
                        'decoder_heads, mlp_ratio)')
    parser.add_argument('--matmul-size', type=int,
                        help='side of the square matmul that measures the peak FLOP/s '
                        '(default: 2048 on CPU, 8192 on CUDA)')
    parser.add_argument('--data-sizes', type=int, nargs='*', default=[500, 1000],
                        help='longer sides (px) of the JPEG files the pipeline is timed on; '
                        'none: leave the data pipeline out')
    parser.add_argument('--data-samples', type=int, default=200,
                        help='images per data-pipeline timing')
    parser.add_argument('--photo-limit', type=int, help='use only the first N embedded photos')
    return parser.parse_args(argv)


def _json_dict(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f'not valid JSON ({error}): {text}')
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'must be a JSON object, got {text}')
    return value


def main(argv):
    args = parse_args(argv)
    import torch

    from fastmim.benchmark.report import format_report, plot_results
    from fastmim.benchmark.suite import run_benchmark

    out_dir = osp.dirname(osp.abspath(args.out))
    if not osp.isdir(out_dir):
        raise FileNotFoundError(f'--out folder does not exist: {out_dir}')
    if args.amp_dtype and not args.amp:
        raise ValueError('--amp-dtype needs --amp')
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    results = run_benchmark(
        args.backbone, batch_size=args.batch_size, iters=args.iters, warmup=args.warmup,
        device=device, amp=args.amp, amp_dtype_name=args.amp_dtype, compile=args.compile,
        channels_last=args.channels_last, methods=args.methods, arch_override=args.arch_override,
        mae_decoder=args.mae_decoder, matmul_size=args.matmul_size, data_sizes=args.data_sizes,
        data_samples=args.data_samples, photo_limit=args.photo_limit)
    with open(args.out, 'w') as file:
        json.dump(results, file, indent=2)
    print(format_report(results))
    print(f'\nresults written to {args.out}')
    if args.plot:
        plot_results(results, args.plot)
        print(f'plot written to {args.plot}')


if __name__ == '__main__':
    from fastmim.engine.launch import run_cli
    run_cli(main)
