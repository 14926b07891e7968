"""One benchmark run: every method of one backbone, plus matmul peak, HOG and data pipeline."""
import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import torch

from .measure import (MethodSpec, StepOptions, amp_dtype, default_matmul_size,
                      machine_description, measure_in_fresh_process, measure_matmul_peak,
                      resolve_device, time_hog)
from .methods import CONFIG_ROOT, load_fastmim_recipe, methods_for, recipe_of
from .pipeline_speed import benchmark_data_pipeline
from .report import evaluate_targets

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


def run_benchmark(backbone: str,
                  batch_size: int = 8,
                  iters: int = 5,
                  warmup: int = 2,
                  device: str = 'cpu',
                  amp: bool = False,
                  amp_dtype_name: Optional[str] = None,
                  compile: bool = False,
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
    results dict that ``tools/analysis/benchmark_pretrain.py`` writes as JSON. An empty
    ``data_sizes`` leaves the data pipeline out; ``compile`` needs a warm-up step, in which the
    compilation happens."""
    torch_device = resolve_device(device)
    matmul_size = matmul_size or default_matmul_size(torch_device)
    for name, value, minimum in (('batch_size', batch_size, 1), ('iters', iters, 1),
                                 ('warmup', warmup, 1 if compile else 0),
                                 ('matmul_size', matmul_size, 1),
                                 ('data_samples', data_samples, 1)):
        _positive(name, value, minimum)
    applicable = methods_for(backbone)
    methods = tuple(methods or applicable)
    unknown = [name for name in methods if name not in applicable]
    if unknown:
        raise ValueError(f'methods {unknown} do not apply to {backbone!r}; choose from '
                         f'{applicable}')
    options = StepOptions(amp, amp_dtype_name, compile, channels_last)
    recipe = load_fastmim_recipe(backbone, arch_override, config_root)

    results = dict(
        settings=dict(backbone=backbone, batch_size=batch_size, iters=iters, warmup=warmup,
                      device=device, amp=amp, amp_dtype=amp_dtype_name, compile=compile,
                      channels_last=channels_last, methods=list(methods),
                      arch_override=arch_override, mae_decoder=mae_decoder,
                      config=str(Path(config_root) / recipe_of(backbone).config),
                      matmul_size=matmul_size),
        machine=machine_description(torch_device, options),
        conventions=CONVENTIONS)
    load_at_start = results['machine'].pop('load_average_1_5_15')

    # The quick measurements first, the matmul peak before and after the methods: a machine
    # shared with other work shows up as a drop between the two.
    dtype = amp_dtype(torch_device, amp_dtype_name) if amp else torch.float32
    peak_before = measure_matmul_peak(torch_device, dtype, matmul_size)
    hog_time = None
    if 'fastmim' in methods:
        hog_time = time_hog(recipe.model['target_generator'], batch_size, recipe.input_size,
                            torch_device, iters)
    if data_sizes:
        with tempfile.TemporaryDirectory(prefix='fastmim_benchmark_jpegs_') as folder:
            results['data_pipeline'] = benchmark_data_pipeline(
                recipe.train_pipeline, folder, data_sizes, data_samples, photo_limit)
    results['records'] = [
        measure_in_fresh_process(
            MethodSpec(name, backbone, batch_size, iters, warmup, device, amp, arch_override,
                       str(config_root), mae_decoder, amp_dtype=amp_dtype_name,
                       compile=compile, channels_last=channels_last)) for name in methods
    ]
    peak_after = measure_matmul_peak(torch_device, dtype, matmul_size)
    peak = max(peak_before, peak_after)
    results['matmul_peak'] = dict(gflops_per_s=peak, before_methods=peak_before,
                                  after_methods=peak_after, size=matmul_size,
                                  dtype=str(dtype).replace('torch.', ''))
    for record in results['records']:
        record['mfu'] = record['achieved_gflops_per_s'] / peak
    if hog_time is not None:
        fastmim = next(r for r in results['records'] if r['method'] == 'fastmim')
        results['hog'] = dict(target=recipe.model['target_generator']['type'],
                              batch_size=batch_size, input_size=recipe.input_size,
                              time_s=hog_time,
                              fraction_of_fastmim_step=hog_time / fastmim['step_time_s'])
    results['machine']['load_average_1_5_15'] = dict(start=load_at_start,
                                                      end=list(os.getloadavg()))
    results['targets'] = evaluate_targets(results)
    return results
