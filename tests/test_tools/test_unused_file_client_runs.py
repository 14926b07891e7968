"""tools/train.py, tools/test.py and tools/demo.py as a user runs them print none of mmengine's
notices about the FileClient it builds and does not use, with mmengine's own CheckpointHook
and a LoggerHook copying the logs to ``out_dir`` (the builds that fastmim's
SafeCheckpointHook never covered), while their other warnings are still printed."""
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / 'configs' / 'fastmim' / 'demo_vit_tiny_embedded.py'
FINETUNE_DEMO = ROOT / 'configs' / 'finetune' / 'demo_vit_tiny_embedded_ft.py'
NOTICES = ('"FileClient" will be deprecated', '"HardDiskBackend" is the alias')
# Batches of 2 below the hook's 4 pictures: a warning of the run's own logger.
UNRELATED_WARNING = 'ReconstructionVisualizationHook: num_images=4, but a training batch holds 2'


def mmengine_hooks(folder):
    return ['default_hooks.checkpoint.type=CheckpointHook',
            f'default_hooks.logger.out_dir={folder / "copied_logs"}']


def printed(result):
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def assert_no_notice(output):
    noticed = [line for line in output.splitlines()
               if any(notice in line for notice in NOTICES)]
    assert not noticed, noticed


@pytest.mark.parametrize('tool', ['train.py', 'demo.py'])
def test_training_prints_no_unused_file_client_notice(runs, tiny_demo, tmp_path, tool):
    config = [] if tool == 'demo.py' else [str(DEMO)]
    output = printed(runs.run([*config, '--work-dir', str(tmp_path / 'run'), '--cfg-options',
                               'train_cfg.max_epochs=1', *tiny_demo.recorded_options, *mmengine_hooks(tmp_path)],
                              script=tool))
    assert (tmp_path / 'run' / 'epoch_1.pth').is_file()
    assert UNRELATED_WARNING in output
    assert_no_notice(output)


def test_testing_prints_no_unused_file_client_notice(runs, tmp_path):
    from fastmim.apis import get_model
    checkpoint = tmp_path / 'epoch_1.pth'
    model = get_model(str(FINETUNE_DEMO), **{'backbone.init_cfg': None})
    torch.save(dict(state_dict=model.state_dict()), checkpoint)
    output = printed(runs.run([
        str(FINETUNE_DEMO), str(checkpoint), '--work-dir', str(tmp_path / 'test'),
        '--cfg-options', 'test_dataloader.dataset.num_samples=4',
        'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
        *mmengine_hooks(tmp_path)], script='test.py'))
    assert 'accuracy/top1' in output
    assert_no_notice(output)
