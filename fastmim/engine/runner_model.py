"""The runner's model without its distributed wrapper."""
from mmengine.model import is_model_wrapper


def bare_model(runner):
    """``runner.model``, or the model inside it when DDP / FSDP (any of mmengine's registered
    wrappers) wraps it: hooks read the model's own attributes, which a wrapper does not pass
    through."""
    model = runner.model
    return model.module if is_model_wrapper(model) else model
