"""Optimiser wrappers that refuse to apply a non-finite loss, and CPU-friendly autocast."""
import logging
from contextlib import contextmanager
from typing import Optional

import numpy as np
import torch
from mmengine.device import get_device
from mmengine.dist import all_reduce, is_distributed
from mmengine.logging import HistoryBuffer, MessageHub, print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper, OptimWrapperDict
from mmengine.runner.amp import autocast
from torch.distributed.tensor import DTensor

from fastmim.registry import OPTIM_WRAPPERS, type_name


class NonFiniteLossError(FloatingPointError):
    """Raised when ``on_nonfinite='stop'`` and a step produced a NaN or infinite loss (or, in
    a wrapper without loss scaling, NaN or infinite gradients), and when ``'skip'`` has skipped
    ``max_consecutive_skips`` updates in a row."""


# The message hub's record of the updates skipped so far in the run: logged as 'skipped_steps'
# next to the loss, and saved in every checkpoint with the hub, so a resumed run goes on counting.
SKIPPED_STEPS_KEY = 'train/skipped_steps'


def training_position() -> str:
    """``'iteration 5 (epoch 3)'``, counted from 1 as mmengine's logs, checkpoint names and
    ``--resume`` count, from the 0-based ``iter`` / ``epoch`` that mmengine's
    ``RuntimeInfoHook`` puts in the message hub; ``'this step'`` outside a runner."""
    hub = MessageHub.get_current_instance()
    iteration, epoch = hub.get_info('iter'), hub.get_info('epoch')
    if iteration is None:
        return 'this step'
    if epoch is None or (hub.get_info('max_epochs') or 1) <= 1:  # iteration-based loops
        return f'iteration {iteration + 1}'
    return f'iteration {iteration + 1} (epoch {epoch + 1})'


