"""Save and stop when the cluster asks a job to leave (SLURM preemption, time limits).

SLURM sends SIGTERM to a job it preempts or cancels and kills it ``KillWait`` seconds later
(30 s by default); ``sbatch --signal=USR1@120`` sends SIGUSR1 two minutes before the time limit.
Python's default SIGTERM action kills the process on the spot, losing everything since the last
checkpoint. With this hook a signal only sets a flag; at the next iteration boundary every rank
agrees to stop, a checkpoint of that iteration is written (``iter_<n>.pth``, named in
``last_checkpoint`` so that ``--resume`` finds it) and training ends with
:class:`TrainingPreempted`, which ``tools/train.py`` turns into exit status
:data:`PREEMPTED_EXIT_STATUS`. Resuming from that checkpoint is exact (see
``ResumableEpochBasedTrainLoop``). Further signals are counted (and logged at the boundary), so
the save is not cut short by them (the write itself is atomic), and once it is saved they are
ignored until the process has exited with that status (a tool's process; training called from
Python gets the handlers from before the run back, :mod:`early_signals`). SLURM signals the
DataLoader workers too; they ignore the signal unless the training process sends it
(:class:`IgnoreSignalsThenInit`).

A signal during a validation inside training stops that validation at its next batch: a COCO or
ImageNet validation lasts minutes, far beyond SLURM's 30 s, so waiting for the next training
iteration meant death by SIGKILL (status 137, which a requeue script does not retry) and a
validation result never computed. The checkpoint of the training state the validation started
from is marked in the message hub; the resumed run validates it first, then trains on.

A run killed outright (SIGKILL: out of memory, a node failure, KillWait expiring) gets no
signal to act on. So every checkpoint saved at a position the train loop validates right after
(CheckpointHook's ``epoch_<e>.pth`` / ``iter_<n>.pth``, a preemption at such an iteration) is
marked the same way, and every validation inside training that finishes records the iteration
it validated in the work dir (:data:`LAST_VALIDATION_FILE`). A resumed run repeats the marked
validation unless the work dir records it as done: killed during it, the run validates that
position first, as the uninterrupted run did; killed later, it trains on.

``CheckpointHook``'s ``max_keep_ckpts`` knows only its own checkpoints: a job preempted 30 times
would keep 30 extra full checkpoints. A preemption checkpoint is only needed until a newer one exists,
so it is deleted when the next preemption checkpoint is written, or once a regular checkpoint
saved after it is the one ``last_checkpoint`` names (never the file ``last_checkpoint`` names).
The message hub, saved in every checkpoint, carries its path into the resumed run. A file that
a regular checkpoint of the same iteration had already written is not the hook's to delete.
"""
import bisect
import os
import os.path as osp
import signal
import threading

import torch
from mmengine.dist import all_reduce, barrier
from mmengine.fileio import get_file_backend
from mmengine.hooks import EMAHook, Hook
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from torch.utils.data import DataLoader

from fastmim.engine import early_signals
from fastmim.engine.accumulation import gradients_wait_for_an_update
from fastmim.engine.loops import inside_epoch_resume_problem
from fastmim.engine.validation_record import LAST_VALIDATION_FILE, validation_finished
from fastmim.registry import HOOKS

# Message hub entry naming the preemption checkpoint that is still to be deleted.
PREEMPTION_CHECKPOINT_KEY = 'preemption_checkpoint'

# Message hub entry of a checkpoint saved before or during a validation that had not finished
# then: the resumed run validates first, unless LAST_VALIDATION_FILE records it as done.
PENDING_VALIDATION_KEY = 'preempted_validation'

# sysexits.h's EX_TEMPFAIL, "temporary failure, the user is invited to retry": distinct from a
# crash (1) and from death by the signal itself (128 + 15 = 143).
PREEMPTED_EXIT_STATUS = 75


class TrainingPreempted(Exception):
    """Training stopped on a signal after saving a checkpoint; the message names it."""


class PreemptionSaveFailed(Exception):
    """Training stopped on a signal, but the checkpoint could not be written (a full disk, an
    unwritable work dir); the message says why and names the last good checkpoint. ``own``:
    whether the save failed in this process, which then reports it (the others only log it).
    Not a :class:`TrainingPreempted`: its status would tell a requeue script that the run
    was saved."""

    def __init__(self, message: str, own: bool = True):
        super().__init__(message)
        self.own = own


