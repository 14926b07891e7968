"""What ``--resume`` would continue in a work dir, told from the file names alone (no checkpoint
is loaded): for the warning that a fresh run starts in the work dir of another one, and for the
Ctrl-C line of tools/train.py and tools/demo.py, which names what ``--resume`` would take at
that moment.

A fresh run in a work dir that holds a finished run's checkpoints trains from the start; until
its first save, ``last_checkpoint`` still names the earlier run's checkpoint, and ``--resume``
would continue that run ('nothing left to train') rather than this one. The state of
``last_checkpoint`` when the run starts (:func:`note_the_start`) tells whether this run has
saved since: every save rewrites the file.
"""
import os
import os.path as osp

# tools/train.py's Ctrl-C words for --resume.
RESUME = '--resume'

# The work dir of the run this process trains, and its last_checkpoint when it started.
_start = {}


def resume_pick(work_dir):
    """The checkpoint ``--resume`` would take in ``work_dir``, or None: the one
    ``last_checkpoint`` names (the work dir's own file of that name where there is one, as
    :func:`~fastmim.engine.last_checkpoint.latest_checkpoint` takes it), else the newest
    ``epoch_N.pth`` / ``iter_N.pth`` by modification time (``--resume`` takes the one that
    records the most iterations, which loading would tell; the newest written is that one
    unless files were copied)."""
    from fastmim.engine.last_checkpoint import regular_checkpoints
    named = _pointer(work_dir)[0]
    if named:
        here = osp.join(work_dir, osp.basename(named))
        return here if osp.isfile(here) else named
    try:
        names = regular_checkpoints(work_dir)
    except OSError:
        return None
    if not names:
        return None
    return osp.join(work_dir, max(names, key=lambda name: osp.getmtime(osp.join(work_dir, name))))


def _pointer(work_dir):
    """``(what last_checkpoint names, when it was written)``, ``('', None)`` without one."""
    path = osp.join(work_dir, 'last_checkpoint')
    try:
        with open(path, encoding='utf-8') as file:
            return file.read().strip(), os.stat(path).st_mtime_ns
    except OSError:
        return '', None


def an_earlier_run(work_dir):
    """The warning for a run that starts afresh in ``work_dir`` (no ``--resume``) where another
    run left checkpoints: it names the newest, and that ``--resume`` would continue that run
    instead. '' for a work dir with none."""
    earlier = resume_pick(work_dir)
    if earlier is None:
        return ''
    return (f'{work_dir} holds the checkpoints of an earlier run (newest: '
            f'{osp.basename(earlier)}): this run starts afresh and its checkpoints supersede '
            f'them; {RESUME} would continue that run instead (or give another --work-dir)')


def note_the_start(cfg):
    """Record the work dir of the run about to train and its ``last_checkpoint``, for
    :func:`interrupted_hint`; ``cfg`` after the flags are applied (``resume``, ``load_from``)."""
    _start.update(work_dir=cfg.work_dir, pointer=_pointer(cfg.work_dir),
                  resumed_from=cfg.get('load_from') if cfg.get('resume') else None)


def started_work_dir():
    """The work dir :func:`note_the_start` recorded, or None before it."""
    return _start.get('work_dir')


def interrupted_hint(resume=RESUME):
    """What ``resume`` (the words that resume: tools/train.py's ``--resume``, tools/demo.py's
    command) would continue after a Ctrl-C, read from ``last_checkpoint`` now: the checkpoint
    this run saved last, the one it resumed from, an earlier run's (this run saved none yet),
    or nothing."""
    if not _start:
        return (f'{resume} continues from the last checkpoint of the work dir (from the start '
                'when it holds none)')
    work_dir = _start['work_dir']
    pick = resume_pick(work_dir)
    if _pointer(work_dir) != _start['pointer'] and pick is not None:
        return f'{resume} continues from {pick}, the last checkpoint this run saved'
    if pick is None:
        return f'{resume} starts from the start: this run saved no checkpoint yet'
    resumed_from = _start['resumed_from']
    if resumed_from and osp.abspath(resumed_from) == osp.abspath(pick):
        return (f'{resume} continues from {pick} again, where this run started (it saved none '
                'since)')
    return (f'this run saved no checkpoint yet: {resume} would continue the earlier run\'s '
            f'{pick} instead (run without it to start afresh, or give another --work-dir)')