class NonFiniteGuardMixin:
    """Skip the weight update of any step whose loss is NaN or infinite.

    The check is agreed across ranks (all-reduce), so every rank skips the same step and DDP
    stays in lock-step. The backward pass still runs, because DDP expects one backward per
    forward; its gradients, and those accumulated earlier in the same accumulation window,
    are discarded. ``on_nonfinite='stop'`` raises instead, naming the iteration.

    A run that has diverged gives a non-finite loss at every step: ``'skip'`` stops it too, once
    ``max_consecutive_skips`` updates in a row were skipped (default 100; ``None`` never stops).
    The weights do not change between skipped updates, so that many different batches in a row
    failing points at the weights, not at the data. Every rank skips the same updates, so every
    rank stops at the same iteration. The count starts afresh in a resumed run: a diverged run
    resumed unchanged stops again ``max_consecutive_skips`` updates later.

    A skipped step's NaN loss would stay in the log's moving average (mmengine's
    ``LogProcessor`` averages the last ``window_size`` values of the message hub's
    ``train/loss``) and show ``loss: nan`` for that many iterations, as if the run diverged:
    the skip is logged as a warning naming the iteration and counted in the log's
    ``skipped_steps``, and the skipped step's non-finite values leave the averages, and the
    message hub that a checkpoint of the skipped iteration saves (``CheckpointMetaHook``).

    A finite loss can still have infinite or NaN gradients (an overflow in the backward pass).
    mmengine's ``AmpOptimWrapper`` skips those updates itself (its GradScaler lowers the scale
    and retries); the wrappers without loss scaling (``guards_gradients``) check the gradients
    before the update too, since one such update turns every weight into NaN for the rest of
    the run, and the checkpoints saved from then on hold NaN weights. The ranks agree on that
    check too: by the gradients DDP averaged, or, when FSDP shards them, by an all-reduce.
    Under FSDP with fp16, ``GuardedAmpOptimWrapper`` needs mmengine's ``use_fsdp=True`` (its
    ``ShardedGradScaler`` agrees across ranks; the plain GradScaler does not).
    """

    guards_gradients = True

    def __init__(self, *args, on_nonfinite='skip', max_consecutive_skips=100, **kwargs):
        if on_nonfinite not in ('skip', 'stop'):
            raise ValueError(f"on_nonfinite must be 'skip' or 'stop', got {on_nonfinite!r}")
        if max_consecutive_skips is not None and (
                isinstance(max_consecutive_skips, bool)
                or not isinstance(max_consecutive_skips, int) or max_consecutive_skips < 1):
            raise ValueError(f'optim_wrapper.max_consecutive_skips must be a whole number >= 1 '
                             f'or None (never stop), got {max_consecutive_skips!r}')
        # mmengine asserts > 0 only: 0 would be a bare AssertionError, and 1.5 would train
        # without a word, dividing each loss by 1.5 and stepping at every third iteration.
        counts = kwargs.get('accumulative_counts', 1)
        if isinstance(counts, bool) or not isinstance(counts, int) or counts < 1:
            raise ValueError(f'optim_wrapper.accumulative_counts must be a whole number >= 1 '
                             f'(batches per update), got {counts!r}')
        super().__init__(*args, **kwargs)
        self.on_nonfinite = on_nonfinite
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped_steps = 0  # in this process
        self.consecutive_skips = 0
        self._lengths_before_skipped_logs = None

    def update_params(self, loss, step_kwargs=None, zero_kwargs=None):
        self.drop_skipped_step_logs(MessageHub.get_current_instance().log_scalars)
        self._lengths_before_skipped_logs = None
        if self._loss_is_finite(loss):
            return super().update_params(loss, step_kwargs, zero_kwargs)
        self._refuse_update(f'loss is {loss.item()}')
        self.backward(self.scale_loss(loss))
        self.zero_grad(**(zero_kwargs or {}))

    def drop_skipped_step_logs(self, log_scalars: dict) -> None:
        """Remove the last skipped step's non-finite values from ``log_scalars``: the message
        hub's own at the next step, or the copy of it that a checkpoint saved at the skipped
        iteration holds (``CheckpointMetaHook``), which a resumed run would otherwise average
        into ``loss: nan`` for ``window_size`` iterations. Nothing when no step was skipped."""
        if self._lengths_before_skipped_logs is not None:
            drop_skipped_nonfinite_logs(log_scalars, self._lengths_before_skipped_logs)

    def step(self, **kwargs):
        """The update, unless a wrapper without loss scaling holds non-finite gradients
        (checked before clipping, which would spread them to every gradient as NaN). The
        caller, ``update_params``, zeroes the gradients either way."""
        if not self.guards_gradients or self._gradients_are_finite():
            self.consecutive_skips = 0
            return super().step(**kwargs)
        self._refuse_update('gradients are not finite (the loss is finite)')

    def _refuse_update(self, what: str) -> None:
        """Stop or count-and-warn, by ``on_nonfinite``, for an update that is not applied."""
        where = training_position()
        self.consecutive_skips += 1
        if (self.on_nonfinite == 'skip' and self.max_consecutive_skips is not None
                and self.consecutive_skips >= self.max_consecutive_skips):
            raise NonFiniteLossError(
                f'{what} at {where}: {self.consecutive_skips} updates in a row skipped '
                f'(optim_wrapper.max_consecutive_skips={self.max_consecutive_skips}), the '
                'training has diverged; stopping. The weights, like the checkpoints saved so '
                'far, hold no NaN: resume from the last checkpoint (--resume) with a lower lr '
                'or optim_wrapper.clip_grad')
        if self.on_nonfinite == 'stop':
            raise NonFiniteLossError(
                f'{what} at {where}; stopping (optim_wrapper.on_nonfinite="stop") before it '
                'reaches the weights, which, like the checkpoints saved so far, hold no NaN: '
                'resume from the last checkpoint (--resume) with a lower lr or '
                "optim_wrapper.clip_grad, or set optim_wrapper.on_nonfinite='skip' to skip "
                'such steps')
        self.skipped_steps += 1
        in_run = count_skipped_step(MessageHub.get_current_instance())
        self._lengths_before_skipped_logs = history_lengths(MessageHub.get_current_instance())
        print_log(f'{what} at {where}: weights not updated for this step ({in_run} skipped so '
                  f'far, {self.consecutive_skips} in a row)', logger='current',
                  level=logging.WARNING)

    @staticmethod
    def _loss_is_finite(loss):
        finite = torch.isfinite(loss.detach()).all().float()
        all_reduce(finite, op='min')  # nothing in one process
        return bool(finite.item())

    def _gradients_are_finite(self) -> bool:
        """Whether every gradient is finite, on every rank.

        Under DDP the gradients are already averaged over the ranks, so every rank reaches the
        same answer without another collective (each is a host sync on a GPU). Under FSDP a
        rank holds its own shard of the gradients, and an overflow shows in the shards that
        hold it only: the ranks agree by an all-reduce, since a rank that stepped while another
        skipped would leave the model half updated, silently."""
        params = [param for group in self.optimizer.param_groups for param in group['params']]
        grads = [local_shard(param.grad.detach()) for param in params
                 if param.grad is not None]
        # The largest magnitude: NaN and inf propagate, and no sum of squares can overflow.
        # An empty shard (FSDP gives some ranks one) has no largest value.
        largest = torch.nn.utils.get_total_norm([grad for grad in grads if grad.numel()],
                                                norm_type=float('inf'))
        finite = torch.isfinite(largest).float()
        if is_distributed() and any(is_sharded(param) for param in params):
            all_reduce(finite, op='min')  # on the backend's device: a rank may have no grads
        return bool(finite.item())


def is_sharded(param: torch.Tensor) -> bool:
    """Whether ``param`` is this rank's shard of a weight, whose gradient then differs from the
    other ranks': a ``DTensor`` sharded on some mesh dimension (torch's ``fully_shard``), or a
    parameter that ``FullyShardedDataParallel`` flattened (mmengine's
    ``MMFullyShardedDataParallel`` too), which torch marks ``_fsdp_flattened``, its flat
    parameter (``use_orig_params=False``) and the original ones (``True``) alike."""
    if isinstance(param, DTensor):
        return any(placement.is_shard() for placement in param.placements)
    return getattr(param, '_fsdp_flattened', False)


