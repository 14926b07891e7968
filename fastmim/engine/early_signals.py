"""The preemption signals that arrive before a :class:`PreemptionHook` handles them.

SLURM's SIGTERM (or ``--signal=USR1@...``) may come while ``tools/train.py`` imports torch and
fastmim (seconds) or builds the run (minutes on ImageNet); by default it would kill the job with
status 143, which a requeue script does not requeue although nothing is lost. The signals are
recorded from ``tools/train.py``'s first line, narrowed to the config's hook once the config is
loaded, and taken over by the hook in ``before_train``, which then stops the run with its own
status. One record (:data:`RECORDED`) and one set of replaced handlers (:data:`REPLACED`)
serve all three steps.

When the run ends, on every path, the process's handlers are again those from before it
(:data:`TAKEN_OVER` keeps the ones the hook replaced): otherwise a notebook or a Python session
that trains twice, or trains and goes on, would be left with the signals ignored after a
preemption, or with the hook's handler, which only records, after a crash, so that a later
SIGTERM would do nothing. Only a process that exits when the run ends (a tool run by
``fastmim.cli.run_cli``, :func:`exit_follows_the_run`) keeps them to its exit, so that a late
signal does not turn its status into death by the signal: ignored once the hook stopped the
run, noted once training is complete (:func:`finish_handling`), for the tool to say at its end
that one came when there was nothing left to save.

This module imports nothing but the standard library: ``tools/train.py`` loads it from its file
before anything else, because importing it through the package would first run
``fastmim/__init__.py``, which imports torch, the very seconds to be covered.
"""
import contextlib
import os
import signal
import threading

# The signals PreemptionHook handles unless its config names others.
PREEMPTION_SIGNALS = ('SIGTERM', 'SIGUSR1')

# The signal numbers recorded and not yet handed on, in the order they arrived.
RECORDED = []
# Signal number -> the handler installed before the recording, put back when it ends.
REPLACED = {}
# Signal number -> (the handler from before a hook took the signal over, from before the
# recording where it replaced one; the hook's handler), put back when the run ends.
TAKEN_OVER = {}
# The signal numbers that arrived after training was complete, in the order they arrived, in a
# process that exits when the run ends (:func:`finish_handling`).
ARRIVED_LATE = []
# The signals noted in ARRIVED_LATE, until :func:`take_arrived_late`.
_noting = set()
# Whether the process exits when the run ends (:func:`exit_follows_the_run`).
_exit_follows = False


def record(signums) -> None:
    """Record ``signums`` from now on; a signal already recorded keeps the handler it had
    before its first recording, which is the one to put back."""
    for signum in signums:
        REPLACED.setdefault(signum, signal.signal(signum, _record))


def _record(signum, frame) -> None:
    RECORDED.append(signum)


def keep_recording_only(signums) -> None:
    """Record ``signums`` (those of the config's PreemptionHook) until the hook takes them over;
    any other signal gets its handler back and is sent again if it came, to act as it would
    have. Outside the main thread no handler can be installed, so nothing is kept."""
    if threading.current_thread() is not threading.main_thread():
        signums = ()
    record(signums)
    for signum in [signum for signum in REPLACED if signum not in signums]:
        signal.signal(signum, REPLACED.pop(signum))
    # Only the kept signals append from here on: the others are removed one by one, in order.
    for signum in [signum for signum in RECORDED if signum not in signums]:
        RECORDED.remove(signum)
        os.kill(os.getpid(), signum)


def take_over(signums, handler):
    """Install ``handler`` for ``signums``. Returns the signals recorded until now, which are
    the taker's to act on. The handlers it replaces (those from before the recording, where it
    replaced them) are kept in :data:`TAKEN_OVER` until the run ends. One that is the handler
    of an earlier taker still installed (a run that crashed in this process without
    ``tools/train.py``, which would have put it back) is no handler from before: the one from
    before that run is kept instead."""
    for signum in signums:
        replaced = signal.signal(signum, handler)
        previous = REPLACED.pop(signum, replaced)
        earlier = TAKEN_OVER.get(signum)
        if earlier is not None and earlier[1] == previous:
            previous = earlier[0]
        TAKEN_OVER[signum] = (previous, handler)
    recorded = RECORDED[:]
    RECORDED.clear()
    return recorded


def put_back(signums) -> None:
    """Put back the handlers from before ``signums`` were taken over (the run ended), where
    the taker's handler is still installed: one installed since (by the user, after a run
    that crashed outside ``tools/train.py``) is the one to keep."""
    for signum in signums:
        previous, taker = TAKEN_OVER.pop(signum, (None, None))
        if taker is not None and signal.getsignal(signum) == taker:
            signal.signal(signum, previous)


def stop_handling(signums) -> None:
    """The hook has stopped the run: put back the handlers of ``signums``, or, in a process
    that exits when the run ends (:func:`exit_follows_the_run`), ignore the signals until it
    has exited (a late one must not turn the preempted status into death by the signal)."""
    if _exit_follows:
        _keep_to_the_exit(signums, signal.SIG_IGN)
    else:
        put_back(signums)


def finish_handling(signums) -> None:
    """Training is complete: put back the handlers of ``signums``,
    or, in a process that exits when the run ends, note the signals in :data:`ARRIVED_LATE`
    until :func:`take_arrived_late`. The hooks after training (reconstruction pictures) and the
    shutdown go on, and the status stays 0: death by a signal would have SLURM mark the
    finished job failed and never start the jobs that wait for its success (``afterok``)."""
    if _exit_follows:
        _keep_to_the_exit(signums, _arrive_late)
        _noting.update(signums)
    else:
        put_back(signums)


def _arrive_late(signum, frame) -> None:
    ARRIVED_LATE.append(signum)


def take_arrived_late() -> list:
    """The signals noted since training was complete (:func:`finish_handling`), which are
    ignored from now on until the process has exited: Python gives a signal with a handler
    of its own the default action back as it finalizes, where that signal would still kill
    the process."""
    while _noting:
        signum = _noting.pop()
        if signal.getsignal(signum) is _arrive_late:
            signal.signal(signum, signal.SIG_IGN)
    arrived = ARRIVED_LATE[:]
    ARRIVED_LATE.clear()
    return arrived


def _keep_to_the_exit(signums, handler) -> None:
    """Install ``handler`` for ``signums`` for the rest of the process, whose handlers from
    before the run are not to come back."""
    for signum in signums:
        signal.signal(signum, handler)
        TAKEN_OVER.pop(signum, None)


@contextlib.contextmanager
def exit_follows_the_run():
    """Within it, the process exits when the run ends (a tool's whole life, ``run_cli``): the
    hook keeps the signals it took over until the exit, as :func:`stop_recording` leaves them,
    so that the line a stopped or failed process ends with is still written when the launcher
    signals it meanwhile."""
    global _exit_follows
    _exit_follows = True
    try:
        yield
    finally:
        _exit_follows = False


def stop_recording(send_again: bool = False) -> None:
    """The run has ended (or failed before it began): put back every handler replaced for it,
    those a hook took over included unless the process exits now (:func:`exit_follows_the_run`).
    ``send_again``: the recorded signals are sent again, to act as they would have (a run that
    ended while it imported or loaded its config); otherwise they are dropped (a run that failed
    while it was built reports that error)."""
    while REPLACED:
        signal.signal(*REPLACED.popitem())
    if not _exit_follows:
        put_back(list(TAKEN_OVER))
    while RECORDED:
        signum = RECORDED.pop(0)
        if send_again:
            os.kill(os.getpid(), signum)
