"""Gradient-accumulation windows that start at epoch starts.

mmengine's ``OptimWrapper`` counts its windows over the whole run (``initialize_count_status``
with the run's first and last iteration): with an epoch length that ``accumulative_counts``
does not divide, windows straddle epochs, so an epoch checkpoint can fall inside one, whose
gradients no checkpoint holds. Starting a window at every epoch start puts every epoch end on a
window boundary. mmengine's wrapper has no public setter for these counts.
"""
import itertools
import logging
import math
from typing import List, NamedTuple, Optional, Tuple

from mmengine.logging import print_log

from fastmim.engine.optim_wrappers import each_optim_wrapper

# mmengine's warning when a run resumes at an iteration its global windows would cut; with
# windows per epoch the loop checks the position inside its epoch instead.
GLOBAL_WINDOW_WARNING = 'Resumed iteration number is not divisible by `_accumulative_counts`'


def start_accumulation_windows(optim_wrapper, accumulative_counts: int, iterations=None,
                               done: int = 0) -> None:
    """Make accumulation windows of ``accumulative_counts`` iterations start now.

    ``done``: iterations of the epoch that ran before (a run resumed inside the epoch); the
    windows stay where the uninterrupted run had them.

    ``iterations=None``: no end (``_max_counts = -1``): an update happens after every
    ``accumulative_counts`` iterations and each loss is divided by ``accumulative_counts``;
    the gradients of a partial window at the end are dropped at the next call (what
    :class:`ProgressiveResolutionHook` does per epoch).

    ``iterations=N`` (an epoch's length): the windows end at iteration N, so the last one is
    ``N % accumulative_counts`` iterations long when that is not 0, its losses divided by its
    length, and its update made after iteration N, as mmengine does for the last window of a
    run.

    Gradients held now (a partial window) are dropped.
    """
    optim_wrapper.zero_grad()
    for wrapper in each_optim_wrapper(optim_wrapper):
        wrapper._accumulative_counts = accumulative_counts
        wrapper._inner_count = done
        wrapper._max_counts = -1 if iterations is None else iterations
        wrapper._remainder_counts = (-1 if iterations is None else
                                     iterations % accumulative_counts)


def gradients_wait_for_an_update(optim_wrapper) -> bool:
    """Whether gradients accumulated since the last optimiser update go into a later one: a
    checkpoint, which holds no gradients, would lose them. For the end of an epoch (and a
    validation inside training): windows without an end (``iterations=None``) leave their
    partial window there to be dropped at the next epoch start, so none waits; windows that end
    with the epoch have just updated; mmengine's run-long windows may straddle it."""
    return any(not wrapper.should_update() and wrapper._max_counts != -1
               for wrapper in each_optim_wrapper(optim_wrapper))


def warn_if_resumed_inside_a_window(epoch: Optional[int], done: int,
                                    accumulative_counts: int) -> None:
    """Say that the update of the window a resume lands in uses part of it: the gradients of
    its first iterations were in no checkpoint. ``epoch``: the epoch resumed, ``done`` counting
    its iterations (windows start with each epoch); None for an iteration-based loop, whose
    windows run from its first iteration and ``done`` counts all."""
    if done % accumulative_counts:
        if epoch is None:
            where = f'resuming at iteration {done}'
            boundaries = ('by PreemptionHook, or every N iterations with N a multiple of '
                          f'{accumulative_counts}')
        else:
            where = f'resuming epoch {epoch + 1} after {done} iterations'
            boundaries = ('at epoch ends, by PreemptionHook, or every N iterations with N and '
                          f'the epoch length multiples of {accumulative_counts}')
        print_log(
            f'{where}, inside a window of {accumulative_counts} accumulated iterations: the '
            f'gradients of its first {done % accumulative_counts} are in no checkpoint, so its '
            f'update uses the rest only; checkpoints saved {boundaries} resume at a window '
            'boundary', logger='current', level=logging.WARNING)


def iter_based_schedulers(runner):
    """The runner's parameter schedulers that step per iteration (one list for an
    ``OptimWrapperDict``'s groups too): those that count updates differently from iterations
    once gradients accumulate."""
    schedulers = runner.param_schedulers or []
    if isinstance(schedulers, dict):
        schedulers = [s for group in schedulers.values() for s in group]
    return [scheduler for scheduler in schedulers if not scheduler.by_epoch]


class WindowSpan(NamedTuple):
    """A stretch of training that starts its accumulation windows anew: an epoch (windows per
    epoch), or the whole run (mmengine's windows). ``iterations`` long, windows of
    ``accumulative_counts`` iterations from its start; a last window shorter than that is
    updated at its end (``last_updated``: ``ResumableEpochBasedTrainLoop``, mmengine's run)
    or dropped (FastMIM-P's stages). ``setting``: the config key and value that give
    ``accumulative_counts``, for the warning."""
    iterations: int
    accumulative_counts: int
    last_updated: bool
    setting: str


def inside_a_window(position: int, span: WindowSpan) -> bool:
    """Whether a checkpoint after iteration ``position`` of ``span`` (counted from 1) falls
    inside a window: the gradients accumulated since the window began go into an update after
    it. Those of a last window that is dropped go into none, so nothing is lost there."""
    counts, length = span.accumulative_counts, span.iterations
    if position % counts == 0 or position == length:
        return False
    return span.last_updated or position <= length - length % counts


