"""Measurements: training-step throughput, peak memory, forward FLOPs, matmul peak, HOG time.

Conventions (stated once, used everywhere):

- A training step is ``zero_grad`` + forward (the method's loss) + backward + fused AdamW step
  (the configs' optimiser), on a batch already on the device; the data pipeline is timed
  separately. Throughput is the batch size over the **median** step time after the warm-up
  steps.
- FLOPs: mmengine's ``FlopAnalyzer`` counts one multiply-add as one operation (GMACs, the unit
  of the published per-image estimates); ``gflops_per_img`` is twice that. A training step is
  taken as 3x the forward FLOPs (forward, plus backward at twice the forward), so achieved
  FLOP/s = 3 x forward FLOPs x images/s, and MFU is that over the matmul peak measured here.
- Peak memory: on CUDA ``torch.cuda.max_memory_allocated``, with the part that does not
  depend on the batch (weights, gradients, AdamW moments: what stays allocated after a step)
  recorded beside it; on CPU the peak resident set size (``ru_maxrss``) of the process, which
  is why the benchmark (tools/analysis/benchmark_pretrain.py) runs each method in a fresh one,
  its import baseline (Python, torch, timm, mmengine) recorded beside it.

The functions take any module whose ``loss(images)`` is a training forward and whose
``predict(images)`` is the network forward; which methods are compared, with which configs
and against which published claims, is the benchmark tool's business.
"""
import math
import os
import platform
import resource
import statistics
import time
from dataclasses import dataclass
from typing import List, Optional

import torch
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape
from torch import nn

from fastmim.registry import MODELS


def resolve_device(name: str) -> torch.device:
    if name not in ('cpu', 'cuda'):
        raise ValueError(f"--device must be 'cpu' or 'cuda', got {name!r}")
    if name == 'cuda' and not torch.cuda.is_available():
        raise ValueError('--device cuda was asked for but torch sees no CUDA device '
                         f'(torch {torch.__version__}); use --device cpu')
    return torch.device(name)


AMP_DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}


def amp_dtype(device: torch.device, name: Optional[str] = None) -> torch.dtype:
    """Mixed precision of ``--amp``: ``name`` when given, else bf16 on CPU (AVX-512 BF16
    matmuls) and fp16 on CUDA (the published recipes' precision)."""
    if name is not None:
        if name not in AMP_DTYPES:
            raise ValueError(f'--amp-dtype must be one of {sorted(AMP_DTYPES)}, got {name!r}')
        return AMP_DTYPES[name]
    return torch.float16 if device.type == 'cuda' else torch.bfloat16


def default_matmul_size(device: torch.device) -> int:
    """Side of the peak-measuring matmul: 2048 keeps a CPU busy for a fraction of a second,
    a GPU needs 8192 before launch overhead stops mattering."""
    return 8192 if device.type == 'cuda' else 2048


# torch.compile's modes. 'reduce-overhead' replays the compiled forward and backward as CUDA
# graphs (one launch instead of hundreds of small kernels, which matters when a step is as short
# as FastMIM's); the max-autotune modes also search matmul and convolution kernels.
COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


@dataclass
class StepOptions:
    """How the training step runs: mixed precision, ``torch.compile`` (and its mode, one of
    :data:`COMPILE_MODES`; ``None`` is torch's default), memory format."""
    amp: bool = False
    amp_dtype: Optional[str] = None
    compile: bool = False
    channels_last: bool = False
    compile_mode: Optional[str] = None


@dataclass
class StepTimings:
    """Seconds of each timed step; on CUDA also what stayed allocated after the last step
    (weights, gradients, AdamW moments, the input batch: everything but the activations) and
    how many timed steps fp16 loss scaling skipped (an overflow leaves out the AdamW update)."""
    times: List[float]
    static_mem_mb: Optional[float] = None
    skipped_steps: int = 0