class IgnoreSignalsThenInit:
    """A DataLoader ``worker_init_fn``: the worker ignores ``signals`` unless its parent, the
    training process, sends them, then runs the loader's own ``init_fn`` (mmengine's seeding).

    The parent's SIGTERM must still end the worker: at exit, multiprocessing terminates the
    daemonic workers with it and then waits for them (torch's own handler exits quietly on a
    SIGTERM from the parent, and dies by any other). Python handlers cannot see the sender, so
    the worker blocks the signals and a thread takes them with ``sigwaitinfo``. That needs the
    worker to be single-threaded when it starts, as a forked one is (mmengine's and the configs'
    'fork' start method); a 'spawn' or 'forkserver' worker already runs threads of torch's,
    which would take the signals unblocked, so it keeps torch's handling. A class, not a
    closure, so that it pickles for those start methods.
    """

    def __init__(self, signals, init_fn=None):
        self.signals = frozenset(signals)
        self.init_fn = init_fn

    def __call__(self, worker_id):
        if _single_threaded():
            signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)  # later threads inherit it
            threading.Thread(target=self._exit_on_signals_from_parent, args=(os.getppid(),),
                             name='preemption-signals', daemon=True).start()
        if self.init_fn is not None:
            self.init_fn(worker_id)

    def _exit_on_signals_from_parent(self, parent_pid):
        while True:
            if signal.sigwaitinfo(self.signals).si_pid == parent_pid:
                os._exit(0)


def _single_threaded() -> bool:
    """Whether this process runs one thread (Linux's /proc; False where it cannot tell)."""
    try:
        return len(os.listdir('/proc/self/task')) == 1
    except OSError:
        return False


def ignore_signals_in_workers(loader, signals) -> None:
    """Make the DataLoader workers ``loader`` starts from now on ignore ``signals``.

    SLURM signals every process of a job step, the workers too; torch's workers install a
    SIGTERM handler that dies on any SIGTERM not sent by their parent, and the training process
    then stops with "DataLoader worker (pid N) is killed by signal: Terminated" instead of
    saving. A worker still ends when the loader shuts it down, when the training process
    terminates it, or when the training process has gone (torch's watchdog)."""
    if (not isinstance(loader, DataLoader) or loader.num_workers == 0
            or not hasattr(signal, 'sigwaitinfo')):  # not on macOS
        return
    if not isinstance(loader.worker_init_fn, IgnoreSignalsThenInit):
        loader.worker_init_fn = IgnoreSignalsThenInit(signals, loader.worker_init_fn)


