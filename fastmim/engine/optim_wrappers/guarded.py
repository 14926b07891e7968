"""Optimiser wrappers that refuse to apply a non-finite loss, and CPU-friendly autocast."""
import logging
from contextlib import contextmanager

import torch
import torch.distributed as torch_dist
from mmengine.dist import is_distributed
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.runner.amp import autocast

from fastmim.registry import OPTIM_WRAPPERS


class NonFiniteLossError(FloatingPointError):
    """Raised when ``on_nonfinite='stop'`` and a step produced a NaN or infinite loss."""


class NonFiniteGuardMixin:
    """Skip the weight update of any step whose loss is NaN or infinite.

    The check is agreed across ranks (all-reduce), so every rank skips the same step and DDP
    stays in lock-step. The backward pass still runs, because DDP expects one backward per
    forward; its gradients, and those accumulated earlier in the same accumulation window,
    are discarded. ``on_nonfinite='stop'`` raises instead, naming the iteration.
    """

    def __init__(self, *args, on_nonfinite='skip', **kwargs):
        if on_nonfinite not in ('skip', 'stop'):
            raise ValueError(f"on_nonfinite must be 'skip' or 'stop', got {on_nonfinite!r}")
        super().__init__(*args, **kwargs)
        self.on_nonfinite = on_nonfinite
        self.skipped_steps = 0

    def update_params(self, loss, step_kwargs=None, zero_kwargs=None):
        if self._loss_is_finite(loss):
            return super().update_params(loss, step_kwargs, zero_kwargs)
        if self.on_nonfinite == 'stop':
            raise NonFiniteLossError(f'loss is {loss.item()} at optimiser step '
                                     f'{self._inner_count}; stopping (on_nonfinite="stop")')
        self.skipped_steps += 1
        print_log(f'loss is {loss.item()}: weights not updated for this step '
                  f'({self.skipped_steps} skipped so far)', logger='current',
                  level=logging.WARNING)
        self.backward(self.scale_loss(loss))
        self.zero_grad(**(zero_kwargs or {}))

    @staticmethod
    def _loss_is_finite(loss):
        finite = torch.isfinite(loss.detach()).all().float()
        if is_distributed():
            torch_dist.all_reduce(finite, op=torch_dist.ReduceOp.MIN)
        return bool(finite.item())


@OPTIM_WRAPPERS.register_module()
class GuardedOptimWrapper(NonFiniteGuardMixin, OptimWrapper):
    """mmengine's ``OptimWrapper`` with the non-finite loss guard."""


@OPTIM_WRAPPERS.register_module()
class GuardedAmpOptimWrapper(NonFiniteGuardMixin, AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper`` (CUDA fp16/bf16 with loss scaling) with the guard."""


@OPTIM_WRAPPERS.register_module()
class AutocastOptimWrapper(NonFiniteGuardMixin, OptimWrapper):
    """Autocast without loss scaling, on any device, with the guard.

    mmengine's ``AmpOptimWrapper`` refuses to run without an accelerator; bf16 autocast on a CPU
    with AVX-512 bf16 is the main speed lever there and, having fp32's exponent range, needs no
    loss scaling.
    """

    def __init__(self, *args, dtype='bfloat16', **kwargs):
        super().__init__(*args, **kwargs)
        self.cast_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), autocast(dtype=self.cast_dtype):
            yield
