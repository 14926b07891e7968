"""Refuse a test checkpoint that holds no weights for whole parts of the model.

mmengine loads the checkpoint of ``tools/test.py`` non-strictly and only logs the keys it did
not find. A pre-training checkpoint given to a detection, segmentation or classification config
(a common mix-up: both are "the FastMIM checkpoint") then evaluates a model whose neck and heads
keep their random initialisation, and the run reports mAP, mIoU or top-1 near 0 with exit status
0, as if that were the result. A whole top-level module without a single weight in the file is
that mistake; single keys are not judged, since a backbone may rebuild some of its buffers.
"""
from typing import List

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from fastmim.errors import CheckpointError
from fastmim.registry import HOOKS


def modules_without_weights(model_keys, checkpoint_keys) -> List[str]:
    """Top-level modules (the first part of a key) of the model that no checkpoint key names,
    in the model's order; a leading ``module.`` (a DDP-wrapped save) is ignored."""
    provided = {key.removeprefix('module.').split('.', 1)[0] for key in checkpoint_keys}
    modules = dict.fromkeys(key.split('.', 1)[0] for key in model_keys)  # ordered, unique
    return [module for module in modules if module not in provided]


@HOOKS.register_module()
class CheckpointFitsModelHook(Hook):
    """Added by ``tools/test.py``: raises :class:`CheckpointError` when the checkpoint it
    evaluates holds no weights for a top-level module of the model (see the module
    docstring), before those weights are loaded and the test runs."""

    priority = 'VERY_HIGH'

    def __init__(self, checkpoint: str):
        self.checkpoint = checkpoint

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state = checkpoint.get('state_dict', checkpoint)
        absent = modules_without_weights(model.state_dict().keys(), state.keys())
        if absent:
            found = sorted({key.split('.', 1)[0] for key in state})
            raise CheckpointError(
                f'{self.checkpoint} holds no weights for {", ".join(absent)} of the '
                f'{type(model).__name__} (it holds {", ".join(found)}): a pre-training or '
                'backbone checkpoint? tools/test.py evaluates a checkpoint trained with this '
                'config (tools/train.py); a pre-trained backbone goes into '
                'model.backbone.init_cfg.checkpoint')
