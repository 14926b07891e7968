"""Gradient-accumulation windows that start at epoch starts.

mmengine's ``OptimWrapper`` counts its windows over the whole run (``initialize_count_status``
with the run's first and last iteration): with an epoch length that ``accumulative_counts``
does not divide, windows straddle epochs, so an epoch checkpoint can fall inside one, whose
gradients no checkpoint holds. Starting a window at every epoch start puts every epoch end on a
window boundary. mmengine's wrapper has no public setter for these counts.
"""
import logging

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


def warn_if_resumed_inside_a_window(epoch: int, done: int, accumulative_counts: int) -> None:
    """Say that the update of the window a resume lands in uses part of it: the gradients of
    its first iterations were in no checkpoint."""
    if done % accumulative_counts:
        print_log(
            f'resuming epoch {epoch + 1} after {done} iterations, inside a window of '
            f'{accumulative_counts} accumulated iterations: the gradients of its first '
            f'{done % accumulative_counts} are in no checkpoint, so its update uses the rest '
            'only; checkpoints saved at epoch ends, by PreemptionHook, or every N iterations '
            f'with N and the epoch length multiples of {accumulative_counts} resume at a '
            'window boundary', logger='current', level=logging.WARNING)


def iter_based_schedulers(runner):
    """The runner's parameter schedulers that step per iteration (one list for an
    ``OptimWrapperDict``'s groups too): those that count updates differently from iterations
    once gradients accumulate."""
    schedulers = runner.param_schedulers or []
    if isinstance(schedulers, dict):
        schedulers = [s for group in schedulers.values() for s in group]
    return [scheduler for scheduler in schedulers if not scheduler.by_epoch]


class DropGlobalWindowWarning(logging.Filter):
    """Drops mmengine's :data:`GLOBAL_WINDOW_WARNING`, which is wrong for a loop that starts a
    window at every epoch start."""

    def filter(self, record):
        return not str(record.getMessage()).startswith(GLOBAL_WINDOW_WARNING)
