"""Make every checkpoint hold plain types and the geometry of the model that wrote it."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from fastmim.engine.checkpoint import from_plain, to_plain
from fastmim.registry import HOOKS


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
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if hasattr(model, 'geometry'):
            checkpoint.setdefault('meta', {})['geometry'] = model.geometry()
        for key in list(checkpoint):
            if key != 'state_dict':
                checkpoint[key] = to_plain(checkpoint[key], f'checkpoint[{key!r}]')

    def after_load_checkpoint(self, runner, checkpoint):
        for key in list(checkpoint):
            if key != 'state_dict':
                checkpoint[key] = from_plain(checkpoint[key])
