"""mmengine's CheckpointHook without its two ways of losing the last good checkpoint."""
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio import get_file_backend
from mmengine.hooks import CheckpointHook

from fastmim.registry import HOOKS


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """``CheckpointHook`` (same arguments) that never leaves a run without a usable checkpoint.

    mmengine 0.10 deletes the oldest kept checkpoint *before* writing the new one (with
    ``max_keep_ckpts=1``, the only one) and writes ``last_checkpoint`` with a plain ``open``:
    a full disk or a kill during the save leaves no checkpoint, or a ``last_checkpoint`` that is
    empty or names a deleted file. Here the new checkpoint is written first, then
    ``last_checkpoint`` (atomically, through the file backend), and only then are checkpoints
    beyond ``max_keep_ckpts`` deleted.

    A resumed run also knows the last checkpoint saved (mmengine's hook forgets it): see
    :meth:`before_train`.
    """

    def before_train(self, runner) -> None:
        """Take the last checkpoint saved from the message hub (restored by ``--resume``).
        mmengine saves the regular checkpoint again when a validation finds a new best score,
        so that it records that best (``best_score``, ``best_ckpt``), but only once this
        process has saved one: after a resume, the first validation's new best (the one
        repeated first, or one before the next regular save) would leave the checkpoint on disk
        with the previous best, and a run resumed from it later would replace the best
        checkpoint by a worse one."""
        super().before_train(runner)
        last = runner.message_hub.get_info('last_ckpt')
        if self.last_ckpt is None and last is not None:
            self.last_ckpt = last

    def _save_checkpoint_with_step(self, runner, step, meta):
        outdated = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            # saved in the checkpoint's message hub, so a resumed run knows what to delete
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, filename, self.file_client_args, save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
            backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return

        last = osp.join(runner.work_dir, 'last_checkpoint')
        get_file_backend(last).put_text(self.last_ckpt, last)
        for old_step in outdated:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old_step))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # DeepSpeed saves folders
                self.file_backend.rmtree(path)