@HOOKS.register_module()
class PreemptionHook(Hook):
    """On one of ``signals``, save a checkpoint at the next iteration boundary and stop.

    Runs after every other ``after_train_iter`` (priority ``LOWEST``): the learning-rate
    scheduler has stepped and any regular checkpoint of that iteration is written. With
    gradient accumulation it waits for the iteration that updates the weights, or for the end of
    the epoch during the iterations FastMIM-P's stages drop there. During a validation inside
    training it stops at the next validation batch (see the module docstring).

    Args:
        signals (sequence of str): signal names to handle. Default SIGTERM and SIGUSR1.
    """

    priority = 'LOWEST'

    def __init__(self, signals=early_signals.PREEMPTION_SIGNALS):
        unknown = [name for name in signals if not hasattr(signal, name)]
        if unknown:
            raise ValueError(f'PreemptionHook: unknown signals {unknown}')
        self.signals = tuple(getattr(signal, name) for name in signals)
        self.received = None  # name of the first signal received
        self.signal_count = 0
        self._signals_logged = 0  # the signal_count a line has named
        self._checkpoint_saved = False
        self._training = False  # the handlers are installed
        self._val_batches = 0  # batches of the running validation that every rank runs
        self._in_train = False  # inside runner.train (a validation there is recorded)
        self._validating = False
        # Whether the last training iteration updated the weights: one that did not, at an
        # epoch's end, is an iteration FastMIM-P's stages drop there.
        self._last_iteration_updated = True

    def before_train(self, runner) -> None:
        problem = inside_epoch_resume_problem(runner.train_loop)
        if problem:  # said now: after a preemption the work would be lost
            runner.logger.warning(f'PreemptionHook: {problem}')
        self._take_over_signals(runner)
        if self._training and self._any_rank_received():
            self._stop_before_training(runner)
        self._in_train = True
        if runner.iter == 0 and runner.rank == 0:  # a new run: an older run's record goes
            marker = osp.join(runner.work_dir, LAST_VALIDATION_FILE)
            if osp.isfile(marker):
                os.remove(marker)
        self._finish_preempted_validation(runner)

    def _take_over_signals(self, runner) -> None:
        """Install the handlers, taking over the signals recorded (:mod:`early_signals`) while
        the tool imported and the run was built and resumed (the handlers from before the
        recording are the ones put back when the run ends)."""
        if threading.current_thread() is not threading.main_thread():
            runner.logger.warning('PreemptionHook: training runs outside the main thread, '
                                  'where signal handlers cannot be installed; it is inactive')
        else:
            recorded = early_signals.take_over(self.signals, self._on_signal)
            self._training = True
            if recorded:
                self.received = signal.Signals(recorded[0]).name
                self.signal_count += len(recorded)

    def _stop_before_training(self, runner) -> None:
        """Stop a run signalled while it was built or resumed, before any iteration: nothing
        was trained, so ``last_checkpoint`` is still where it goes on, and no checkpoint is
        written."""
        self._stop(runner, f'{self.received or "a signal on another rank"} before training '
                           f'started: nothing trained in this run (at iteration {runner.iter}); '
                           'continue with --resume')

    def _stop(self, runner, message: str) -> None:
        """Log ``message`` and raise :class:`TrainingPreempted`. The handlers from before the
        run are put back, or, in a process that only exits from here on (a tool), the signals
        are ignored: a late one must not turn status 75 (which a requeue script checks) into
        death by signal while Python shuts down (:func:`early_signals.stop_handling`)."""
        runner.logger.info(message)
        early_signals.stop_handling(self.signals)
        raise TrainingPreempted(message)

    def _finish_preempted_validation(self, runner) -> None:
        """A run resumed from a checkpoint saved during a validation runs that validation
        before training on, as the uninterrupted run did: its metrics are logged and
        ``CheckpointHook(save_best=...)`` sees them. Runs after every other ``before_train``
        (priority ``LOWEST``), so after the resume; its workers are protected as in training."""
        if not runner.message_hub.get_info(PENDING_VALIDATION_KEY):
            return
        runner.message_hub.update_info(PENDING_VALIDATION_KEY, False)
        # Rank 0 reads the record: every rank must take the same way (a collective follows).
        done = torch.tensor([float(runner.rank == 0
                                   and validation_finished(runner.work_dir, runner.iter))])
        all_reduce(done, op='max')
        if done.item():
            return  # killed after that validation had finished: the run trains on
        if runner.val_loop is None:
            runner.logger.warning('the checkpoint was saved before or during a validation, but '
                                  'this run has no val_dataloader: that validation is not '
                                  'repeated')
            return
        ignore_signals_in_workers(getattr(runner.val_loop, 'dataloader', None), self.signals)
        runner.logger.info(f'the validation after iteration {runner.iter} did not finish before '
                           f'the run stopped (no {LAST_VALIDATION_FILE} of it in the work dir): '
                           'running that validation first')
        runner.val_loop.run()
        self._retire_validation_checkpoint(runner)

    def _retire_validation_checkpoint(self, runner) -> None:
        """A preemption checkpoint written during the validation just repeated gives way to
        CheckpointHook's checkpoint of the same iteration (saved before that validation, named
        by mmengine's rule), which ``last_checkpoint`` names again, as in the uninterrupted run;
        the preemption file goes. Either file still asks for the validation, but the
        :data:`LAST_VALIDATION_FILE` the validation wrote makes later resumes in this work dir
        skip it, so no checkpoint is saved again just to clear the mark (a ViT-L checkpoint
        with its optimiser state is several GB)."""
        preempted = runner.message_hub.get_info(PREEMPTION_CHECKPOINT_KEY)
        regular = runner.message_hub.get_info('last_ckpt')
        if not (regular and osp.basename(regular) in (f'epoch_{runner.epoch}.pth',
                                                      f'iter_{runner.iter}.pth')
                and get_file_backend(regular).isfile(regular)):
            regular = None
        if regular and preempted and not _same_file(regular, preempted):
            if runner.rank == 0:
                last = osp.join(runner.work_dir, 'last_checkpoint')
                get_file_backend(last).put_text(regular, last)
                _delete_preemption_checkpoint(runner, preempted)
            runner.message_hub.update_info(PREEMPTION_CHECKPOINT_KEY, None)
        barrier()  # the other ranks go on once the files are settled

    def before_train_epoch(self, runner) -> None:
        """Runs after every other ``before_train_epoch`` (priority ``LOWEST``), so also for a
        loader that ``ProgressiveResolutionHook`` has just rebuilt, and before the epoch starts
        the workers (persistent ones: once, in the first epoch). The validation loader too:
        its persistent workers live on through training. mmengine's ``IterBasedTrainLoop``
        starts its training workers before any hook runs, so they are not covered;
        ``ResumableIterBasedTrainLoop`` (the segmentation config's) starts them at the first
        batch, after this hook."""
        for loop in (runner.train_loop, getattr(runner, 'val_loop', None)):
            if loop is not None:
                ignore_signals_in_workers(getattr(loop, 'dataloader', None), self.signals)

    def before_save_checkpoint(self, runner, checkpoint) -> None:
        """Mark a checkpoint of a position the train loop validates right after (see the
        module docstring). Only in the saved copy of the message hub: the running one must not
        carry the mark into later checkpoints."""
        self._checkpoint_saved = True
        if (self._in_train and not self._validating
                and _validation_follows(runner, checkpoint.get('meta') or {})):
            checkpoint['message_hub']['runtime_info'][PENDING_VALIDATION_KEY] = True

    def after_val_epoch(self, runner, metrics=None) -> None:
        """Record the validation as finished. After every other ``after_val_epoch`` (priority
        ``LOWEST``), so after CheckpointHook's best checkpoint: killed between the two, the
        resumed run validates again and saves that best checkpoint, rather than never."""
        self._validating = False
        if self._in_train and runner.rank == 0:
            marker = osp.join(runner.work_dir, LAST_VALIDATION_FILE)
            get_file_backend(marker).put_text(f'{runner.iter}\n', marker)  # atomic (fastmim)

    def after_train_epoch(self, runner) -> None:
        """Save and stop at the end of an epoch loop's epoch, a window boundary, on a signal
        not yet acted on during the iterations that FastMIM-P's stages drop at an epoch's end
        (no optimiser update follows them in the epoch; waiting for the next one saved a window
        of the next epoch late, and in the last epoch never). After every other
        ``after_train_epoch``: the epoch-based schedulers have stepped and CheckpointHook has
        saved, as for that hook's epoch checkpoint. An epoch whose last iteration updated keeps
        a signal during its closing hooks for the next iteration, as any other: that needs no
        second copy of the epoch checkpoint just written. Nor does an epoch whose checkpoint
        CheckpointHook has just written: the run stops on that file, which ``last_checkpoint``
        names. After the last epoch training finishes (:meth:`_let_training_finish`)."""
        self._delete_superseded_preemption_checkpoint(runner)
        if (not isinstance(runner.train_loop, EpochBasedTrainLoop)  # no epochs to end
                or self._last_iteration_updated
                or gradients_wait_for_an_update(runner.optim_wrapper)
                or not self._any_rank_received()):
            return
        when = f'at iteration {runner.iter} (end of epoch {runner.epoch + 1})'
        if runner.epoch + 1 >= runner.max_epochs:
            self._let_training_finish(runner, f'{when}, the last')
            return
        epoch_checkpoint = _epoch_checkpoint_just_saved(runner)
        if epoch_checkpoint is None:
            self._save_and_stop(runner, dict(epoch=runner.epoch + 1, iter=runner.iter), when)
        else:
            self._stop(runner, f'{self.received or "a signal on another rank"}: '
                               f'{epoch_checkpoint} saved {when}; continue with --resume')

    def after_train(self, runner) -> None:
        """Training is complete (this runs after every other ``after_train``, priority
        ``LOWEST``). A signal since the last iteration's boundary, which nothing acts
        on, is logged. The handlers from before the run go back, or, in a tool's process, the
        signals are noted until it exits with status 0 (:func:`early_signals.finish_handling`),
        and the tool logs those that came."""
        if self.signal_count > self._signals_logged:
            runner.logger.info(f'{self.received} after training was complete: nothing to save')
        if self._training:
            early_signals.finish_handling(self.signals)
        self._training = False
        self._in_train = False
        self._delete_superseded_preemption_checkpoint(runner)

    def _on_signal(self, signum, frame) -> None:
        """Only records the signal. A handler runs between two bytecodes of the main thread,
        possibly inside a logging call: logging here would re-enter the log stream's writer
        ("reentrant call inside BufferedWriter"), so the boundary logs instead."""
        self.signal_count += 1
        if self.received is None:
            self.received = signal.Signals(signum).name

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._delete_superseded_preemption_checkpoint(runner)
        # Inside a gradient-accumulation window the accumulated gradients, which checkpoints
        # do not hold, would be lost: stop after the window's optimiser update instead.
        self._last_iteration_updated = _update_done(runner.optim_wrapper)
        if not self._last_iteration_updated or not self._any_rank_received():
            return
        iteration = runner.iter + 1  # the loop counts this iteration after the hooks
        if iteration >= runner.max_iters:
            self._let_training_finish(runner, f'at iteration {iteration}, the last')
            return
        # An iteration-based loop stays in epoch 0: an epoch there would mislead.
        epoch = (f' (epoch {runner.epoch + 1})'
                 if isinstance(runner.train_loop, EpochBasedTrainLoop) else '')
        self._save_and_stop(runner, dict(epoch=runner.epoch, iter=iteration),
                            f'at iteration {iteration}{epoch}')

    def _let_training_finish(self, runner, when: str) -> None:
        """After the run's last iteration training is complete and CheckpointHook saves its
        final checkpoint: a preemption checkpoint would copy it, and status 75 would make a
        requeue script start the finished run again. The signal stays recorded: a validation
        still to run stops at its next batch, as any validation does."""
        runner.logger.info(f'{self.received or "a signal on another rank"} {when}: training '
                           'is complete, nothing to save')
        self._signals_logged = self.signal_count

    def before_val_epoch(self, runner) -> None:
        """Count the batches of this validation that every rank runs: the signal check is a
        collective, so it may only run at batches every rank reaches. mmengine's
        ``DefaultSampler`` gives every rank as many; with ``round_up=False`` the last rank may
        have one fewer."""
        self._validating = True
        if not self._training:
            return
        try:
            batches = len(getattr(runner.val_loop, 'dataloader', None))
        except TypeError:  # a loop without a loader, or an iterable dataset of unknown length:
            batches = 0  # no check during it
        count = torch.tensor([batches])
        all_reduce(count, op='min')  # on the backend's device; nothing in one process
        self._val_batches = int(count.item())

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        """Stop a validation inside training at a signal. The training state is that of the
        iteration before the validation (the loop has counted it), and the checkpoint is marked
        so that the resumed run repeats this validation. A validation inside a
        gradient-accumulation window (an iteration-based loop validating every N iterations, N
        not a multiple of the accumulation; mmengine's epoch loop with an epoch length the
        accumulation does not divide: ``ResumableEpochBasedTrainLoop`` ends a window with every
        epoch) runs on: the signal is taken at the window's update, as in training. The
        iterations FastMIM-P's stages drop at an epoch's end leave no such window."""
        if (not self._training or batch_idx >= self._val_batches
                or gradients_wait_for_an_update(runner.optim_wrapper)
                or not self._any_rank_received()):
            return
        _put_back_training_weights(runner)
        runner.message_hub.update_info(PENDING_VALIDATION_KEY, True)
        self._save_and_stop(runner, dict(epoch=runner.epoch, iter=runner.iter),
                            f'during the validation after iteration {runner.iter}')

    def _save_and_stop(self, runner, position: dict, when: str) -> None:
        """Save the training state at ``position`` (the epochs and iterations done, as
        ``Runner.save_checkpoint`` records them) as ``iter_<n>.pth``, name it in
        ``last_checkpoint`` and raise :class:`TrainingPreempted`; raise
        :class:`PreemptionSaveFailed` instead when any rank could not save."""
        if self.received is not None:
            runner.logger.info(f'received {self.received} ({self.signal_count} signal(s)): '
                               'saving a checkpoint, then stopping')
        filename = f'iter_{position["iter"]}.pth'
        path = osp.join(runner.work_dir, filename)
        previous = runner.message_hub.get_info(PREEMPTION_CHECKPOINT_KEY)
        # A regular checkpoint of this iteration has the same name: CheckpointHook owns it. One
        # this hook wrote (preempted again while repeating a validation) stays its own.
        owned = (not get_file_backend(path).exists(path)
                 or (previous is not None and _same_file(previous, path)))
        runner.message_hub.update_info(PREEMPTION_CHECKPOINT_KEY, path if owned else None)
        failure = _save_preemption_checkpoint(runner, path, position, previous)
        signal_name = self.received or 'a signal on another rank'
        # Launchers (srun --kill-on-bad-exit, torchrun) kill the other ranks as soon as one
        # exits: nobody leaves before every rank has saved (this exchange waits for all).
        if _any_rank_true(failure is not None):
            early_signals.stop_handling(self.signals)
            raise PreemptionSaveFailed(
                _save_failure_message(runner, signal_name, path, when, failure),
                own=failure is not None) from failure
        self._stop(runner, f'{signal_name}: saved {path} {when}; continue with --resume')

    def _any_rank_received(self) -> bool:
        """Whether any rank got a signal: all ranks must stop at the same iteration, or the
        others would wait forever in the next collective."""
        return _any_rank_true(self.received is not None)

    def _delete_superseded_preemption_checkpoint(self, runner) -> None:
        """Once a checkpoint has been saved after the preemption checkpoint that the run
        resumed from, and ``last_checkpoint`` names another file, delete the preemption one.
        Runs after the other hooks of the same stage, so after ``CheckpointHook``'s save.
        Rank 0 alone writes checkpoints, and its message hub is the one they save."""
        saved, self._checkpoint_saved = self._checkpoint_saved, False
        preempted = runner.message_hub.get_info(PREEMPTION_CHECKPOINT_KEY)
        if not saved or preempted is None or runner.rank != 0:
            return
        last = osp.join(runner.work_dir, 'last_checkpoint')
        backend = get_file_backend(last)
        if not backend.exists(last) or _same_file(backend.get_text(last).strip(), preempted):
            return
        runner.message_hub.update_info(PREEMPTION_CHECKPOINT_KEY, None)
        _delete_preemption_checkpoint(runner, preempted)


