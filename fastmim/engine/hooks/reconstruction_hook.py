"""Pictures of the reconstructions during pre-training, written next to the checkpoints."""
import os
import os.path as osp

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.runner import IterBasedTrainLoop
from PIL import Image

from fastmim.engine.runner_model import bare_model, whole_parameters
from fastmim.checks import check_positive_int
from fastmim.registry import HOOKS
from fastmim.visualization import draw_reconstructions

CHECKPOINT_KEY = 'reconstruction_inputs'


@HOOKS.register_module()
class ReconstructionVisualizationHook(Hook):
    """Every ``interval`` epochs and at the end of training, draws what the model reconstructs.

    The images are the first ``num_images`` of the first training batch the run sees, kept on
    the CPU as the model's data preprocessor gives them (decoded with ``decode='device'``), so
    every picture shows the same images. They are saved in each checkpoint
    (``checkpoint['reconstruction_inputs']``) and a run resumed from it draws them again, not
    its own first batch (a later epoch's), so the pictures of a requeued run match the
    uninterrupted run's. The mask is drawn with a fixed ``seed`` (and the random state
    restored), so it is the same mask too, and training's random streams are not disturbed.
    The model runs in eval mode without gradients and goes back to its previous mode
    afterwards. Only rank 0 draws; the pictures are
    ``<work_dir>/<out_dir>/epoch_<n>_<i>.png`` (``iter_<n>_<i>.png`` at the end of an
    iteration-based run), see :func:`fastmim.visualization.make_reconstruction_panel`.

    Args:
        interval (int): Draw after every ``interval`` epochs.
        num_images (int): How many images of the batch to draw; a smaller batch (per process)
            draws all of its images, with a warning.
        out_dir (str): Folder of the pictures, relative to the work dir unless absolute.
        seed (int): Seed of the visualisation mask.
        cell_px (int): Drawn size of one target cell.
    """

    priority = 'LOW'

    def __init__(self, interval=10, num_images=4, out_dir='vis', seed=0, cell_px=16):
        self.interval = check_positive_int(type(self).__name__, 'interval', interval)
        self.num_images = check_positive_int(type(self).__name__, 'num_images', num_images)
        self.out_dir = out_dir
        self.seed = seed
        self.cell_px = cell_px
        self._inputs = None
        self._last_tag = None

    def before_train(self, runner):
        """Refuse a model that cannot reconstruct (a fine-tuning classifier) now: the first
        picture is drawn only after ``interval`` epochs, and its error would come before that
        epoch's checkpoint is saved."""
        model = bare_model(runner)
        if not callable(getattr(model, 'reconstruct', None)):
            raise ValueError(f'ReconstructionVisualizationHook: {type(model).__name__} has no '
                            'reconstruct(), only a FastMIM pre-training model can be drawn; '
                            'remove the hook from custom_hooks')

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if self._inputs is None and data_batch is not None and is_main_process():
            # JpegDecodePreprocessor decodes JPEG bytes (decode='device') with their samples'
            # crop boxes: keep the samples that match the kept inputs.
            batch = {key: data_batch[key][:self.num_images]
                     for key in ('inputs', 'data_samples') if data_batch.get(key) is not None}
            with torch.no_grad():
                inputs = bare_model(runner).data_preprocessor(batch, False)['inputs']
            self._inputs = inputs.detach().cpu()
            if len(inputs) < self.num_images:
                runner.logger.warning(
                    f'ReconstructionVisualizationHook: num_images={self.num_images}, but a '
                    f'training batch holds {len(inputs)} images on this process: every picture '
                    f'will show those {len(inputs)}; lower num_images to silence this')

    def before_save_checkpoint(self, runner, checkpoint):
        if self._inputs is not None:
            checkpoint[CHECKPOINT_KEY] = self._inputs

    def after_load_checkpoint(self, runner, checkpoint):
        if runner._resume and CHECKPOINT_KEY in checkpoint:  # load_from starts a new run
            self._inputs = checkpoint[CHECKPOINT_KEY]

    def after_train_epoch(self, runner):
        if self.every_n_epochs(runner, self.interval):
            self._draw(runner, f'epoch_{runner.epoch + 1}')

    def after_train(self, runner):
        if isinstance(runner.train_loop, IterBasedTrainLoop):
            tag = f'iter_{runner.iter}'
        else:
            tag = f'epoch_{runner.epoch}'
        if tag != self._last_tag:
            self._draw(runner, tag)

    def _draw(self, runner, tag):
        """Every rank enters: under FSDP each holds a shard of the weights, and gathering them
        whole is a collective; then rank 0 draws."""
        with whole_parameters(runner.model):
            self._draw_on_rank0(runner, tag)
        self._last_tag = tag  # on every rank: after_train then draws on all ranks or none

    def _draw_on_rank0(self, runner, tag):
        if not is_main_process():
            return
        if self._inputs is None:
            runner.logger.warning('ReconstructionVisualizationHook: no training batch seen yet, '
                                  f'nothing drawn for {tag}')
            return
        model = bare_model(runner)
        inputs = model.data_preprocessor.cast_data(self._inputs)
        panels = draw_reconstructions(model, inputs, seed=self.seed, cell_px=self.cell_px)

        out_dir = osp.join(runner.work_dir, self.out_dir)
        os.makedirs(out_dir, exist_ok=True)
        paths = []
        for index, panel in enumerate(panels):
            path = osp.join(out_dir, f'{tag}_{index}.png')
            Image.fromarray(panel).save(path)
            paths.append(path)
        runner.logger.info(f'reconstruction pictures: {", ".join(paths)}')
