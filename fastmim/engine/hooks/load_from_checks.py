"""What ``load_from`` without ``--resume`` loads, checked before it does.

mmengine loads a ``load_from`` file non-strictly: the keys it leaves out and the shapes it
skips are only printed to stdout, never to the work dir's log, and a file of another model
size or kind trains from random weights with exit status 0. A partial fit is often meant (a
COCO detector loaded with another ``num_classes``, its heads left out), so only a file that
fits none of the model's weights, or only a few whose shape no model size sets (a
``mask_token`` of 3 pixel values, an output bias: under :data:`TOO_LITTLE` of the model's
values), is refused; what a partial fit leaves out is logged once.
:class:`~.resume_checks.ResumeChecksHook` runs :func:`check_loaded_weights` when a checkpoint
has been read without resuming.
"""
import logging
import math

from mmengine.logging import print_log

from fastmim.engine.runner_model import bare_model, whole_parameters
from fastmim.errors import CheckpointError
from fastmim.load_problems import LoadProblems, listing, top_level_names

from .checkpoint_fit_hook import CheckpointFitsModelHook, compared_shapes

# How many of the weights that do not fit a refusal names.
NAMED_IN_A_REFUSAL = 3
# The share of the model's values under which what fits is no start: a checkpoint of another
# model size fits its few size-independent weights alone (far under 1 %), a detector of
# another num_classes all but its heads, a pre-trained backbone most of a detector.
TOO_LITTLE = 0.01


def check_loaded_weights(runner, checkpoint: dict) -> None:
    """Refuse a ``load_from`` file that gives the model none of its weights, or too few to
    start from (:data:`TOO_LITTLE`); log one warning naming what the others leave out.
    ``tools/test.py``'s :class:`CheckpointFitsModelHook`, which wants every weight, speaks
    instead where it is there."""
    if any(isinstance(hook, CheckpointFitsModelHook) for hook in runner.hooks):
        return
    path = runner._load_from  # mmengine keeps it private
    state = checkpoint.get('state_dict', checkpoint)
    tensors = {key: value for key, value in state.items() if hasattr(value, 'shape')}
    with whole_parameters(runner.model):
        model = bare_model(runner)
        given, expected = compared_shapes(model, tensors)
    fitting = [key for key, shape in given.items() if expected.get(key) == shape]
    problems = LoadProblems.compare(given, expected)
    name = type(model).__name__
    fitting_values = sum(math.prod(given[key]) for key in fitting)
    if fitting_values < TOO_LITTLE * sum(map(math.prod, expected.values())):
        loaded = f'only {listing(fitting)}' if fitting else 'none of its weights'
        raise CheckpointError(
            f'{path} gives the {name} {loaded} (load_from): the file holds '
            f'{", ".join(top_level_names(state, count=True))}, the model '
            f'{", ".join(top_level_names(expected, count=True))}'
            + _first_problems(problems) +
            '. A checkpoint of another model size or kind: train from it with the config that '
            'wrote it, or load_from a checkpoint of this config\'s model; a pre-trained '
            "backbone goes into model.backbone.init_cfg (type='FastMIMPretrained', "
            'checkpoint=...)')
    if problems:
        print_log(problems.message(
            path, name, f'load_from loads {len(fitting)} of its {len(expected)} weights, the '
            'others keep their initialisation'),
            logger='current', level=logging.WARNING)


def _first_problems(problems: LoadProblems) -> str:
    """The first few mismatched shapes or missing weights, for a refusal."""
    named = (problems.mismatched or problems.missing)[:NAMED_IN_A_REFUSAL]
    return f' (first that do not fit: {listing(named)})' if named else ''