def local_shard(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a ``DTensor``; any other tensor as it is. A reduction of the
    ``DTensor`` itself would run collectives of its own, one for each."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def count_skipped_step(hub: MessageHub) -> int:
    """Add one to the run's count of skipped updates in the message hub; return the count."""
    skipped = hub.log_scalars.get(SKIPPED_STEPS_KEY)
    count = 1 if skipped is None else int(skipped.current()) + 1
    hub.update_scalar(SKIPPED_STEPS_KEY, count)
    return count


def history_lengths(hub: MessageHub) -> dict:
    """How many values each training history holds, to tell later which ones a step added."""
    return {key: len(history.data[0]) for key, history in hub.log_scalars.items()
            if key.startswith('train/')}


def drop_skipped_nonfinite_logs(log_scalars: dict, lengths_before: dict) -> None:
    """Remove the non-finite values that the skipped step added to the training history
    ``log_scalars`` (its ``loss``, ``loss_*``, which mmengine's ``RuntimeInfoHook`` adds after
    the step); values added by earlier steps, an fp16 overflow's ``grad_norm: inf`` say, stay.

    Called on the message hub at the next step, before that step's values arrive; a log line
    of the skipped iteration itself still shows them, under the warning that names the skip."""
    for key, history in list(log_scalars.items()):
        values, counts = history.data
        added = len(values) - lengths_before.get(key, 0)
        if key.startswith('train/') and added == 1 and not np.isfinite(values[-1]):
            log_scalars[key] = HistoryBuffer(values[:-1], counts[:-1], history.max_length)


def each_optim_wrapper(optim_wrapper) -> list:
    """The wrappers of ``optim_wrapper``: itself, or the values of an ``OptimWrapperDict``."""
    if isinstance(optim_wrapper, OptimWrapperDict):
        return list(optim_wrapper.values())
    return [optim_wrapper]


def training_precision(optim_wrapper) -> str:
    """How ``optim_wrapper`` trains, in words: ``'float32'``, ``'bfloat16 autocast'``, or
    ``'float16 autocast with loss scaling'`` (mmengine's ``AmpOptimWrapper`` autocasts in
    float16 unless it names a dtype). ``CheckpointMetaHook`` records it in checkpoints and
    names a resume that trains in another one."""
    descriptions = []
    for wrapper in each_optim_wrapper(optim_wrapper):
        scaled = hasattr(wrapper, 'loss_scaler')
        cast = getattr(wrapper, 'cast_dtype', None) or (torch.float16 if scaled else None)
        description = 'float32' if cast is None else f'{str(cast).split(".")[-1]} autocast'
        descriptions.append(description + (' with loss scaling' if scaled else ''))
    return ', '.join(dict.fromkeys(descriptions))


def drop_skipped_logs(optim_wrapper, log_scalars: dict) -> None:
    """``drop_skipped_step_logs`` of each guarded wrapper in ``optim_wrapper`` (one, or an
    ``OptimWrapperDict``); other wrappers keep no such record."""
    for wrapper in each_optim_wrapper(optim_wrapper):
        if isinstance(wrapper, NonFiniteGuardMixin):
            wrapper.drop_skipped_step_logs(log_scalars)


@OPTIM_WRAPPERS.register_module()
class GuardedOptimWrapper(NonFiniteGuardMixin, OptimWrapper):
    """mmengine's ``OptimWrapper`` with the non-finite loss guard."""


@OPTIM_WRAPPERS.register_module()
class GuardedAmpOptimWrapper(NonFiniteGuardMixin, AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper`` (CUDA fp16/bf16 with loss scaling) with the guard."""

    guards_gradients = False  # its GradScaler skips updates with non-finite gradients


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
        """The torch dtype to autocast in. A name torch lacks (``'fp16'``) would be an
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


def mixed_precision_of(wrapper_type) -> Optional[str]:
    """``'loss_scaling'`` when ``optim_wrapper.type`` is mmengine's ``AmpOptimWrapper`` or a
    subclass (CUDA only), ``'autocast'`` for :class:`AutocastOptimWrapper`, else None. The type
    is a class (new-style configs) or a registered name in any scope (``'AmpOptimWrapper'``,
    ``'mmengine.AmpOptimWrapper'``, ``'fastmim.GuardedAmpOptimWrapper'``); what wraps the AMP
    class is known by the class, so a wrapper of a user's that subclasses it counts too."""
    wrapper_class = wrapper_type
    if isinstance(wrapper_type, str):
        # fastmim's or mmengine's (mmdet and mmseg add none), read from the registries' tables:
        # Registry.get logs, and logging makes a logger where there is none yet.
        name = type_name(wrapper_type)
        wrapper_class = (OPTIM_WRAPPERS.module_dict.get(name)
                         or OPTIM_WRAPPERS.parent.module_dict.get(name))
    if not isinstance(wrapper_class, type):
        return None
    if issubclass(wrapper_class, AmpOptimWrapper):
        return 'loss_scaling'
    return 'autocast' if issubclass(wrapper_class, AutocastOptimWrapper) else None
