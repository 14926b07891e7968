"""Make every checkpoint hold plain types and the geometry of the model that wrote it."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import find_latest_checkpoint

from fastmim.engine.checkpoint import from_plain, to_plain
from fastmim.errors import CheckpointError
from fastmim.registry import HOOKS

from .checkpoint_fit_hook import weights_that_do_not_fit


@HOOKS.register_module()
class CheckpointMetaHook(Hook):
    """Converts checkpoints to plain types on save and back on load; records geometry.

    Runs last before a save (priority ``LOWEST``) so that whatever other hooks add is converted
    too. ``meta['geometry']`` is ``model.geometry()`` when the model has one: fine-tuning and
    downstream loading read the source input size, patch and window sizes from it instead of
    asking the user to restate them.
    """

    priority = 'LOWEST'

    def before_save_checkpoint(self, runner, checkpoint):
        model = _unwrapped(runner)
        if hasattr(model, 'geometry'):
            checkpoint.setdefault('meta', {})['geometry'] = model.geometry()
        for key in list(checkpoint):
            if key != 'state_dict':
                checkpoint[key] = to_plain(checkpoint[key], f'checkpoint[{key!r}]')

    def after_load_checkpoint(self, runner, checkpoint):
        for key in list(checkpoint):
            if key != 'state_dict':
                checkpoint[key] = from_plain(checkpoint[key])
        if runner._resume:
            _check_resumed_model(runner, checkpoint)


def _unwrapped(runner):
    return runner.model.module if is_model_wrapper(runner.model) else runner.model


def _check_resumed_model(runner, checkpoint) -> None:
    """A resumed run continues the model of its checkpoint, so every weight must fit. mmengine
    loads the weights non-strictly (a checkpoint of another model size, from a work dir shared
    by two configs, only logs its mismatches) and then the optimiser state of other shapes:
    the first update ends in a RuntimeError deep in the optimiser, or a segmentation fault;
    fewer blocks fail with 'loaded state dict has a different number of parameter groups'."""
    model, state = _unwrapped(runner), checkpoint['state_dict']
    problems = weights_that_do_not_fit(model, state)
    own = model.state_dict()
    problems.unexpected = [f'{key} {tuple(value.shape)}' for key, value in state.items()
                           if key.removeprefix('module.') not in own]
    if problems:
        raise CheckpointError(
            problems.message(runner._load_from or find_latest_checkpoint(runner.work_dir),
                             type(model).__name__, '--resume continues the model it holds') +
            '\nWas it written with another config (model size) in the same work dir? Resume '
            'with the config that wrote it, or use another --work-dir')
