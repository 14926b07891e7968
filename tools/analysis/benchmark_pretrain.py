"""Pre-training speed and memory of FastMIM against SimMIM and MAE, one backbone, one machine.

    python tools/analysis/benchmark_pretrain.py --backbone {vit_b,swin_b,pvtv2_b2,cmt_s,eva02_b}
        [--batch-size N] [--iters K] [--warmup W] --out results.json [--plot results.png]
        [--device cpu|cuda] [--amp [--amp-dtype float16|bfloat16]]
        [--compile [--compile-mode default|reduce-overhead|max-autotune|...]]
        [--channels-last] [--methods fastmim simmim mae] [--arch-override JSON]
        [--mae-decoder JSON] [--matmul-size N] [--data-sizes 500 1000] [--data-samples 200]

Each method trains in a fresh process (so CPU peak memory is its own); the matmul peak, the HOG
generator and the data pipeline are timed in this one. See docs/benchmark.md for what each
number means and for measured results.

The methods (and MAE's stand-in) are pretrain_methods.py beside this file, the paper's claims
that the run is judged against are below; the measuring itself is ``fastmim.benchmark``.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from fastmim.benchmark.measure import (COMPILE_MODES, StepOptions, amp_dtype,
                                       default_matmul_size, machine_description,
                                       measure_matmul_peak, resolve_device, time_hog)
from fastmim.benchmark.pipeline_speed import benchmark_data_pipeline
from fastmim.benchmark.report import check_plot_format, format_report, plot_results
from fastmim.cli import add_debug_arg, check_output_file, non_negative_int, positive_int
from fastmim.fileio import AtomicLocalBackend
# This folder, first on sys.path when the script runs.
from pretrain_methods import (CONFIG_ROOT, METHODS, RECIPES, RESULT_PREFIX,  # isort:skip
                              MethodSpec, build_method, check_recipe_builds,
                              load_fastmim_recipe, methods_for, recipe_of)

REPO = Path(__file__).resolve().parents[2]

# FastMIM's claims (arXiv 2212.06593 and its release) as ratios measurable on one machine:
# images/s of FastMIM over images/s of another method, per backbone.
SPEEDUP_TARGETS = {
    ('vit_b', 'simmim'): 2.8,
    ('vit_b', 'mae'): 1.6,
    ('swin_b', 'simmim'): 2.0,
}
MEMORY_TARGET = ('vit_b', 1 / 3)  # FastMIM peak memory <= 1/3 of SimMIM's
MFU_TARGET = 0.6
# On a GPU FastMIM's short steps are mostly memory-bound work (docs/benchmark.md, section 5):
# the GPU target is for a compiled ViT-B step, 45% (issue 10).
COMPILED_GPU_MFU_TARGET = ('vit_b', 0.45)
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
        # The memory above a baseline is a ratio only where SimMIM's is above it: a small
        # model's step can peak no higher than the baseline (the ratio would be a
        # ZeroDivisionError after the whole run, losing its results), and then the claim is not
        # measured.
        if fastmim.get('static_mem_mb') is not None and _above_static(simmim) > 0:
            verdicts.append(_target(
                f'{backbone} peak memory above weights+gradients+AdamW fastmim / simmim',
                _above_static(fastmim) / _above_static(simmim), '<=', MEMORY_TARGET[1],
                note='max allocated minus what stays allocated after a step'))
        if fastmim.get('rss_after_import_mb') is not None and _above_import(simmim) > 0:
            verdicts.append(_target(
                f'{backbone} peak memory above the import baseline fastmim / simmim',
                _above_import(fastmim) / _above_import(simmim), '<=', MEMORY_TARGET[1],
                note='peak RSS minus the RSS after importing torch/timm/mmengine'))
    if fastmim.get('mfu') is not None:
        settings = results['settings']
        if settings.get('device') == 'cuda' and backbone == COMPILED_GPU_MFU_TARGET[0]:
            if settings.get('compile'):
                verdicts.append(_target(
                    f'{backbone} fastmim MFU (3x forward FLOPs / matmul peak), compiled',
                    fastmim['mfu'], '>=', COMPILED_GPU_MFU_TARGET[1]))
        else:
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


def measure_in_fresh_process(spec: MethodSpec, timeout: Optional[float] = None) -> dict:
    """:func:`pretrain_methods.measure_method` in a new Python process (so that the CPU peak
    memory is the method's own); errors carry its stderr."""
    env = dict(os.environ)
    # fastmim from this checkout, also where it is not installed.
    env['PYTHONPATH'] = os.pathsep.join(
        [str(REPO)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    command = [sys.executable, str(Path(__file__).with_name('pretrain_methods.py')),
               json.dumps(asdict(spec))]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    records = [line[len(RESULT_PREFIX):] for line in result.stdout.splitlines()
               if line.startswith(RESULT_PREFIX)]
    if result.returncode != 0 or len(records) != 1:
        raise RuntimeError(f'benchmark of {spec.method!r} on {spec.backbone!r} failed in its '
                           f'process (exit code {result.returncode}):\n{result.stderr[-3000:]}')
    return json.loads(records[0])


CONVENTIONS = dict(
    training_step='zero_grad + forward (loss) + backward + fused AdamW step on a batch already '
    'on the device; images/s = batch / median step time after warm-up',
    flops='mmengine FlopAnalyzer multiply-adds of the encoder + decoder forward (fused '
    'attention counted as q k^T + attn v); gflops_per_img = 2 x GMACs',
    achieved_flops='3 x forward FLOPs x images/s (backward = 2 x forward)',
    mfu='achieved FLOP/s / matmul peak measured by this run in the same precision (the '
    'better of one measurement before and one after the methods)',
    peak_memory='CUDA: torch.cuda.max_memory_allocated, what stays allocated after a step '
    '(weights, gradients, AdamW moments) in static_mem_mb; CPU: peak RSS (ru_maxrss) of a '
    'fresh process per method, its RSS right after the imports in rss_after_import_mb',
    inputs='random normalised images (the cost of every op is independent of the pixel values)',
)


def _positive(name, value, minimum=1):
    if not isinstance(value, int) or value < minimum:
        raise ValueError(f'{name} must be an int >= {minimum}, got {value!r}')


def check_mae_decoder(mae_decoder: Optional[dict], methods: Sequence[str], backbone: str,
                      arch_override: Optional[dict], config_root: Path) -> None:
    """Build MAE with ``mae_decoder`` on the meta device before anything is measured: a wrong
    key or value would fail only in MAE's process, the last one, as a traceback inside the
    parent's. An override for a run that measures no MAE would be ignored, so it is refused."""
    if mae_decoder is None:
        return
    if 'mae' not in methods:
        raise ValueError(f'--mae-decoder {json.dumps(mae_decoder)} is for MAE, which this run '
                         f'does not measure (methods {list(methods)})')
    try:
        with torch.device('meta'):
            build_method('mae', backbone, arch_override, config_root, mae_decoder)
    except ValueError as error:
        raise ValueError(f'--mae-decoder {json.dumps(mae_decoder)}: {error}') from None


def run_benchmark(backbone: str,
                  batch_size: int = 8,
                  iters: int = 5,
                  warmup: int = 2,
                  device: str = 'cpu',
                  amp: bool = False,
                  amp_dtype_name: Optional[str] = None,
                  compile: bool = False,
                  compile_mode: Optional[str] = None,
                  channels_last: bool = False,
                  methods: Optional[Sequence[str]] = None,
                  arch_override: Optional[dict] = None,
                  mae_decoder: Optional[dict] = None,
                  matmul_size: Optional[int] = None,
                  data_sizes: Sequence[int] = (500, 1000),
                  data_samples: int = 200,
                  photo_limit: Optional[int] = None,
                  config_root: Path = CONFIG_ROOT) -> dict:
    """Measure the matmul peak, the HOG generator and the data pipeline in this process, every
    method of ``backbone`` in a fresh process each, and the matmul peak again; returns the
    results dict that the command writes as JSON. An empty
    ``data_sizes`` leaves the data pipeline out; ``compile`` needs a warm-up step, in which the
    compilation happens, and runs in ``compile_mode`` (torch's 'default' when not given).
    Every argument is checked, and the recipe built, before anything is measured."""
    compile_mode = _recorded_compile_mode(compile, compile_mode)
    torch_device = resolve_device(device)
    # None, not 0, means the default: a 0 would measure at the default size without a word,
    # so 0 is refused (_check_counts).
    matmul_size = default_matmul_size(torch_device) if matmul_size is None else matmul_size
    _check_counts(compile, data_sizes, photo_limit, batch_size=batch_size, iters=iters,
                  warmup=warmup, matmul_size=matmul_size, data_samples=data_samples)
    methods = _methods_to_measure(backbone, methods)
    options = StepOptions(amp, amp_dtype_name, compile, channels_last, compile_mode)
    recipe = load_fastmim_recipe(backbone, arch_override, config_root)
    check_recipe_builds(recipe, backbone, arch_override)
    check_mae_decoder(mae_decoder, methods, backbone, arch_override, config_root)

    settings = dict(backbone=backbone, batch_size=batch_size, iters=iters, warmup=warmup,
                    device=device, amp=amp, amp_dtype=amp_dtype_name, compile=compile,
                    compile_mode=compile_mode, channels_last=channels_last,
                    methods=list(methods),
                    arch_override=arch_override, mae_decoder=mae_decoder,
                    config=str(Path(config_root) / recipe_of(backbone).config),
                    matmul_size=matmul_size)
    specs = [
        MethodSpec(name, backbone, batch_size, iters, warmup, device, amp, arch_override,
                   str(config_root), mae_decoder, amp_dtype=amp_dtype_name, compile=compile,
                   channels_last=channels_last, compile_mode=compile_mode) for name in methods
    ]
    return _measure(settings, specs, recipe, options, torch_device,
                    dict(sizes=data_sizes, samples=data_samples, photo_limit=photo_limit))


def _recorded_compile_mode(compile: bool, compile_mode: Optional[str]) -> Optional[str]:
    """The compile mode a result records: 'default' rather than left out with ``compile``, so
    a result says which mode it ran; a mode without ``compile`` or unknown to torch refused."""
    if compile_mode is not None and not compile:
        raise ValueError(f'--compile-mode {compile_mode} needs --compile (compile=True): '
                         'the mode is how torch.compile runs the loss')
    if compile_mode is not None and compile_mode not in COMPILE_MODES:
        raise ValueError(f'compile_mode must be one of {COMPILE_MODES}, got {compile_mode!r}')
    return compile_mode or ('default' if compile else None)


def _check_counts(compile: bool, data_sizes: Sequence[int], photo_limit: Optional[int],
                  **counts: int) -> None:
    """Every count of ``counts``, each data size and the photo limit (when given) an int of at
    least 1; the warm-up may be 0 unless ``compile``, which compiles in the warm-up steps."""
    minimums = dict(warmup=1 if compile else 0)
    checked = [(name, value, minimums.get(name, 1)) for name, value in counts.items()]
    checked += [('data_sizes', size, 1) for size in data_sizes]
    if photo_limit is not None:
        checked.append(('photo_limit', photo_limit, 1))
    for name, value, minimum in checked:
        _positive(name, value, minimum)


def _methods_to_measure(backbone: str, methods: Optional[Sequence[str]]) -> tuple:
    """``methods`` (default: every method that applies to ``backbone``), each one that
    applies."""
    applicable = methods_for(backbone)
    methods = tuple(methods or applicable)
    unknown = [name for name in methods if name not in applicable]
    if unknown:
        raise ValueError(f'methods {unknown} do not apply to {backbone!r}; choose from '
                         f'{applicable}')
    return methods


def _measure(settings: dict, specs: Sequence[MethodSpec], recipe, options: StepOptions,
             torch_device: torch.device, data: dict) -> dict:
    """The results of the run ``settings`` describes. The quick measurements first, the
    matmul peak before and after the methods: a machine shared with other work shows up as a
    drop between the two."""
    results = dict(settings=settings, machine=machine_description(torch_device, options),
                   conventions=CONVENTIONS)
    load_at_start = results['machine'].pop('load_average_1_5_15')
    dtype = (amp_dtype(torch_device, settings['amp_dtype']) if settings['amp'] else
             torch.float32)
    peak_before = measure_matmul_peak(torch_device, dtype, settings['matmul_size'])
    hog_time = None
    if 'fastmim' in settings['methods']:
        hog_time = time_hog(recipe.model['target_generator'], settings['batch_size'],
                            recipe.input_size, torch_device, settings['iters'],
                            settings['warmup'])
    if data['sizes']:
        with tempfile.TemporaryDirectory(prefix='fastmim_benchmark_jpegs_') as folder:
            results['data_pipeline'] = benchmark_data_pipeline(
                recipe.train_pipeline, folder, data['sizes'], data['samples'],
                data['photo_limit'])
    results['records'] = [measure_in_fresh_process(spec) for spec in specs]
    peak_after = measure_matmul_peak(torch_device, dtype, settings['matmul_size'])
    _add_utilisation(results, peak_before, peak_after, dtype)
    if hog_time is not None:
        _add_hog_share(results, recipe, hog_time)
    results['machine']['load_average_1_5_15'] = dict(start=load_at_start,
                                                      end=list(os.getloadavg()))
    results['targets'] = evaluate_targets(results)
    return results


def _add_utilisation(results: dict, peak_before: float, peak_after: float,
                     dtype: torch.dtype) -> None:
    """The matmul peak (the better of the two measurements) and each record's MFU against
    it."""
    peak = max(peak_before, peak_after)
    results['matmul_peak'] = dict(gflops_per_s=peak, before_methods=peak_before,
                                  after_methods=peak_after, size=results['settings']['matmul_size'],
                                  dtype=str(dtype).replace('torch.', ''))
    for record in results['records']:
        record['mfu'] = record['achieved_gflops_per_s'] / peak


def _add_hog_share(results: dict, recipe, hog_time: float) -> None:
    """The HOG generator's time and its share of FastMIM's step."""
    fastmim = next(r for r in results['records'] if r['method'] == 'fastmim')
    results['hog'] = dict(target=recipe.model['target_generator']['type'],
                          batch_size=results['settings']['batch_size'],
                          input_size=recipe.input_size, time_s=hog_time,
                          fraction_of_fastmim_step=hog_time / fastmim['step_time_s'])


def parse_args(argv):
    parser = argparse.ArgumentParser(description='Benchmark FastMIM pre-training speed and '
                                     'memory against SimMIM and MAE')
    parser.add_argument('--backbone', required=True, choices=sorted(RECIPES))
    parser.add_argument('--batch-size', type=positive_int, default=8,
                        help='images per training step')
    parser.add_argument('--iters', type=positive_int, default=5,
                        help='timed steps (median reported)')
    parser.add_argument('--warmup', type=non_negative_int, default=2,
                        help='untimed steps before them (at least 1 with --compile)')
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
    parser.add_argument('--compile-mode', choices=COMPILE_MODES,
                        help="torch.compile's mode with --compile (default: 'default'); "
                        "'reduce-overhead' replays the compiled forward and backward as CUDA "
                        'graphs')
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
    parser.add_argument('--matmul-size', type=positive_int,
                        help='side of the square matmul that measures the peak FLOP/s '
                        '(default: 2048 on CPU, 8192 on CUDA)')
    parser.add_argument('--data-sizes', type=positive_int, nargs='*', default=[500, 1000],
                        help='longer sides (px) of the JPEG files the pipeline is timed on; '
                        'none: leave the data pipeline out')
    parser.add_argument('--data-samples', type=positive_int, default=200,
                        help='images per data-pipeline timing')
    parser.add_argument('--photo-limit', type=positive_int,
                        help='use only the first N embedded photos')
    add_debug_arg(parser)
    return parser.parse_args(argv)


def _json_dict(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f'not valid JSON ({error}): {text}')
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'must be a JSON object, got {text}')
    return value


def check_distinct_outputs(out, plot):
    """``--out X --plot X`` would write the results, then replace them with the plot: the
    measurement would be lost after the whole benchmark. Compared resolved (``./X``, a link)."""
    if osp.realpath(out) == osp.realpath(plot):
        raise ValueError(f'--out {out} and --plot {plot} are the same file: the plot would '
                         'replace the results; give two names')


def main(argv):
    args = parse_args(argv)
    # Missing folders are made: by the atomic write of --out, by plot_results for --plot.
    check_output_file(args.out, '--out', folders_made=True)
    if args.plot:
        check_output_file(args.plot, '--plot', folders_made=True)
        check_plot_format(args.plot)
        check_distinct_outputs(args.out, args.plot)
    if args.amp_dtype and not args.amp:
        raise ValueError('--amp-dtype needs --amp')
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    results = run_benchmark(
        args.backbone, batch_size=args.batch_size, iters=args.iters, warmup=args.warmup,
        device=device, amp=args.amp, amp_dtype_name=args.amp_dtype, compile=args.compile,
        compile_mode=args.compile_mode, channels_last=args.channels_last, methods=args.methods,
        arch_override=args.arch_override, mae_decoder=args.mae_decoder,
        matmul_size=args.matmul_size, data_sizes=args.data_sizes, data_samples=args.data_samples,
        photo_limit=args.photo_limit)
    # Replaced atomically: a run killed while writing, or a value JSON cannot hold, left half
    # a file (or none) in place of an earlier result.
    AtomicLocalBackend().put_text(json.dumps(results, indent=2), args.out)
    print(format_report(results))
    print(f'\nresults written to {args.out}')
    if args.plot:
        plot_results(results, args.plot)
        print(f'plot written to {args.plot}')


if __name__ == '__main__':
    from fastmim.cli import run_cli
    run_cli(main)
