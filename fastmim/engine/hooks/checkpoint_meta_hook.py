"""Make every checkpoint hold plain types and the geometry of the model that wrote it."""

import os.path as osp

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook, Hook
from torch.distributed.fsdp import FullyShardedDataParallel

from fastmim.engine.accumulation import warn_if_checkpoints_fall_inside_windows
from fastmim.engine.checkpoint import from_plain, to_plain
from fastmim.fileio import format_size, remove_stale_temporary_files
from fastmim.engine.optim_wrappers.guarded import drop_skipped_logs, training_precision
from fastmim.engine.runner_model import bare_model
from fastmim.registry import HOOKS

from .resume_checks import (OPTIMISER_TYPE_KEY, PRECISION_KEY, THREADS_KEY,
                            ResumeChecksHook, check_read_checkpoint, optimiser_type, resumed_path,
                            warn_if_precision_changed)


@HOOKS.register_module()
class CheckpointMetaHook(Hook):
    """Converts checkpoints to plain types on save and back on load; records the geometry,
    the optimiser's type (for :class:`ResumeChecksHook`), the training precision (a resume
    in another one is named: :func:`warn_if_precision_changed`) and the CPU threads of the
    saving process (a resume on other ones is named: :func:`warn_if_threads_changed`).

    Runs last before a save (priority ``LOWEST``) so that whatever other hooks add is converted
    too. ``meta['geometry']`` is ``model.geometry()`` when the model has one: fine-tuning and
    downstream loading read the source input size, patch and window sizes from it instead of
    asking the user to restate them.

    A checkpoint saved at an iteration whose update the guarded optimiser wrapper skipped
    (``SafeCheckpointHook``'s or ``PreemptionHook``'s) leaves out that step's NaN loss from its
    message hub, as the running hub does from the next step on: a run resumed from it would
    otherwise log ``loss: nan`` for ``window_size`` iterations although nothing diverged.

    Under FSDP the checks of a resumed checkpoint see the model's parameters whole
    (:func:`whole_parameters`); a save by mmengine's ``Runner`` of an FSDP model is refused
    (see :func:`refuse_rank0_save_of_shards`).

    Before training, rank 0 deletes the temporary files of checkpoint writes that a SIGKILL cut
    off in an earlier run (``.epoch_2.pth.<8 characters>.tmp``: the atomic writer removes its
    file on an error, but a kill raises none) from the work dir and the checkpoint hooks'
    folders, logging each with its size; nothing else there is touched. It also warns when the
    checkpoint interval saves inside gradient-accumulation windows, which no checkpoint resumes
    exactly (:func:`~fastmim.engine.accumulation.warn_if_checkpoints_fall_inside_windows`).
    """

    priority = 'LOWEST'

    def before_train(self, runner):
        # After the checkpoint hooks' before_train (higher priority), which set their out_dir.
        if is_main_process():
            remove_interrupted_writes(runner)
        warn_if_checkpoints_fall_inside_windows(runner)

    def before_save_checkpoint(self, runner, checkpoint):
        refuse_rank0_save_of_shards(runner)
        drop_skipped_logs(runner.optim_wrapper, checkpoint['message_hub']['log_scalars'])
        model = bare_model(runner)
        if hasattr(model, 'geometry'):
            checkpoint.setdefault('meta', {})['geometry'] = model.geometry()
        optimiser = optimiser_type(runner)
        if optimiser:
            checkpoint.setdefault('meta', {})[OPTIMISER_TYPE_KEY] = optimiser
        checkpoint.setdefault('meta', {})[PRECISION_KEY] = training_precision(
            runner.optim_wrapper)
        checkpoint['meta'][THREADS_KEY] = torch.get_num_threads()
        for key in list(checkpoint):
            if key != 'state_dict':
                checkpoint[key] = to_plain(checkpoint[key], f'checkpoint[{key!r}]')

    def after_load_checkpoint(self, runner, checkpoint):
        for key in list(checkpoint):
            if key != 'state_dict':
                checkpoint[key] = from_plain(checkpoint[key])
        # A config that lists no ResumeChecksHook still gets the checks: here, after the other
        # hooks.
        if not any(isinstance(hook, ResumeChecksHook) for hook in runner.hooks):
            check_read_checkpoint(runner, checkpoint)
        if runner._resume:
            warn_if_precision_changed(runner, checkpoint, resumed_path(runner))


def remove_interrupted_writes(runner):
    """:func:`remove_stale_temporary_files` of the work dir and of every local folder a
    ``CheckpointHook`` saves to (its ``out_dir``), each removal logged with its size."""
    folders = [runner.work_dir]
    for hook in runner.hooks:
        out_dir = getattr(hook, 'out_dir', None) if isinstance(hook, CheckpointHook) else None
        if isinstance(out_dir, str) and '://' not in out_dir:
            folders.append(out_dir)
    seen = set()
    for folder in folders:
        if osp.realpath(folder) in seen:
            continue
        seen.add(osp.realpath(folder))
        for path, size in remove_stale_temporary_files(folder):
            runner.logger.warning(f'removed {path} ({format_size(size)}): the temporary file of '
                                  'a checkpoint write that was killed before it finished')


def refuse_rank0_save_of_shards(runner):
    """mmengine's ``Runner`` saves on rank 0 alone, from the wrapped module's state: under
    FSDP that is rank 0's shards (1-D, part of each weight) and its part of the optimiser,
    a file that looks like a checkpoint and is not the model. ``FlexibleRunner`` (a
    ``strategy``) gathers the whole state on every rank first."""
    if isinstance(runner.model, FullyShardedDataParallel) and not hasattr(runner, 'strategy'):
        raise RuntimeError('an FSDP model saved by mmengine\'s Runner: its checkpoint would hold '
                           'rank 0\'s shards, not the model; train with tools/train.py --fsdp '
                           '(FlexibleRunner and FSDPStrategy)')
