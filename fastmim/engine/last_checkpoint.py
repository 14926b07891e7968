"""The newest checkpoint of a work dir, as mmengine's ``last_checkpoint`` file names it, found
also in a work dir that was moved or copied (``--resume``, ``tools/test.py``), or without that
file (deleted, or not copied with the checkpoints) by the progress its checkpoints record."""
import logging
import os
import os.path as osp
import re
import zipfile

from mmengine.logging import print_log

from fastmim.checkpoint_files import checkpoints_in
from fastmim.errors import CheckpointError

# What a caller that resumes from the checkpoint found does with it (``use``).
RESUMING = 'resuming from'


def latest_checkpoint(work_dir, use=RESUMING):
    """The checkpoint ``work_dir/last_checkpoint`` names, or None. It holds an absolute path,
    so in a work dir that was moved or copied (to other storage, to branch a run) it names the
    original place: ``--resume`` would fail with 'checkpoint not found' there, or resume from
    the other run's newest checkpoint. A file of that name in ``work_dir`` is taken instead, logged
    with ``use`` (what the caller does with it; :data:`RESUMING` names only the checkpoints
    that resume where the file names none). Without ``last_checkpoint``, the newest of the work
    dir's own checkpoints by the iteration it records (:func:`newest_recorded`)."""
    from mmengine.runner import find_latest_checkpoint

    if not osp.isfile(osp.join(work_dir, 'last_checkpoint')):
        return newest_recorded(work_dir, use)
    recorded = find_latest_checkpoint(work_dir)
    if recorded is None:
        return None
    if not recorded:  # a last_checkpoint emptied outside the toolbox (its own writes are atomic)
        raise CheckpointError(f'{osp.join(work_dir, "last_checkpoint")} is empty: it names no '
                              f'checkpoint to resume from or test; give one by its path'
                              f'{checkpoints_in(work_dir, resuming=use == RESUMING)}')
    here = osp.join(work_dir, osp.basename(recorded))
    if osp.isfile(here) and not (osp.exists(recorded) and osp.samefile(recorded, here)):
        print_log(f'{osp.join(work_dir, "last_checkpoint")} names {recorded}, outside the work '
                  f'dir (moved or copied): {use} {here}', logger='current')
        return here
    return recorded


def checkpoint_named_by(path, use):
    """``path``, or the checkpoint it names when it is a work dir's ``last_checkpoint``
    (:func:`latest_checkpoint`): mmengine's text file naming the newest checkpoint, given as
    a checkpoint (``tools/test.py``'s CHECKPOINT, ``--resume``), would otherwise be refused as
    'not a readable checkpoint (truncated or corrupt?)'. An empty one is left to that refusal."""
    if osp.basename(path) != 'last_checkpoint' or not osp.isfile(path):
        return path
    named = latest_checkpoint(osp.dirname(path), use)
    if named is None:
        return path
    print_log(f'{path} names {named}: {use} it', logger='current')
    return named


# The names the checkpoint and preemption hooks save under (mmengine's filename_tmpl): the
# checkpoints a run resumes from. best_*.pth (the best validation's weights, and older than the
# newest of these) are not.
REGULAR_CHECKPOINT = re.compile(r'(epoch|iter)_\d+\.pth')


def regular_checkpoints(work_dir):
    """The names of ``work_dir``'s regular checkpoints (``epoch_N.pth``, ``iter_N.pth``
    files), sorted; empty when ``work_dir`` is no folder. The one list that ``--resume``
    (:func:`newest_recorded`) and the hints of what it would take
    (:func:`fastmim.resume_target.resume_pick`) choose from, so that they name the same
    files. A folder that cannot be listed raises ``OSError``."""
    if not osp.isdir(work_dir):
        return []
    return sorted(name for name in os.listdir(work_dir) if REGULAR_CHECKPOINT.fullmatch(name)
                  and osp.isfile(osp.join(work_dir, name)))


def newest_recorded(work_dir, use=RESUMING):
    """The checkpoint of ``work_dir`` (``epoch_N.pth``, ``iter_N.pth``) that records the most
    iterations trained, for a work dir without ``last_checkpoint``; None when it holds none.

    mmengine finds a run's checkpoint through ``last_checkpoint`` alone: with that file
    deleted (a scratch purge), or not copied or restored with the checkpoints, ``--resume``
    would start the run from scratch and overwrite them, and a SLURM requeue would retrain
    every epoch without a word. The checkpoint taken is logged as a warning with ``use``, and so are the
    files skipped as unreadable (cut off, corrupt); a work dir whose checkpoints are all
    unreadable is refused rather than trained over. The recorded iteration, not the name or the
    time of the file, orders them: ``epoch_3.pth`` can be newer than ``iter_9.pth``, and a copy
    changes times."""
    names = regular_checkpoints(work_dir)
    if not names:
        return None
    progress, unreadable = {}, []
    for name in names:
        try:
            progress[name] = recorded_iteration(osp.join(work_dir, name))
        except CheckpointError as error:
            unreadable.append(f'{name} ({error})')
    skipped = f'; skipped, unreadable: {", ".join(unreadable)}' if unreadable else ''
    where = f'{osp.join(work_dir, "last_checkpoint")} is missing'
    if not progress:
        raise CheckpointError(f'{where} and no checkpoint of {work_dir} can be read: '
                              f'{", ".join(unreadable)}. Name a checkpoint to resume from by '
                              f'its path, or move these away to start over')
    newest = max(progress, key=lambda name: (progress[name], _modified(work_dir, name)))
    path = osp.join(work_dir, newest)
    print_log(f'{where} (deleted, or not copied with the checkpoints): {use} {path}, the '
              f'checkpoint that records the most iterations ({progress[newest]}){skipped}',
              logger='current', level=logging.WARNING)
    return path


def recorded_iteration(path) -> int:
    """The iterations trained that checkpoint ``path`` records (``meta['iter']``), read
    weights-only with its tensors memory-mapped, not read (a checkpoint of a large model is
    gigabytes). A file that cannot be read, or records no iteration, raises
    :class:`CheckpointError` saying why."""
    import torch
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True,
                                mmap=zipfile.is_zipfile(path))
    except Exception as error:  # any failure to read makes it unusable here
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f'not a readable checkpoint: {reason}') from None
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    iteration = meta.get('iter') if isinstance(meta, dict) else None
    if not isinstance(iteration, int):
        raise CheckpointError('records no iteration (meta.iter): not a checkpoint of training')
    return iteration


def _modified(folder, name):
    """When ``folder/name`` was last written: orders checkpoints that record the same
    iteration (an epoch's and an iteration's checkpoint of one step)."""
    return osp.getmtime(osp.join(folder, name))
