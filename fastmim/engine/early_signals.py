"""The preemption signals that arrive before a :class:`PreemptionHook` handles them.

SLURM's SIGTERM (or ``--signal=USR1@...``) may come while ``tools/train.py`` imports torch and
fastmim (seconds) or builds the run (minutes on ImageNet); by default it killed the job with
status 143, which a requeue script does not requeue although nothing was lost. The signals are
recorded from ``tools/train.py``'s first line, narrowed to the config's hook once the config is
loaded, and taken over by the hook in ``before_train``, which then stops the run with its own
status. One record (:data:`RECORDED`) and one set of replaced handlers (:data:`REPLACED`)
serve all three steps.

This module imports nothing but the standard library: ``tools/train.py`` loads it from its file
before anything else, because importing it through the package would first run
``fastmim/__init__.py``, which imports torch, the very seconds to be covered.
"""
import os
import signal
import threading

# The signals PreemptionHook handles unless its config names others.
PREEMPTION_SIGNALS = ('SIGTERM', 'SIGUSR1')

# The signal numbers recorded and not yet handed on, in the order they arrived.
RECORDED = []
# Signal number -> the handler installed before the recording, put back when it ends.
REPLACED = {}


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
    """Install ``handler`` for ``signums``. Returns the handlers to put back after training
    (those from before the recording, where it replaced them) and the signals recorded until
    now, which are the taker's to act on."""
    originals = {}
    for signum in signums:
        previous = signal.signal(signum, handler)
        originals[signum] = REPLACED.pop(signum, previous)
    recorded = RECORDED[:]
    RECORDED.clear()
    return originals, recorded


def stop_recording(send_again: bool = False) -> None:
    """Put back the handlers that no hook has taken over. ``send_again``: the recorded signals
    are sent again, to act as they would have (a run that ended while it imported or loaded its
    config); otherwise they are dropped (a run that failed while it was built reports that
    error)."""
    while REPLACED:
        signal.signal(*REPLACED.popitem())
    while RECORDED:
        signum = RECORDED.pop(0)
        if send_again:
            os.kill(os.getpid(), signum)
