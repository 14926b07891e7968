"""The benchmark's verdicts against the published claims, its printed table and its plot."""
from typing import List, Optional

# FastMIM's claims (arXiv 2212.06593 and its release) as ratios measurable on one machine:
# images/s of FastMIM over images/s of another method, per backbone.
SPEEDUP_TARGETS = {
    ('vit_b', 'simmim'): 2.8,
    ('vit_b', 'mae'): 1.6,
    ('swin_b', 'simmim'): 2.0,
}
MEMORY_TARGET = ('vit_b', 1 / 3)  # FastMIM peak memory <= 1/3 of SimMIM's
MFU_TARGET = 0.6
HOG_FRACTION_TARGET = 0.03
DATA_SPEEDUP_TARGET = 2.0


def _target(name, measured, comparison, target, expected=None, note=''):
    met = measured >= target if comparison == '>=' else measured <= target
    return dict(name=name, measured=measured, comparison=comparison, target=target,
                met=bool(met), expected_from_flops=expected, note=note)


def evaluate_targets(results: dict) -> List[dict]:
    """One verdict per claim that this run measured; speed-ups carry the FLOPs-based
    expectation (the other method's forward FLOPs over FastMIM's) beside them."""
    records = {record['method']: record for record in results['records']}
    backbone = results['settings']['backbone']
    fastmim = records.get('fastmim')
    verdicts = []
    if fastmim is None:
        return verdicts
    for (target_backbone, other), target in SPEEDUP_TARGETS.items():
        if target_backbone == backbone and other in records:
            verdicts.append(_target(
                f'{backbone} images/s fastmim / {other}',
                fastmim['images_per_s'] / records[other]['images_per_s'], '>=', target,
                expected=records[other]['gflops_per_img'] / fastmim['gflops_per_img']))
    if backbone == MEMORY_TARGET[0] and 'simmim' in records:
        simmim = records['simmim']
        verdicts.append(_target(f'{backbone} peak memory fastmim / simmim',
                                fastmim['peak_mem_mb'] / simmim['peak_mem_mb'], '<=',
                                MEMORY_TARGET[1], note=fastmim['peak_mem_kind']))
        if fastmim.get('static_mem_mb') is not None:
            verdicts.append(_target(
                f'{backbone} peak memory above weights+gradients+AdamW fastmim / simmim',
                _above_static(fastmim) / _above_static(simmim), '<=', MEMORY_TARGET[1],
                note='max allocated minus what stays allocated after a step'))
        if fastmim.get('rss_after_import_mb') is not None:
            verdicts.append(_target(
                f'{backbone} peak memory above the import baseline fastmim / simmim',
                _above_import(fastmim) / _above_import(simmim), '<=', MEMORY_TARGET[1],
                note='peak RSS minus the RSS after importing torch/timm/mmengine'))
    if fastmim.get('mfu') is not None:
        verdicts.append(_target(f'{backbone} fastmim MFU (3x forward FLOPs / matmul peak)',
                                fastmim['mfu'], '>=', MFU_TARGET))
    hog = results.get('hog')
    if hog is not None:
        verdicts.append(_target(f'{backbone} HOG time / fastmim step time',
                                hog['fraction_of_fastmim_step'], '<=', HOG_FRACTION_TARGET))
    for record in results.get('data_pipeline', []):
        if record['variant'] == 'draft decode':
            verdicts.append(_target(
                f"data pipeline draft / full decode, {record['jpeg_long_side']}-px JPEGs",
                record['speedup_vs_full_decode'], '>=', DATA_SPEEDUP_TARGET))
    return verdicts


def _above_import(record: dict) -> float:
    return record['peak_mem_mb'] - record['rss_after_import_mb']


def _above_static(record: dict) -> float:
    return record['peak_mem_mb'] - record['static_mem_mb']


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
        + (', torch.compile' if machine.get('compile') else '')
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


def plot_results(results: dict, path: str) -> None:
    """Bar charts of images/s and peak memory per method (matplotlib, Agg backend)."""
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
    figure.savefig(path, dpi=100)
    plt.close(figure)