def time_training_steps(model: nn.Module, input_size: int, batch_size: int, iters: int,
                        warmup: int, device: torch.device, options: StepOptions) -> StepTimings:
    """Time ``iters`` training steps of ``model`` (``model.loss(images)`` is its training
    forward) on square images of ``input_size`` after ``warmup`` untimed ones.

    With ``options.compile`` the loss (forward, mask and target) goes through
    ``torch.compile`` in ``options.compile_mode``; its compilation happens in the warm-up steps,
    so ``warmup`` must be at least 1 for the timings to exclude it. The backward pass that
    autograd runs through the compiled graph is compiled with it (and, in 'reduce-overhead',
    replayed as a CUDA graph too); the loss scaling and the fused AdamW step stay eager. CUDA
    graphs replay fixed addresses: the one input batch, reused by every step, and the
    parameters, which AdamW updates in place, keep theirs, and each step runs its backward
    before the next forward, which is when CUDA graph trees start a new iteration.
    """
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    # The configs' optimiser: torch's fused AdamW (one kernel for every parameter).
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=True)
    dtype = amp_dtype(device, options.amp_dtype)
    # Loss scaling only guards fp16's narrow exponent range; bf16 has fp32's.
    scaler = torch.amp.GradScaler(device.type, enabled=options.amp and dtype == torch.float16
                                  and device.type == 'cuda')
    loss_fn = (torch.compile(model.loss, mode=options.compile_mode) if options.compile
               else model.loss)
    images = torch.randn(batch_size, 3, input_size, input_size,
                         device=device).contiguous(memory_format=memory_format)
    times, skipped = [], 0
    for step in range(warmup + iters):
        synchronize(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=options.amp):
            loss = loss_fn(images)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scale = scaler.get_scale() if scaler.is_enabled() else None
        scaler.update()
        synchronize(device)
        times.append(time.perf_counter() - start)
        # update() lowers the scale exactly when step() found an overflow and skipped.
        if step >= warmup and scale is not None and scaler.get_scale() < scale:
            skipped += 1
    static_mem = torch.cuda.memory_allocated(device) / 2**20 if device.type == 'cuda' else None
    return StepTimings(times[warmup:], static_mem, skipped)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def count_forward_gmacs(model: nn.Module, input_size: int, device: torch.device) -> float:
    """Multiply-adds (in G) of one square image of ``input_size`` through ``model.predict``,
    in fp32."""
    class Forward(torch.nn.Module):

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, images):
            return self.model.predict(images)

    images = torch.randn(1, 3, input_size, input_size, device=device)
    return flop_analyzer(Forward(model).eval(), images).total() / 1e9


def flop_analyzer(module: nn.Module, inputs) -> FlopAnalyzer:
    """mmengine's ``FlopAnalyzer`` of ``module(inputs)`` (a tensor or a tuple of arguments),
    with fused attention counted (:func:`attention_macs`) and its warnings about operations
    without multiply-adds (masking, indexing, activations) silenced. ``total()`` and
    ``by_module()`` give multiply-adds."""
    analyzer = FlopAnalyzer(module, inputs)
    analyzer.set_op_handle('aten::scaled_dot_product_attention', attention_macs)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    return analyzer


def attention_macs(inputs, outputs) -> int:
    """Multiply-adds of fused attention (timm's default): ``q k^T`` and ``attn v``, each
    ``prod(q.shape[:-1]) * keys * head_dim``. mmengine's counter has no handle for it and
    would otherwise count attention as free."""
    query, key = get_shape(inputs[0]), get_shape(inputs[1])
    return 2 * math.prod(query[:-1]) * key[-2] * query[-1]


# Matmuls timed for the peak (median), after untimed ones.
PEAK_TIMED, PEAK_WARMUP = 10, 2


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, size: int) -> float:
    """GFLOP/s of a ``size``^3 matmul loop in ``dtype`` (2 size^3 FLOPs each), median time."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times = []
    for _ in range(PEAK_WARMUP + PEAK_TIMED):
        synchronize(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times[PEAK_WARMUP:]) / 1e9


def time_hog(target_cfg: dict, batch_size: int, input_size: int, device: torch.device,
             iters: int, warmup: int) -> float:
    """Median seconds of the target generator alone on one batch of normalised images, after
    ``warmup`` untimed runs (the benchmark's ``--warmup``, as for the methods)."""
    generator = MODELS.build(dict(target_cfg)).to(device)
    images = torch.randn(batch_size, 3, input_size, input_size, device=device)
    times = []
    for _ in range(warmup + iters):
        synchronize(device)
        start = time.perf_counter()
        generator(images)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[warmup:])


def machine_description(device: torch.device, options: StepOptions) -> dict:
    """What ran the benchmark: CPU model, cores, threads, torch, GPU, precision, load."""
    description = dict(
        platform=platform.platform(),
        cpu=_cpu_model(),
        cpu_cores=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        python=platform.python_version(),
        torch=torch.__version__,
        device=device.type,
        precision=str(amp_dtype(device, options.amp_dtype)).replace('torch.', '') + ' autocast'
        if options.amp else 'float32',
        compile=options.compile,
        compile_mode=options.compile_mode if options.compile else None,
        channels_last=options.channels_last,
        load_average_1_5_15=list(os.getloadavg()),
    )
    if device.type == 'cuda':
        description['gpu'] = torch.cuda.get_device_name(device)
    return description


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as cpuinfo:
            for line in cpuinfo:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'
