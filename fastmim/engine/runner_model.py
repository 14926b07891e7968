"""The runner's model without its distributed wrapper, and with its parameters whole."""
import contextlib

from mmengine.model import is_model_wrapper
from torch.distributed.fsdp import FullyShardedDataParallel


def bare_model(runner):
    """``runner.model``, or the model inside it when DDP / FSDP (any of mmengine's registered
    wrappers) wraps it: hooks read the model's own attributes, which a wrapper does not pass
    through."""
    model = runner.model
    return model.module if is_model_wrapper(model) else model


def whole_parameters(model):
    """A context in which an FSDP-wrapped ``model``'s module holds its parameters whole (torch's
    ``summon_full_params``; a collective, entered on every rank, as hooks run), so that shapes
    compare with a checkpoint's: outside it they are 1-D views of this rank's shard, and
    ``--resume`` refused its own FSDP checkpoint ('mask_token: checkpoint (1, 3, 1, 1) vs model
    (3,)'). Any other model is left as it is."""
    if isinstance(model, FullyShardedDataParallel):
        return FullyShardedDataParallel.summon_full_params(model, writeback=False)
    return contextlib.nullcontext()
