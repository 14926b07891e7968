"""Train loops whose runs resume exactly, from any checkpoint.

mmengine's ``EpochBasedTrainLoop`` restores the epoch and iteration counters of a checkpoint
but not the randomness, and a checkpoint saved inside an epoch makes it rerun that epoch from
its first batch. Two rules make a resumed run repeat the uninterrupted one bit for bit:

- **Every iteration draws from generators seeded for that iteration.** Before each iteration
  Python's, numpy's and torch's generators (CPU and every CUDA device) are seeded from
  (seed, rank, iteration). What the training process draws (masks on the device, drop path)
  then depends on nothing that happened before, such as the draws the DataLoader, a rebuilt
  loader or the model's initialisation made in a fresh process. Restoring saved generator
  states could not give that: those extra draws happen at other moments in a resumed process.
  Data augmentation is seeded per sample by :class:`~fastmim.datasets.ResumableSampler`.
- **Every epoch checkpoint is at a gradient-accumulation boundary.** With
  ``optim_wrapper.accumulative_counts > 1`` a window starts at every epoch start; an epoch whose
  length the accumulation does not divide ends with a shorter window, updated at the epoch's
  end (mmengine counts windows over the whole run, so they straddled epochs and an epoch
  checkpoint could fall inside one, whose gradients no checkpoint holds).
- **A checkpoint knows how far into its epoch it was written.** The loop records
  ``(epoch, batches done)`` in the message hub (saved in every checkpoint and restored by
  ``--resume``); a resumed epoch asks the sampler to skip the batches already seen and numbers
  its batches from there. It also records the images per iteration (batch size x processes), so
  a run resumed with another batch size or number of processes skips the images already seen,
  not the same number of its own batches. A checkpoint of an epoch's last iteration precedes
  the epoch's end: the resumed run replays it (the end-of-epoch hooks), less a validation the
  work dir records as finished.

The iteration-based loop of the downstream configs (:class:`ResumableIterBasedTrainLoop`) seeds
its iterations the same way and skips the samples trained before a resume in the sampler,
instead of loading them as mmengine's ``IterBasedTrainLoop`` does. It records how many
positions of the job's sample stream the run has trained (batch size x processes, summed over
its iterations), so a run resumed with another batch size or number of processes goes on at
the first sample not trained yet.
"""
import logging
import math
import random
from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from mmengine.runner.base_loop import BaseLoop
from mmengine.runner.loops import _InfiniteDataloaderIterator
from mmengine.runner.utils import calc_dynamic_intervals

from fastmim.datasets.sample_seeds import iteration_seed
from fastmim.engine.accumulation import (DropGlobalWindowWarning, iter_based_schedulers,
                                        start_accumulation_windows,
                                        warn_if_resumed_inside_a_window)
from fastmim.engine.schedule_length import one_step_warmups
from fastmim.engine.validation_record import LAST_VALIDATION_FILE, validation_finished
from fastmim.registry import LOOPS

PROGRESS_KEY = 'train_epoch_progress'
# Message hub entry of ResumableIterBasedTrainLoop: a StreamProgress, as a list.
STREAM_KEY = 'train_stream_progress'
# Message hub entry of the training sampler's seed, for a resumed run's sampler.
SAMPLER_SEED_KEY = 'train_sampler_seed'


class Progress(NamedTuple):
    """What the loop records after every iteration (as a list, in the message hub)."""
    epoch: int
    batches: int  # done in this epoch
    images_per_iteration: Optional[int] = None  # over all processes; None: a batch_sampler
    dataset_size: Optional[int] = None
    images_per_update: Optional[int] = None  # with gradient accumulation
    processes: Optional[int] = None


class StreamProgress(NamedTuple):
    """What the iteration-based loop records after every iteration (as a list, in the message
    hub): the stream positions trained, over all processes and every run resumed on the way,
    and how many the last iteration took."""
    positions: int
    images_per_iteration: int


