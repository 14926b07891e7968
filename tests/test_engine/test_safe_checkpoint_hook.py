"""SafeCheckpointHook: a run that saves checkpoints logs no warning of mmengine's own making."""
import logging

from mmengine.runner import Runner

import fastmim  # noqa: F401  registers modules


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_saving_checkpoints_warns_nothing_about_mmengine_s_file_client(tmp_path,
                                                                        tiny_pretraining):
    """mmengine 0.10's CheckpointHook and save_checkpoint build a FileClient they do not use
    (no file_client_args): '"FileClient" will be deprecated' and '"HardDiskBackend" is the
    alias of "LocalBackend"' on every run, about nothing a config sets; left out by
    fastmim.engine.unused_file_client (tests/test_engine/test_unused_file_client.py)."""
    cfg = tiny_pretraining(tmp_path, batch_size=2, num_samples=4, max_epochs=1)
    cfg['optim_wrapper'] = dict(optimizer=dict(type='AdamW', lr=1e-3))
    cfg['default_hooks'] = dict(checkpoint=dict(type='SafeCheckpointHook', interval=1))
    runner = Runner.from_cfg(cfg)
    records = Records()
    runner.logger.addHandler(records)
    runner.train()
    assert (tmp_path / 'epoch_1.pth').is_file()
    assert not [message for message in records.messages
                if 'FileClient' in message or 'HardDiskBackend' in message], records.messages