def _epoch_checkpoint_just_saved(runner):
    """The path of CheckpointHook's ``epoch_<e>.pth`` of the epoch ending now, or None. Taken
    from the message hub, which that hook updates on every rank (rank 0 alone writes the file
    and ``last_checkpoint``), so that every rank stops the same way."""
    regular = runner.message_hub.get_info('last_ckpt')
    if regular and osp.basename(regular) == f'epoch_{runner.epoch + 1}.pth':
        return regular
    return None


def _any_rank_true(value: bool) -> bool:
    """Whether ``value`` is true on any rank (a collective: every rank calls it)."""
    flag = torch.tensor([float(value)])
    all_reduce(flag, op='max')  # on the backend's device; nothing in one process
    return bool(flag.item())


def _save_preemption_checkpoint(runner, path: str, position: dict, previous):
    """Write the checkpoint at ``path`` and (rank 0) name it in ``last_checkpoint``, deleting
    the ``previous`` preemption checkpoint; the error that stopped it, or None. Returned, not
    raised: the other ranks must learn of it, or they would wait in the next collective until
    the launcher killed them, and the line they printed would blame another process."""
    try:
        runner.save_checkpoint(runner.work_dir, osp.basename(path), meta=dict(position))
        if runner.rank == 0:
            last = osp.join(runner.work_dir, 'last_checkpoint')
            get_file_backend(last).put_text(path, last)
            if previous is not None and not _same_file(previous, path):
                _delete_preemption_checkpoint(runner, previous)
    except Exception as error:  # any: PreemptionSaveFailed names it, --debug shows its trace
        return error
    return None