def seed_iteration(seed: int, rank: int, iteration: int) -> None:
    """Seed every global generator of this process for ``iteration``."""
    value = iteration_seed(seed, rank, iteration)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)  # the CPU and every CUDA device


def shuffle_as_the_interrupted_run(runner, sampler) -> None:
    """Give a resumed run's ``sampler`` the seed the interrupted run's had, which the message
    hub (saved in every checkpoint) records. mmengine builds the sampler before ``--resume``,
    with a seed from this process's start: with ``randomness.seed=None`` (a new seed at every
    start), or with ``diff_rank_seed`` (the sampler then draws its own), the resumed run
    shuffled and augmented the rest of its data otherwise than the interrupted run."""
    seed = getattr(sampler, 'seed', None)
    if seed is None:
        return
    recorded = runner.message_hub.get_info(SAMPLER_SEED_KEY)
    if recorded is not None and recorded != seed:
        print_log(f'the run goes on with the seeds of the run it resumes: {runner.seed}, and '
                  f'{recorded} for its sampler (built with {seed}); the seed the environment '
                  'lines above name is the one this start drew', logger='current')
        sampler.seed = recorded
    runner.message_hub.update_info(SAMPLER_SEED_KEY, sampler.seed)


def seed_runner_iteration(runner, iteration: int) -> None:
    """:func:`seed_iteration` for this process of ``runner``: its rank counts only with
    ``randomness.diff_rank_seed``."""
    diff_rank_seed = runner._randomness_cfg.get('diff_rank_seed', False)
    seed_iteration(runner.seed, get_rank() if diff_rank_seed else 0, iteration)


def warn_one_step_warmups(runner) -> None:
    """Log :func:`~fastmim.engine.schedule_length.one_step_warmups` of the built schedulers:
    the schedulers exist (with their lengths in iterations) only once training starts."""
    for problem in one_step_warmups(runner.param_schedulers):
        print_log(problem, logger='current', level=logging.WARNING)


def _check_batches_per_epoch(dataloader) -> None:
    """An epoch of no batch trains nothing, and mmengine then stops building the schedulers
    with an assertion about ``epoch_length``; named here in terms of the config instead. The
    loop is built before the schedulers, so this comes first."""
    if len(dataloader) > 0:
        return
    size = len(dataloader.dataset)
    raise ValueError(
        f'train_dataloader gives no batch per epoch: the dataset has {size} images, '
        f'{math.ceil(size / get_world_size())} per process on {get_world_size()} process(es), '
        f'fewer than train_dataloader.batch_size={dataloader.batch_size} with '
        f'drop_last={dataloader.drop_last}; '
        'lower the batch size or add images')


def inside_epoch_resume_problem(loop) -> Optional[str]:
    """Why ``loop`` would not resume exactly from a checkpoint saved inside an epoch (a
    preemption's, or one every N iterations), or None. Iteration-based loops skip the batches
    trained before (mmengine's by loading them again)."""
    if not isinstance(loop, EpochBasedTrainLoop):
        return None
    if not isinstance(loop, ResumableEpochBasedTrainLoop):
        return (f"train_cfg.type is mmengine's {type(loop).__name__}, which resumes a "
                "checkpoint saved inside an epoch from the epoch's first batch: the batches "
                'before it are trained twice and the schedule ends early; use '
                "train_cfg.type='ResumableEpochBasedTrainLoop'")
    sampler = loop.dataloader.sampler
    if not hasattr(sampler, 'set_start_index') or loop.dataloader.batch_size is None:
        return (f'train_dataloader.sampler is a {type(sampler).__name__}, which cannot start '
                'inside an epoch: --resume refuses a checkpoint saved inside one; use '
                "sampler=dict(type='ResumableSampler') and batch_size (no batch_sampler)")
    return None


