"""Refuse a test checkpoint that does not give the model every weight it evaluates with.

mmengine loads the checkpoint of ``tools/test.py`` non-strictly and only logs the keys it did
not find. A pre-training checkpoint given to a detection, segmentation or classification config
(a common mix-up: both are "the FastMIM checkpoint") then evaluates a model whose neck and heads
keep their random initialisation, and the run reports mAP, mIoU or top-1 near 0 with exit status
0, as if that were the result. Subtler cases end the same way: a checkpoint trained with
another ``num_classes`` (its classifier is skipped for the shape), or by a sibling config whose
backbone ends differently (a fine-tuned ``fc_norm`` tested with a linear probe's final norm).
Nothing trains at test time, so every weight must come from the file: keys are compared after
each backbone's own adaptation (``adapt_state_dict``: renames, resized position embeddings,
buffers it rebuilds), as loading will see them.
"""
from typing import Dict, Tuple

from mmengine.hooks import Hook

from fastmim.engine.runner_model import bare_model
from fastmim.errors import CheckpointError
from fastmim.load_problems import (LoadProblems, modules_without_weights, shapes,
                                   top_level_names)
from fastmim.registry import HOOKS

# torch's BatchNorm fills in a missing ``num_batches_tracked`` (files of older torch versions);
# it takes no part in evaluation.
FILLED_IN_BY_TORCH = ('num_batches_tracked', )


def compared_shapes(model, state: Dict[str, object]) -> Tuple[Dict[str, tuple],
                                                               Dict[str, tuple]]:
    """``(given, expected)``: the shapes of ``state`` once each backbone has adapted its part
    as its load hook will (a leading ``module.`` of a DDP-wrapped save removed), and the shapes
    of the model's weights that loading fills. Keys a backbone rebuilds itself (its adaptation
    drops them from its own state: a sin-cos position embedding) are not expected."""
    # Imported here: fastmim.models loads every model and timm, which `import fastmim` need not.
    from fastmim.models.utils.pretrained import adapt_for_backbones
    own = model.state_dict()
    _, rebuilt = adapt_for_backbones(own, model)
    adapted, _ = adapt_for_backbones(
        {key.removeprefix('module.'): value for key, value in state.items()}, model)
    expected = {key: shape for key, shape in shapes(own).items()
                if key not in rebuilt
                and (not key.endswith(FILLED_IN_BY_TORCH) or key in adapted)}
    return shapes(adapted), expected


def weights_that_do_not_fit(model, state: Dict[str, object],
                            judge_unexpected: bool = False) -> LoadProblems:
    """The model's weights that ``state`` lacks or gives in another shape
    (:func:`compared_shapes`). Keys of ``state`` the model does not have are judged only with
    ``judge_unexpected`` (testing ignores them; resuming must not)."""
    problems = LoadProblems.compare(*compared_shapes(model, state))
    if not judge_unexpected:
        problems.unexpected = []
    return problems


@HOOKS.register_module()
class CheckpointFitsModelHook(Hook):
    """Added by ``tools/test.py``: raises :class:`CheckpointError` when the checkpoint it
    evaluates holds no weights for a top-level module of the model, or lacks or misshapes
    single weights (see the module docstring), before they are loaded and the test runs."""

    priority = 'VERY_HIGH'

    def __init__(self, checkpoint: str):
        self.checkpoint = checkpoint

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Imported here, as in compared_shapes.
        from fastmim.models.utils.reference import refuse_an_unconverted_release_file
        model = bare_model(runner)
        refuse_an_unconverted_release_file(checkpoint, self.checkpoint, 'test OUT')
        state = checkpoint.get('state_dict', checkpoint)
        absent = modules_without_weights(model.state_dict().keys(), state.keys())
        if absent:
            found = sorted(top_level_names(state))
            raise CheckpointError(
                f'{self.checkpoint} holds no weights for {", ".join(absent)} of the '
                f'{type(model).__name__} (it holds {", ".join(found)}): a pre-training or '
                'backbone checkpoint? tools/test.py evaluates a checkpoint trained with this '
                'config (tools/train.py); a pre-trained backbone goes into '
                'model.backbone.init_cfg.checkpoint')
        problems = weights_that_do_not_fit(model, state)
        if problems:
            raise CheckpointError(
                problems.message(self.checkpoint, type(model).__name__,
                                 'tools/test.py evaluates with its weights only') +
                '\nWas it trained with another config (num_classes, the backbone\'s last norm, '
                'the arch)? Test it with the config that trained it.')