def _save_failure_message(runner, signal_name: str, path: str, when: str, failure) -> str:
    """What a failed preemption save says: why (on the rank it failed on), and the checkpoint
    ``--resume`` continues from, which ``last_checkpoint`` still names."""
    why = (f'{type(failure).__name__}: {failure}' if failure is not None else
           'it failed on another rank, whose line says why')
    last = osp.join(runner.work_dir, 'last_checkpoint')
    backend = get_file_backend(last)
    good = backend.get_text(last).strip() if backend.exists(last) else ''
    resume = (f'the last good checkpoint is {good} (--resume continues from it)' if good else
              'no checkpoint was saved before (--resume starts from the beginning)')
    return f'{signal_name}: could not save {path} {when} ({why}); {resume}'


def _validation_follows(runner, meta: dict) -> bool:
    """Whether a checkpoint saved now with ``meta`` (the epochs and iterations it records as
    done) is one the train loop validates right after, by mmengine's rule: an epoch loop's save
    at an epoch's end (``after_train_epoch``, before the loop counts the epoch), an iteration
    loop's in ``after_train_iter`` (before it counts the iteration)."""
    loop = getattr(runner, '_train_loop', None)
    if runner.val_loop is None:
        return False
    if isinstance(loop, EpochBasedTrainLoop):
        done, total = loop.epoch + 1, loop.max_epochs
        if meta.get('epoch') != done:
            return False
    elif isinstance(loop, IterBasedTrainLoop):
        done, total = loop.iter + 1, loop.max_iters
        if meta.get('iter') != done:
            return False
    else:
        return False
    interval = loop.val_interval
    milestones = getattr(loop, 'dynamic_milestones', None)
    if milestones:  # the loop's _decide_current_val_interval, run once it has counted `done`
        interval = loop.dynamic_intervals[bisect.bisect(milestones, done + 1) - 1]
    return done >= loop.val_begin and (done % interval == 0 or done == total)


