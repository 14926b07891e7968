"""Make every checkpoint hold plain types and the geometry of the model that wrote it."""

from mmengine.hooks import Hook
from torch.distributed.fsdp import FullyShardedDataParallel

from fastmim.engine.checkpoint import from_plain, to_plain
from fastmim.engine.optim_wrappers.guarded import drop_skipped_logs
from fastmim.engine.runner_model import bare_model, whole_parameters
from fastmim.registry import HOOKS

from .resume_checks import (check_resumed_model, drop_executable_config, resumed_path,
                            warn_if_finished, warn_kept_optimisation)


@HOOKS.register_module()
class CheckpointMetaHook(Hook):
    """Converts checkpoints to plain types on save and back on load; records geometry; checks
    a checkpoint read for ``--resume`` before mmengine loads it (:mod:`.resume_checks`).

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
    """

    priority = 'LOWEST'

    def before_save_checkpoint(self, runner, checkpoint):
        refuse_rank0_save_of_shards(runner)
        drop_skipped_logs(runner.optim_wrapper, checkpoint['message_hub']['log_scalars'])
        model = bare_model(runner)
        if hasattr(model, 'geometry'):
            checkpoint.setdefault('meta', {})['geometry'] = model.geometry()
        for key in list(checkpoint):
            if key != 'state_dict':
                checkpoint[key] = to_plain(checkpoint[key], f'checkpoint[{key!r}]')

    def after_load_checkpoint(self, runner, checkpoint):
        for key in list(checkpoint):
            if key != 'state_dict':
                checkpoint[key] = from_plain(checkpoint[key])
        if runner._resume:  # mmengine has no public flag; load_from alone reads weights only
            path = resumed_path(runner)
            drop_executable_config(checkpoint, path)
            with whole_parameters(runner.model):
                check_resumed_model(bare_model(runner), checkpoint, path)
            warn_kept_optimisation(runner, checkpoint, path)
            warn_if_finished(runner, checkpoint, path)


def refuse_rank0_save_of_shards(runner):
    """mmengine's ``Runner`` saves on rank 0 alone, from the wrapped module's state: under
    FSDP that is rank 0's shards (1-D, part of each weight) and its part of the optimiser,
    a file that looks like a checkpoint and is not the model. ``FlexibleRunner`` (a
    ``strategy``) gathers the whole state on every rank first."""
    if isinstance(runner.model, FullyShardedDataParallel) and not hasattr(runner, 'strategy'):
        raise RuntimeError('an FSDP model saved by mmengine\'s Runner: its checkpoint would hold '
                           'rank 0\'s shards, not the model; train with tools/train.py --fsdp '
                           '(FlexibleRunner and FSDPStrategy)')
