"""The printed tables and the plot of a benchmark results dict (the JSON that
tools/analysis/benchmark_pretrain.py writes), verdicts included when it holds them."""
import os
from typing import List, Optional


def _rows(header: List[str], rows: List[List[str]]) -> List[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ['  '.join(str(cell).rjust(width) for cell, width in zip(row, widths))
             for row in [header] + rows]
    lines.insert(1, '  '.join('-' * width for width in widths))
    return lines


def format_report(results: dict) -> str:
    """Plain-text tables of everything in ``results``, as the command prints them."""
    settings, machine = results['settings'], results['machine']
    peak = results['matmul_peak']
    lines = [
        f"{settings['backbone']}, batch {settings['batch_size']}, {settings['iters']} timed "
        f"steps after {settings['warmup']} warm-up, {machine['device']} "
        f"({machine.get('gpu') or machine['cpu']}, {machine['torch_threads']} threads), "
        f"{machine['precision']}"
        + (f", torch.compile (mode {machine.get('compile_mode') or 'default'})"
           if machine.get('compile') else '')
        + (', channels-last' if machine.get('channels_last') else ''),
        f"matmul peak: {peak['gflops_per_s']:.1f} GFLOP/s ({peak['dtype']}, {peak['size']}^3; "
        f"{peak['before_methods']:.1f} before the methods, {peak['after_methods']:.1f} after)",
        f"load average (1 min): {machine['load_average_1_5_15']['start'][0]:.2f} at the start, "
        f"{machine['load_average_1_5_15']['end'][0]:.2f} at the end", ''
    ]
    lines += _rows(
        ['method', 'input', 'tokens', 'images/s', 'step s', 'min s', 'peak MB', 'GFLOPs/img',
         'GFLOP/s', 'MFU'],
        [[r['method'], r['input_size'], f"{r['tokens']}/{r['grid_tokens']}",
          f"{r['images_per_s']:.2f}", f"{r['step_time_s']:.3f}", f"{r['step_time_min_s']:.3f}",
          f"{r['peak_mem_mb']:.0f}",
          f"{r['gflops_per_img']:.2f}", f"{r['achieved_gflops_per_s']:.1f}",
          _percent(r['mfu'])] for r in results['records']])
    hog = results.get('hog')
    if hog is not None:
        lines += ['', f"HOG alone: {hog['time_s'] * 1e3:.1f} ms per batch of "
                  f"{hog['batch_size']} at {hog['input_size']} px = "
                  f"{_percent(hog['fraction_of_fastmim_step'])} of a fastmim step"]
    if results.get('data_pipeline'):
        lines += ['', 'data pipeline, one worker:']
        lines += _rows(['JPEG px', 'variant', 'images/s', 'vs full'],
                       [[r['jpeg_long_side'], r['variant'], f"{r['images_per_s']:.1f}",
                         f"{r['speedup_vs_full_decode']:.2f}x"] for r in results['data_pipeline']])
    if results.get('targets'):
        lines += ['', 'claims:']
        lines += _rows(['claim', 'measured', 'target', 'from FLOPs', 'met'],
                       [[t['name'], f"{t['measured']:.3f}", f"{t['comparison']} {t['target']:.3g}",
                         '' if t['expected_from_flops'] is None else
                         f"{t['expected_from_flops']:.2f}", 'yes' if t['met'] else 'NO']
                        for t in results['targets']])
    return '\n'.join(lines)


def _percent(value: Optional[float]) -> str:
    return '-' if value is None else f'{100 * value:.1f}%'


def check_plot_format(path: str, flag: str = '--plot') -> None:
    """Refuse a plot file name whose extension matplotlib cannot write (``results.txt``)
    before a benchmark runs: ``savefig`` refused it only after the measurement, naming no flag.
    ``flag``: the option that gave ``path``, for the error line."""
    from matplotlib.backend_bases import FigureCanvasBase

    extension = os.path.splitext(path)[1][1:].lower()
    supported = FigureCanvasBase.get_supported_filetypes()
    if extension not in supported:
        raise ValueError(f'{flag} {path}: matplotlib writes no {extension or "extensionless"!r} '
                         f'files; give a name ending in one of '
                         f'{", ".join("." + name for name in sorted(supported))}')


def plot_results(results: dict, path: str) -> None:
    """Bar charts of images/s and peak memory per method (matplotlib, Agg backend), in
    ``path``'s folder, made if missing as the results JSON's is."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    records = results['records']
    names = [f"{r['method']}\n{r['input_size']} px" for r in records]
    figure, (speed_axis, memory_axis) = plt.subplots(1, 2, figsize=(9, 3.6))
    speed_axis.bar(names, [r['images_per_s'] for r in records], color='tab:blue')
    speed_axis.set_ylabel('training images / s')
    memory_axis.bar(names, [r['peak_mem_mb'] for r in records], color='tab:orange')
    memory_axis.set_ylabel('CUDA max allocated (MB)' if results['machine']['device'] == 'cuda'
                           else 'peak RSS of its process (MB)')
    machine = results['machine']
    figure.suptitle(f"{results['settings']['backbone']}, batch {results['settings']['batch_size']}"
                    f", {machine.get('gpu') or machine['cpu']}, {machine['precision']}")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