def _same_file(first: str, second: str) -> bool:
    return osp.realpath(first) == osp.realpath(second)


def _delete_preemption_checkpoint(runner, path: str) -> None:
    """Delete a superseded preemption checkpoint of this work dir (one that a run resumed in
    another work dir names stays: the user may still want it)."""
    if not _same_file(osp.dirname(path), runner.work_dir):
        return
    backend = get_file_backend(path)
    if backend.isfile(path):
        backend.remove(path)
        runner.logger.info(f'deleted the preemption checkpoint {path}: a newer checkpoint '
                           'has been saved')


def _put_back_training_weights(runner) -> None:
    """mmengine's ``EMAHook`` puts the averaged weights into the model for a validation and the
    trained ones back after it (``after_val_epoch``, which takes no metrics). A validation
    stopped in between must put them back before the checkpoint is saved, or it would hold
    the two swapped, and the resumed run would train on the average."""
    for hook in runner.hooks:
        if isinstance(hook, EMAHook):
            hook.after_val_epoch(runner)


def record_signals_before_training(cfg) -> None:
    """Record the signals of the config's :class:`PreemptionHook` from now until it installs
    its handlers in ``before_train``, which then stops the run with
    :data:`PREEMPTED_EXIT_STATUS`. Building the model and the dataset and loading a checkpoint
    take minutes on ImageNet; a job preempted then would die of the signal (status 143, which a
    requeue script does not requeue, though its ``last_checkpoint`` is good). Nothing is
    recorded for a config without the hook, whose run the signal ends by default: a signal that
    ``tools/train.py`` recorded while its modules imported and that the hook does not handle
    gets its handler back and is sent again (:func:`early_signals.keep_recording_only`)."""
    from fastmim.registry import type_name
    hooks = list((cfg.get('default_hooks') or {}).values()) + list(cfg.get('custom_hooks') or [])
    hook = next((hook for hook in hooks if isinstance(hook, dict)
                 and type_name(hook) == 'PreemptionHook'), None)
    names = () if hook is None else hook.get('signals', early_signals.PREEMPTION_SIGNALS)
    early_signals.keep_recording_only({getattr(signal, name) for name in names})


def _update_done(optim_wrapper) -> bool:
    """Whether the iteration that just ran ended with an optimiser update."""
    should_update = getattr(optim_wrapper, 'should_update', None)
    return should_update is None or should_update()