def images_per_iteration(dataloader) -> Optional[int]:
    """Images (stream positions) one iteration of ``dataloader`` takes over all processes;
    None with a ``batch_sampler``, whose batches the loops cannot count."""
    batch_size = dataloader.batch_size
    return None if batch_size is None else batch_size * get_world_size()


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` that resumes exactly (see the module docstring).

    Needs ``train_dataloader.sampler=dict(type='ResumableSampler')`` to resume from a checkpoint
    saved inside an epoch (``CheckpointHook(by_epoch=False)``, or a preemption checkpoint).
    """

    def __init__(self, runner, dataloader, **kwargs):
        # The config check (fastmim.engine.config_keys) follows these **kwargs to mmengine's
        # __init__: a misspelt train_cfg key is still refused at load time.
        super().__init__(runner, dataloader, **kwargs)
        _check_batches_per_epoch(self.dataloader)
        self._checked_iterations = False
        self._resumed_at_epoch_end = False  # the epoch running had ended before the resume
        # mmengine's warning about a resume inside its run-long windows (logged by
        # Runner.train before the loop runs): here windows start per epoch, checked below.
        runner.logger.addFilter(DropGlobalWindowWarning())

    def run(self):
        """mmengine's ``EpochBasedTrainLoop.run``, less a validation that the run resumed
        from had finished (:meth:`_validated_before_resume`)."""
        warn_one_step_warmups(self.runner)
        shuffle_as_the_interrupted_run(self.runner, self.dataloader.sampler)
        self._count_iterations_left()
        self._log_where_resumed()
        self.runner.call_hook('before_train')
        while self._epoch < self._max_epochs and not self.stop_training:
            self.run_epoch()
            self._decide_current_val_interval()
            if self._validation_due() and not self._validated_before_resume():
                self.runner.val_loop.run()
        self.runner.call_hook('after_train')
        return self.runner.model

    def _log_where_resumed(self) -> None:
        """Say in the log's own count where a resumed run goes on: mmengine's line ``resumed
        epoch: 1, iter: 6`` counts the epochs completed, where the training lines count from 1
        (``Epoch(train) [2][3/4]``), so it read as a run sent back one epoch."""
        if not self._iter or self._epoch >= self._max_epochs:
            return
        done, length = self.batches_done_in_epoch(warn=False), len(self.dataloader)
        where = (f'epoch {self._epoch + 2}, epoch {self._epoch + 1} having ended'
                 if done >= length else
                 f'epoch {self._epoch + 1} after {done} of its {length} iterations' if done
                 else f'epoch {self._epoch + 1} from its start')
        print_log(f'resumed after iteration {self._iter}: training goes on in {where}',
                  logger='current')

    def _validation_due(self) -> bool:
        """mmengine's rule: after ``val_begin``, every ``val_interval`` epochs and the last."""
        return (self.runner.val_loop is not None and self._epoch >= self.val_begin
                and (self._epoch % self.val_interval == 0 or self._epoch == self._max_epochs))

    def _validated_before_resume(self) -> bool:
        """Whether the epoch just ended had ended before the checkpoint this run resumed from
        (one written at its last iteration, before its end-of-epoch hooks: every N
        iterations, or a preemption's), and the work dir records its validation as finished.
        The resumed run replays that epoch's end for its hooks (a by-epoch scheduler steps
        there), but repeated the validation, an ImageNet one on every requeue of a finished
        fine-tuning."""
        if not (self._resumed_at_epoch_end
                and validation_finished(self.runner.work_dir, self._iter)):
            return False
        print_log(f'the validation after iteration {self._iter} (epoch {self._epoch}) finished '
                  f'before the run this one resumes stopped ({LAST_VALIDATION_FILE} of the work '
                  'dir): not repeated', logger='current')
        return True

    def _count_iterations_left(self) -> None:
        """Make ``max_iters`` the iteration this run will end at. mmengine's is max_epochs x
        the loader's length, but a run resumed with another batch size or number of
        processes counts on from the checkpoint's iteration: ETAs and "last iteration" checks
        then read a count the run never reaches or passes. Set before the ``before_train``
        hooks (RuntimeInfoHook records it; ProgressiveResolutionHook recounts per stage)."""
        done = self.batches_done_in_epoch(warn=False)
        self._max_iters = (self._iter - done
                           + (self._max_epochs - self._epoch) * len(self.dataloader))

    def run_epoch(self) -> None:
        self._start_accumulation_windows()
        self.runner.call_hook('before_train_epoch')  # may set the sampler's epoch, a new loader
        self.runner.model.train()
        if not self._checked_iterations:  # the first epoch of this run, with its loader
            changed = self._update_change()
            if changed is not None:
                self._warn_if_update_changed(*changed)
                self._warn_if_iterations_changed(*changed)
            self._checked_iterations = True
        done = self.batches_done_in_epoch()
        self._resumed_at_epoch_end = done >= len(self.dataloader)
        self._skip_batches(done)
        for idx, data_batch in enumerate(self.dataloader, start=done):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1

    def run_iter(self, idx, data_batch) -> None:
        self.runner.message_hub.update_info(PROGRESS_KEY, list(Progress(
            self._epoch, idx + 1, images_per_iteration(self.dataloader),
            len(self.dataloader.dataset), self._images_per_update(), get_world_size())))
        seed_runner_iteration(self.runner, self._iter)
        super().run_iter(idx, data_batch)

    def _start_accumulation_windows(self) -> None:
        """Start a gradient-accumulation window with the epoch, the epoch's last window ending
        with it (see the module docstring). Before the ``before_train_epoch`` hooks: a hook
        that sets the accumulation per epoch (``ProgressiveResolutionHook``, which drops an
        epoch's last partial window instead) starts its own windows after this."""
        counts = self._accumulation()
        if counts <= 1:
            return
        done = self.batches_done_in_epoch(warn=False)
        start_accumulation_windows(self.runner.optim_wrapper, counts, len(self.dataloader), done)
        warn_if_resumed_inside_a_window(self._epoch, done, counts)

    def batches_done_in_epoch(self, warn: bool = True) -> int:
        """Batches of the current epoch that ran before the checkpoint this run resumed from
        (0 unless the run resumed from a checkpoint saved inside this epoch); ``warn``: log
        what a resume inside the epoch cannot keep (a changed dataset, a batch seen twice)."""
        progress = self._recorded_progress()
        if progress is None or progress.epoch != self._epoch:
            return 0
        before, batches = progress.images_per_iteration, progress.batches
        if None not in (before, progress.dataset_size) and batches and warn:
            self._warn_if_dataset_changed(min(batches * before, progress.dataset_size),
                                          progress.dataset_size)
        now = images_per_iteration(self.dataloader)
        if None in (before, now):
            return batches  # a batch_sampler: refused inside an epoch (_skip_batches)
        if self.completes_its_epoch(progress):  # its end-of-epoch hooks follow
            return len(self.dataloader)
        if before == now:
            return batches
        return self._batches_for(batches * before, before, now, warn)

    def completes_its_epoch(self, recorded) -> bool:
        """Whether ``recorded``, the :class:`Progress` a checkpoint's message hub holds (as a
        list, or None), has done every batch of its epoch in this run's terms (a dataset
        shrunk since, another batch size: by the images seen): a checkpoint written at an
        epoch's last iteration, before the epoch's end-of-epoch hooks, which still counts that
        epoch as not done (``meta['epoch']``)."""
        if recorded is None:
            return False
        progress = Progress(*recorded)
        before, now = progress.images_per_iteration, images_per_iteration(self.dataloader)
        if None in (before, now) or before == now:
            return progress.batches >= len(self.dataloader)
        return progress.batches * before >= self._images_per_epoch()

    def _recorded_progress(self):
        """The :class:`Progress` of the checkpoint resumed from (None before any iteration);
        checkpoints of older versions record only the epoch and the batches."""
        progress = self.runner.message_hub.get_info(PROGRESS_KEY)
        return None if progress is None else Progress(*progress)

    def _warn_if_dataset_changed(self, seen: int, size: int) -> None:
        """The sampler shuffles an epoch by ``seed + epoch`` over the dataset's size: with
        images added or removed since the checkpoint the order is another, and skipping the
        images seen before no longer skips those images."""
        now = len(self.dataloader.dataset)
        if now != size:
            print_log(
                f'resuming epoch {self._epoch + 1} after {seen} images of a dataset of {size}, '
                f'now of {now}: the epoch is shuffled anew over {now} images, so the resumed '
                f'part of it may leave out some images and repeat some of the {seen} already '
                'seen; resume from the checkpoint of the end of an epoch to avoid this',
                logger='current', level=logging.WARNING)

    def _update_change(self) -> Optional[Tuple[Progress, int]]:
        """The checkpoint's :class:`Progress` and this run's images per optimiser update, when
        both runs record one and they differ (None otherwise): what the two warnings below
        compare, read once for both."""
        progress = self._recorded_progress()
        before = None if progress is None else progress.images_per_update
        now = self._images_per_update()
        if None in (before, now) or before == now:
            return None
        return progress, now

    def _warn_if_update_changed(self, progress: Progress, now: int) -> None:
        """mmengine restores the optimiser's lr from the checkpoint, and ``auto_scale_lr``
        scales only the config's lr, which the resume then replaces: a job requeued on another
        number of nodes (or with another batch size) trains on at the checkpoint's lr with
        another number of images per update, and nothing says so. Said once, with both runs'
        batch x processes x accumulation and the settings that give the checkpoint's batch.
        ``progress`` and ``now``: as :meth:`_update_change` gives them."""
        before = progress.images_per_update
        batch, processes, accumulation = (self.dataloader.batch_size, get_world_size(),
                                          self._accumulation())
        saved = f'{before}'
        if progress.processes:
            saved += (f' ({progress.images_per_iteration // progress.processes} x '
                      f'{progress.processes} processes x '
                      f'{before // progress.images_per_iteration})')
        remedies = [template.format(before // (now // value))
                    for template, value in (('resume with {} processes', processes),
                                            ('set train_dataloader.batch_size={}', batch),
                                            ('optim_wrapper.accumulative_counts={}',
                                             accumulation))
                    if before % (now // value) == 0]
        print_log(
            f'resuming with {now} images per optimiser update (train_dataloader.batch_size='
            f'{batch} x {processes} processes x {accumulation} accumulated); the checkpoint was '
            f"written at {saved}: the lr stays the checkpoint's (auto_scale_lr does not rescale "
            f'a resumed run), so each update averages {now} images instead of {before} at the '
            f"same lr. To train on as the checkpoint's run did, "
            f'{", or ".join(remedies) or "match its batch x processes x accumulation"}',
            logger='current', level=logging.WARNING)

    def _warn_if_iterations_changed(self, progress: Progress, now: int) -> None:
        """mmengine restores a scheduler's ``begin``, ``end`` and ``T_max`` from the checkpoint,
        so a schedule counted in iterations keeps the counts of the checkpoint's run; with
        another batch size or number of processes an epoch has another number of iterations,
        and the schedule silently ends at another epoch (the lr jumps or stalls). Compared per
        optimiser update: FastMIM-P stages change the batch and the accumulation, not their
        product. ``progress`` and ``now``: as :meth:`_update_change` gives them."""
        if not iter_based_schedulers(self.runner):
            return
        before = progress.images_per_update
        print_log(
            f'train_dataloader gives {len(self.dataloader)} iterations per epoch at {now} images '
            f'per update (train_dataloader.batch_size={self.dataloader.batch_size} x '
            f'{get_world_size()} processes x {self._accumulation()} accumulated); the '
            f'checkpoint was written at {before}: '
            'param_scheduler entries counted in iterations (by_epoch=False, '
            "convert_to_iter_based) keep the checkpoint's counts, so they end at another epoch "
            'than the config says', logger='current', level=logging.WARNING)

    def _images_per_epoch(self) -> int:
        """Images an epoch of this run trains over all processes: its batches' images, or the
        sampler's share of the dataset when the last batch is partial (``drop_last=False``)."""
        return min(len(self.dataloader) * images_per_iteration(self.dataloader),
                   len(self.dataloader.sampler) * get_world_size())

    def _accumulation(self) -> int:
        return getattr(self.runner.optim_wrapper, '_accumulative_counts', 1)

    def _images_per_update(self):
        """Images one optimiser update takes over all processes (None with a
        ``batch_sampler``)."""
        per_iteration = images_per_iteration(self.dataloader)
        return None if per_iteration is None else per_iteration * self._accumulation()

    def _batches_for(self, images: int, before: int, now: int, warn: bool) -> int:
        """This run's batches that cover the ``images`` of this epoch the checkpoint's run saw
        at ``before`` images per iteration. A batch that only partly covers them is repeated
        (its images seen twice) rather than skipped (its other images never seen)."""
        batches = images // now
        if images % now and warn:
            print_log(
                f'resuming epoch {self._epoch + 1} after {images} images, seen at {before} images '
                f'per iteration (train_dataloader.batch_size x processes); this run takes {now} '
                f'({self.dataloader.batch_size} x {get_world_size()}), so it starts after '
                f'{batches * now} images and {images - batches * now} are seen twice',
                logger='current', level=logging.WARNING)
        return batches

    def _skip_batches(self, batches: int) -> None:
        """Start the sampler after ``batches`` batches of the epoch; at most at its end: an
        epoch's last batch is partial with ``drop_last=False``, so all its batches hold fewer
        than ``batches x batch_size`` indices (a checkpoint at the epoch's last iteration)."""
        sampler, batch_size = self.dataloader.sampler, self.dataloader.batch_size
        if hasattr(sampler, 'set_start_index') and batch_size is not None:
            sampler.set_start_index(min(batches * batch_size, len(sampler)))
        elif batches:
            raise ValueError(
                f'the checkpoint was saved after {batches} batches of epoch {self._epoch + 1}; '
                "to resume inside an epoch set train_dataloader.sampler=dict(type="
                "'ResumableSampler') and train_dataloader.batch_size (no batch_sampler), got a "
                f'{type(sampler).__name__}')


class _SkippedBatches:
    """The loop's endless batch iterator, whose first ``count`` batches are ``None`` without
    being loaded: what mmengine's ``IterBasedTrainLoop.run`` draws to skip the batches trained
    before a resume, after the sampler was told to start behind them."""

    def __init__(self, iterator, count: int):
        self.iterator, self.count = iterator, count

    def __iter__(self):
        return self

    def __next__(self):
        if self.count:
            self.count -= 1
            return None
        return next(self.iterator)


ADVANCE_WARNING = 'Advance dataloader '


class DropAdvanceWarning(logging.Filter):
    """Drops mmengine's "Advance dataloader N steps to skip data that has already been
    trained": the steps it draws are :class:`_SkippedBatches`' ``None``, nothing is loaded or
    skipped by them (the sampler starts behind the trained samples), and the line would read
    as a second skip after the loop's own."""

    def filter(self, record):
        return not str(record.getMessage()).startswith(ADVANCE_WARNING)


class _IteratorAtFirstBatch:
    """mmengine's endless iterator over ``dataloader``, created when the first batch is drawn.

    Creating it starts the DataLoader's workers (once for the whole run with
    ``persistent_workers``: the DataLoader keeps that iterator and reuses its workers)."""

    def __init__(self, dataloader):
        self.dataloader = dataloader
        self.iterator = None

    def __iter__(self):
        return self

    def __next__(self):
        if self.iterator is None:
            self.iterator = _InfiniteDataloaderIterator(self.dataloader)
        return next(self.iterator)


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` that resumes at once, and exactly, and starts its DataLoader
    workers after the ``before_train`` and ``before_train_epoch`` hooks.

    mmengine's loop skips the batches trained before a resume by loading and discarding each
    of them: resuming a 160k-iteration segmentation run at iteration 120k re-reads 120k batches
    first (mmengine issues #1520, #1633). With ``train_dataloader.sampler=dict(type=
    'ResumableInfiniteSampler')`` the sampler starts behind them instead, so nothing is loaded
    twice and the data order is mmengine's. Each iteration is seeded from (seed, rank,
    iteration) as in :class:`ResumableEpochBasedTrainLoop`, and the sampler's per-sample seeds
    make a dataset with ``SeededSamples`` augment as the uninterrupted run did: the run repeats
    it bit for bit. The checkpoint records the stream positions trained (:class:`StreamProgress`),
    so a run resumed with another batch size or number of processes starts at the first sample
    not trained, and warns that the iteration counts (``max_iters``, the schedule) stay the
    checkpoint's. With another sampler, or a ``batch_sampler``, it skips as mmengine does.

    mmengine's loop creates its batch iterator, and so starts the workers, in ``__init__``,
    before any hook has run: such workers would miss what hooks set up for them in
    ``before_train_epoch`` (``PreemptionHook`` makes them survive the SIGTERM SLURM sends to
    every process of a job: without it they die on it, and training stops with "DataLoader
    worker ... killed by signal: Terminated" instead of saving), and a resume that moves the
    sampler's start would need a second iterator. Here the iterator is created when the first batch is
    drawn, after those hooks.
    """

    def __init__(self, runner, dataloader, max_iters: int, val_begin: int = 1,
                 val_interval: int = 1000, dynamic_intervals=None):
        # IterBasedTrainLoop.__init__ less its batch iterator, not a call to it: creating that
        # iterator calls iter(dataloader), which starts the workers before any hook has run
        # (see above), and no later step undoes a start (with persistent_workers the DataLoader
        # keeps those workers for the run).
        BaseLoop.__init__(self, runner, dataloader)
        if int(max_iters) != max_iters:
            raise ValueError(f'train_cfg.max_iters must be an integer, got {max_iters!r}')
        self._max_iters = int(max_iters)
        self._max_epochs, self._epoch, self._iter = 1, 0, 0  # one epoch, as mmengine's loop
        self.val_begin, self.val_interval = val_begin, val_interval
        self.stop_training = False  # set by EarlyStoppingHook
        self.runner.visualizer.dataset_meta = getattr(self.dataloader.dataset, 'metainfo', None)
        self.dynamic_milestones, self.dynamic_intervals = calc_dynamic_intervals(
            val_interval, dynamic_intervals)
        self.dataloader_iterator = _IteratorAtFirstBatch(self.dataloader)

    def run(self):
        warn_one_step_warmups(self.runner)
        sampler = self.dataloader.sampler
        shuffle_as_the_interrupted_run(self.runner, sampler)
        self._positions_trained = self._recorded_positions()
        per_iteration = images_per_iteration(self.dataloader)
        if self._iter > 0 and per_iteration is not None:
            if hasattr(sampler, 'set_start_position'):
                self._start_sampler_behind_trained(sampler)
            elif self._positions_trained != self._iter * per_iteration:
                self._warn_mmengine_skips_batches()
        # mmengine's own warning says only that the result "may be influenced slightly".
        warn_if_resumed_inside_a_window(
            None, self._iter, getattr(self.runner.optim_wrapper, '_accumulative_counts', 1))
        return super().run()

    def run_iter(self, data_batch) -> None:
        per_iteration = images_per_iteration(self.dataloader)
        if per_iteration is not None:
            self._positions_trained += per_iteration
            self.runner.message_hub.update_info(STREAM_KEY, list(StreamProgress(
                self._positions_trained, per_iteration)))
        seed_runner_iteration(self.runner, self._iter)
        super().run_iter(data_batch)

    def _recorded_positions(self) -> int:
        """The stream positions trained before this run: those the checkpoint resumed from
        records; warns when this run takes another number per iteration. A checkpoint of an
        earlier fastmim records none: its run is taken to have had this run's batch size and
        processes, as those versions did."""
        now = images_per_iteration(self.dataloader)
        if self._iter == 0 or now is None:
            return 0
        recorded = self.runner.message_hub.get_info(STREAM_KEY)
        if recorded is None:
            print_log(
                f'resuming at iteration {self._iter} from a checkpoint that records no samples '
                'trained (written by an earlier fastmim): taking its run to have had this '
                f"run's {now} samples per iteration (train_dataloader.batch_size x processes), "
                f'so {self._iter * now} samples were trained', logger='current',
                level=logging.WARNING)
            return self._iter * now
        progress = StreamProgress(*recorded)
        if progress.images_per_iteration != now:
            self._warn_samples_per_iteration_changed(progress, now)
        return progress.positions

    def _warn_samples_per_iteration_changed(self, progress: StreamProgress, now: int) -> None:
        """mmengine restores ``max_iters`` and the schedulers' ``begin``, ``end`` and ``T_max``
        from the checkpoint: they stay counted in iterations, which now take another number of
        samples, so the rest of the run trains more or fewer samples than the config says. It
        restores the optimiser's lr too, which ``auto_scale_lr`` (scaling the config's) does not
        reach: each iteration averages another number of samples at the same lr."""
        left = max(self._max_iters - self._iter, 0)
        print_log(
            f'resuming at iteration {self._iter} after {progress.positions} samples, the last '
            f'trained at {progress.images_per_iteration} per iteration; this run takes {now} '
            f'(train_dataloader.batch_size={self.dataloader.batch_size} x {get_world_size()} '
            f'processes): it goes on at the first sample not trained yet, but train_cfg.'
            "max_iters and param_scheduler entries keep the checkpoint's iteration counts, so "
            f'the {left} iterations left train {left * now} samples instead of '
            f'{left * progress.images_per_iteration}, and the schedule ends after another '
            "number of samples than the config says; the lr stays the checkpoint's "
            '(auto_scale_lr does not rescale a resumed run), so each iteration averages '
            f'{now} samples instead of {progress.images_per_iteration} at the same lr',
            logger='current', level=logging.WARNING)

    def _start_sampler_behind_trained(self, sampler) -> None:
        """Start the sampler at the first stream position not trained yet, and make the
        batches mmengine's ``run`` draws to skip the trained ones load nothing."""
        sampler.set_start_position(self._positions_trained)
        self.dataloader_iterator = _SkippedBatches(self.dataloader_iterator, self._iter)
        self.runner.logger.addFilter(DropAdvanceWarning())
        print_log(f'resuming at iteration {self._iter}: the sampler starts at sample '
                  f'{self._positions_trained} of the stream, after those already trained; '
                  'none is loaded again', logger='current')

    def _warn_mmengine_skips_batches(self) -> None:
        """A sampler without ``set_start_position`` is skipped as mmengine does: this run's
        batches, as many as the checkpoint's iterations, which now hold other samples."""
        print_log(
            f'train_dataloader.sampler ({type(self.dataloader.sampler).__name__}) cannot '
            f'start inside the stream: the resumed run skips {self._iter} of its own iterations, '
            f'{self._iter * images_per_iteration(self.dataloader)} samples, but the '
            f"checkpoint's run trained {self._positions_trained}; use sampler=dict(type="
            "'fastmim.ResumableInfiniteSampler') to go on at the first sample not trained",
            logger='current', level=logging.WARNING)
