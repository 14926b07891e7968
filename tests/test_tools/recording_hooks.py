"""Hooks that write what a training job under test did, for the resume tests to compare, or
do to it what a cluster does.

Imported by the jobs themselves (``custom_imports=dict(imports=['recording_hooks'])``, this
folder on their PYTHONPATH; the ``train_job`` fixture of conftest.py puts it there), never by
pytest: importing registers the hooks in fastmim's registry. The ``trained_samples`` fixture
reads the files they write.
"""
import json
import os
import signal
import threading
import time

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from fastmim.registry import HOOKS


@HOOKS.register_module()
class SampleLogHook(Hook):
    """Appends (iteration, dataset indices of the batch) of this rank to samples.rank<r>."""

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        indices = [int(s.metainfo['sample_idx']) for s in data_batch['data_samples']]
        with open(f'{runner.work_dir}/samples.rank{get_rank()}', 'a') as f:
            f.write(json.dumps([runner.iter, indices]) + '\n')


@HOOKS.register_module()
class LoadedStateHook(SampleLogHook):
    """Also saves the weights and optimiser state held when training starts to loaded.pth
    (rank 0; whole under FSDP, gathered by every rank): after a resume, what it loaded."""
    priority = 'LOWEST'

    def before_train(self, runner):
        strategy = getattr(runner, 'strategy', None)
        if strategy is not None:
            state = dict(state_dict=strategy.model_state_dict(),
                         optimizer=strategy.optim_state_dict())
        else:
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            state = dict(state_dict=model.state_dict(),
                         optimizer=runner.optim_wrapper.state_dict())
        if get_rank() == 0:
            torch.save(dict(state, iter=runner.iter, epoch=runner.epoch),
                       f'{runner.work_dir}/loaded.pth')


@HOOKS.register_module()
class SignalsAfterTrainingHook(Hook):
    """Sends SIGTERM to its own process once training is complete (``after_run``, after every
    ``after_train``), then every 5 ms until the process has exited, as a cluster that cancels
    a job while it shuts down."""

    def after_run(self, runner):
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Thread(target=self._signal_again, daemon=True).start()

    @staticmethod
    def _signal_again():
        while True:
            time.sleep(0.005)
            os.kill(os.getpid(), signal.SIGTERM)
