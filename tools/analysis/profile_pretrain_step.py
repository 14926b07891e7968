"""Where a pre-training step spends its time: torch.profiler's table of one method's step.

    python tools/analysis/profile_pretrain_step.py --backbone vit_b [--method fastmim]
        [--batch-size 256] [--device cuda] [--amp] [--steps 3] [--rows 25]
        [--sort self_cuda_time_total] [--trace trace.json]

The benchmark (benchmark_pretrain.py) says how fast each method is; this says why: the table
lists the operators (and on CUDA the kernels) that take the time of ``--steps`` training steps
after two warm-up steps, with the same model, optimiser and precision as the benchmark.
"""
import argparse
import os
import os.path as osp


def parse_args(argv):
    from pretrain_methods import METHODS, RECIPES
    parser = argparse.ArgumentParser(description='Profile one pre-training step')
    parser.add_argument('--backbone', required=True, choices=sorted(RECIPES))
    parser.add_argument('--method', default='fastmim', choices=METHODS)
    from fastmim.cli import add_debug_arg, positive_int
    parser.add_argument('--batch-size', type=positive_int, default=8)
    parser.add_argument('--device', choices=['cpu', 'cuda'],
                        help='default: cuda when available, else cpu')
    parser.add_argument('--amp', action='store_true',
                        help='autocast: fp16 on CUDA, bf16 on CPU (as the benchmark)')
    parser.add_argument('--steps', type=positive_int, default=3, help='profiled steps')
    parser.add_argument('--rows', type=positive_int, default=25, help='rows of the table')
    parser.add_argument('--sort', help='profiler column to sort by (default: self device '
                        'time on CUDA, self CPU time on CPU)')
    parser.add_argument('--trace', help='also write a Chrome trace (chrome://tracing) here')
    add_debug_arg(parser)
    return parser.parse_args(argv)


def sort_columns():
    """The columns torch's profiler table sorts by: the numbers of an operator's averages.
    torch reads ``cuda``, ``xpu`` and ``privateuse1`` in a name as ``device``."""
    import inspect

    from torch.autograd.profiler_util import FunctionEventAvg
    numbers = {name for name, value in vars(FunctionEventAvg()).items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    averages = {name for cls in inspect.getmro(FunctionEventAvg) for name, value in
                vars(cls).items() if isinstance(value, property) and not name.endswith('_str')}
    return sorted((numbers | averages) - {'node_id', 'cuda_time'})


def check_sort(sort):
    """Refuse an unknown ``--sort`` before profiling: torch's table would fail on it after the
    whole profile, as an AttributeError traceback from inside it."""
    columns = sort_columns()
    for alias in ('cuda', 'xpu', 'privateuse1'):
        sort = sort.replace(alias, 'device')
    if sort not in columns:
        raise ValueError(f'--sort {sort!r} is not a profiler column; expected one of {columns} '
                         "('cuda' may stand for 'device')")


def main(argv):
    args = parse_args(argv)
    import torch
    from torch.profiler import ProfilerActivity, profile

    from pretrain_methods import CONFIG_ROOT, build_method

    from fastmim.benchmark.measure import StepOptions, resolve_device, time_training_steps
    from fastmim.cli import check_output_file

    if args.steps < 1 or args.batch_size < 1:
        raise ValueError('--steps and --batch-size must be >= 1')
    if args.sort:
        check_sort(args.sort)
    if args.trace:
        check_output_file(args.trace, '--trace', folders_made=True)
    device = resolve_device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    method = build_method(args.method, args.backbone, None, CONFIG_ROOT, None)
    options = StepOptions(amp=args.amp)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda'
                                           else [])
    # Warm-up outside the profile (cuBLAS handles, autotuning, allocator growth).
    time_training_steps(method.model, method.input_size, args.batch_size, 0, 2, device, options)
    with profile(activities=activities) as profiler:
        timings = time_training_steps(method.model, method.input_size, args.batch_size,
                                      args.steps, 0, device, options)
    sort = args.sort or ('self_cuda_time_total' if device.type == 'cuda' else
                         'self_cpu_time_total')
    print(f'{args.method} {args.backbone}, batch {args.batch_size}, {device.type}, '
          f"{'autocast' if args.amp else 'fp32'}: step times (s) "
          + ', '.join(f'{t:.4f}' for t in timings.times))
    print(profiler.key_averages().table(sort_by=sort, row_limit=args.rows,
                                        max_name_column_width=60))
    if args.trace:
        # torch's exporter makes no folder (it only logs that it cannot write the file)
        os.makedirs(osp.dirname(osp.abspath(args.trace)), exist_ok=True)
        profiler.export_chrome_trace(args.trace)
        print(f'trace written to {args.trace}')


if __name__ == '__main__':
    from fastmim.cli import run_cli
    run_cli(main)
