"""Optimiser wrappers that refuse to apply a non-finite loss, and CPU-friendly autocast."""
import logging
from contextlib import contextmanager

import torch
import torch.distributed as torch_dist
from mmengine.device import get_device
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
        # mmengine asserts > 0 only: 0 was a bare AssertionError, and 1.5 trained without a
        # word, dividing each loss by 1.5 and stepping at every third iteration.
        counts = kwargs.get('accumulative_counts', 1)
        if isinstance(counts, bool) or not isinstance(counts, int) or counts < 1:
            raise ValueError(f'optim_wrapper.accumulative_counts must be a whole number >= 1 '
                             f'(batches per update), got {counts!r}')
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
        self.cast_dtype = self._checked_dtype(dtype)
        super().__init__(*args, **kwargs)

    @staticmethod
    def _checked_dtype(dtype):
        """The torch dtype to autocast in. A name torch lacks (``'fp16'``) was an
        AttributeError, and float16 on the CPU mmengine's bare AssertionError at the first
        iteration (its CPU autocast takes bfloat16 only): both are named where it is built."""
        cast = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
        if cast not in (torch.float16, torch.bfloat16):
            raise ValueError(f"AutocastOptimWrapper: dtype must be 'float16' or 'bfloat16', "
                             f'got {dtype!r}')
        if cast == torch.float16 and get_device() == 'cpu':
            raise ValueError("AutocastOptimWrapper: dtype 'float16' needs CUDA; the CPU "
                             "autocasts in 'bfloat16' (optim_wrapper.dtype='bfloat16')")
        return cast

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), autocast(dtype=self.cast_dtype):
            yield
