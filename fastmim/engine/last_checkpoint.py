"""The newest checkpoint of a work dir, as mmengine's ``last_checkpoint`` file names it, found
also in a work dir that was moved or copied (``--resume``, ``tools/test.py``)."""
import os.path as osp

from mmengine.logging import print_log

from fastmim.errors import CheckpointError


def latest_checkpoint(work_dir, use='resuming from'):
    """The checkpoint ``work_dir/last_checkpoint`` names, or None. It holds an absolute path,
    so in a work dir that was moved or copied (to other storage, to branch a run) it named the
    old place: ``--resume`` failed with 'checkpoint not found' there, or resumed from the other
    run's newest checkpoint. A file of that name in ``work_dir`` is taken instead, logged
    with ``use`` (what the caller does with it)."""
    from mmengine.runner import find_latest_checkpoint

    recorded = find_latest_checkpoint(work_dir)
    if recorded is None:
        return None
    if not recorded:  # a last_checkpoint emptied outside the toolbox (its own writes are atomic)
        from fastmim.engine.checkpoint import checkpoints_in
        raise CheckpointError(f'{osp.join(work_dir, "last_checkpoint")} is empty: it names no '
                              f'checkpoint to resume from or test; give one by its path'
                              f'{checkpoints_in(work_dir)}')
    here = osp.join(work_dir, osp.basename(recorded))
    if osp.isfile(here) and not (osp.exists(recorded) and osp.samefile(recorded, here)):
        print_log(f'{osp.join(work_dir, "last_checkpoint")} names {recorded}, outside the work '
                  f'dir (moved or copied): {use} {here}', logger='current')
        return here
    return recorded


def checkpoint_named_by(path, use):
    """``path``, or the checkpoint it names when it is a work dir's ``last_checkpoint``
    (:func:`latest_checkpoint`): mmengine's text file naming the newest checkpoint, given as
    a checkpoint (``tools/test.py``'s CHECKPOINT, ``--resume``), was refused as 'not a readable
    checkpoint (truncated or corrupt?)'. An empty one is left to that refusal."""
    if osp.basename(path) != 'last_checkpoint' or not osp.isfile(path):
        return path
    named = latest_checkpoint(osp.dirname(path), use)
    if named is None:
        return path
    print_log(f'{path} names {named}: {use} it', logger='current')
    return named