def first_checkpoint_inside_a_window(every: int, spans) -> Optional[Tuple[int, WindowSpan]]:
    """The first iteration (counted from 1) at which a checkpoint saved every ``every``
    iterations falls inside a window of ``spans`` (the run's, in order), with its span; or
    None. Consecutive equal spans (the epochs of one stage) repeat the pattern after the least
    common multiple of ``every`` and their length, so at most that many are looked at."""
    start = 0
    for span, group in itertools.groupby(spans):
        count = len(list(group))
        looked = (min(count, math.lcm(every, span.iterations) // span.iterations)
                  if span.iterations else 0)
        first = start + every - start % every
        for at in range(first, start + looked * span.iterations + 1, every):
            if inside_a_window((at - start - 1) % span.iterations + 1, span):
                return at, span
        start += count * span.iterations
    return None


def window_spans(runner) -> List[WindowSpan]:
    """The run's spans of accumulation windows (:class:`WindowSpan`): those of a hook that
    sets the accumulation per epoch (``ProgressiveResolutionHook.window_spans``), else one per
    epoch of ``ResumableEpochBasedTrainLoop`` (a window starts with every epoch), else one for
    the run (mmengine's loops)."""
    from fastmim.engine.loops import ResumableEpochBasedTrainLoop
    for hook in runner.hooks:
        if callable(getattr(hook, 'window_spans', None)):
            return hook.window_spans(runner)
    counts = max(getattr(wrapper, '_accumulative_counts', 1)
                 for wrapper in each_optim_wrapper(runner.optim_wrapper))
    setting = f'optim_wrapper.accumulative_counts={counts}'
    loop = runner.train_loop
    if isinstance(loop, ResumableEpochBasedTrainLoop):
        return [WindowSpan(len(loop.dataloader), counts, True, setting)] * loop.max_epochs
    return [WindowSpan(loop.max_iters, counts, True, setting)]


def warn_if_checkpoints_fall_inside_windows(runner) -> None:
    """Say, when training starts, that the checkpoint hook's interval saves checkpoints inside
    gradient-accumulation windows, naming both values and what to set: the gradients of such a
    window's first iterations are in no checkpoint, so a run resumed from one differs from the
    uninterrupted run (with ``accumulative_counts=2`` and a checkpoint every 3 iterations, by
    5e-3). Warned only at the resume before, when nothing could be done about it.

    Every window of the run counts (:func:`window_spans`), those of FastMIM-P's later stages
    too, which set their accumulation only when they start. ``ResumableEpochBasedTrainLoop``
    and those stages start a window with every epoch, so epoch checkpoints are at boundaries;
    with mmengine's loops the windows run over the whole run. ``PreemptionHook`` waits for a
    window's update, so its checkpoints are never inside one."""
    from mmengine.hooks import CheckpointHook
    from mmengine.runner import EpochBasedTrainLoop
    spans = window_spans(runner)
    if all(span.accumulative_counts <= 1 for span in spans):
        return
    loop = runner.train_loop
    epoch_length = len(loop.dataloader) if isinstance(loop, EpochBasedTrainLoop) else None
    for hook in runner.hooks:
        if isinstance(hook, CheckpointHook) and hook.interval > 0:
            _warn_if_inside_windows(hook, spans, loop.max_epochs, epoch_length)


def _warn_if_inside_windows(hook, spans, max_epochs, epoch_length) -> None:
    """:func:`warn_if_checkpoints_fall_inside_windows` for one checkpoint hook. Epoch
    checkpoints are at window boundaries when every epoch ends a span (windows per epoch, or a
    single epoch)."""
    if hook.by_epoch and len(spans) == max_epochs:
        return
    every = hook.interval * epoch_length if hook.by_epoch else hook.interval
    found = first_checkpoint_inside_a_window(every, spans)
    if found is None:
        return
    at, span = found
    counts, length = span.accumulative_counts, span.iterations
    unit = 'epochs' if hook.by_epoch else 'iterations'
    if hook.by_epoch:
        fix = (f"train_cfg.type='fastmim.ResumableEpochBasedTrainLoop' (a window starts with "
               f"every epoch), or an epoch length ({epoch_length} iterations) that "
               f"{counts} divides")
    elif len(set(spans)) > 1:  # FastMIM-P's stages, each with its epochs and windows
        fix = 'default_hooks.checkpoint.by_epoch=True (every epoch starts its windows)'
    elif len(spans) > 1 and length % counts:
        fix = (f'default_hooks.checkpoint.interval to a multiple of the epoch length '
               f'({length} iterations, which {counts} does not divide), or '
               f'default_hooks.checkpoint.by_epoch=True')
    else:
        fix = f'default_hooks.checkpoint.interval to a multiple of {counts}'
    print_log(
        f'default_hooks.checkpoint saves every {hook.interval} {unit}, inside windows of '
        f'{span.setting} accumulated iterations (first at iteration {at}): the gradients of '
        f'a window\'s first iterations are in no checkpoint, so a run resumed from such a '
        f'checkpoint differs from the uninterrupted one; set {fix}',
        logger='current', level=logging.WARNING)


class DropGlobalWindowWarning(logging.Filter):
    """Drops mmengine's :data:`GLOBAL_WINDOW_WARNING`, which is wrong for a loop that starts a
    window at every epoch start."""

    def filter(self, record):
        return not str(record.getMessage()).startswith(GLOBAL_WINDOW_WARNING)
