"""tools/test.py CHECKPOINT given as a work dir's last_checkpoint, and an --out that names one
of the tool's own inputs."""
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'configs' / 'finetune' / 'demo_vit_tiny_embedded_ft.py'
# Four photos, read in this process.
SMALL_TEST = ['test_dataloader.dataset.num_samples=4', 'test_dataloader.num_workers=0',
              'test_dataloader.persistent_workers=False']


@pytest.fixture
def copied_work_dir(tmp_path):
    """A fine-tuning work dir copied elsewhere: its last_checkpoint still names the checkpoint
    at the old place, which is gone."""
    from fastmim.apis import get_model
    old = tmp_path / 'old_place'
    old.mkdir()
    model = get_model(str(CONFIG), **{'backbone.init_cfg': None})
    torch.save(dict(state_dict=model.state_dict()), old / 'epoch_10.pth')
    (old / 'last_checkpoint').write_text(str(old / 'epoch_10.pth'))
    work_dir = shutil.copytree(old, tmp_path / 'copy')
    shutil.rmtree(old)
    return Path(work_dir)


def test_last_checkpoint_tests_the_checkpoint_it_names(load_script, copied_work_dir, tmp_path):
    """mmengine's note of a run's newest checkpoint (a text file) was refused as 'not a readable
    checkpoint (truncated or corrupt?)'."""
    out = tmp_path / 'metrics.json'
    metrics = load_script(ROOT / 'tools' / 'test.py').main([
        str(CONFIG), str(copied_work_dir / 'last_checkpoint'), '--out', str(out),
        '--work-dir', str(tmp_path / 'test_run'), '--cfg-options', *SMALL_TEST])
    assert set(metrics) == {'accuracy/top1', 'accuracy/top5'}
    assert json.loads(out.read_text()) == pytest.approx(metrics)


@pytest.mark.parametrize('which', ['checkpoint', 'config'])
def test_an_out_that_names_an_input_is_refused_before_the_evaluation(load_script, tmp_path,
                                                                     which):
    """The metrics JSON replaced the checkpoint (or the config) after the evaluation: a typo
    or a completion of the wrong file lost the weights."""
    checkpoint = tmp_path / 'epoch_10.pth'
    with zipfile.ZipFile(checkpoint, 'w') as archive:  # a whole archive, never loaded
        archive.writestr('note', 'not loaded: --out is checked first')
    config = tmp_path / 'ft.py'
    config.write_text(f"_base_ = ['{CONFIG}']\n")
    out = {'checkpoint': checkpoint, 'config': config}[which]
    before = out.read_bytes()
    with pytest.raises(ValueError, match=f'^--out {out} is {which.upper()} itself: writing it '
                                         f'would replace the original; give another --out$'):
        load_script(ROOT / 'tools' / 'test.py').main([
            str(config), str(checkpoint), '--out', str(out),
            '--work-dir', str(tmp_path / 'test_run')])
    assert out.read_bytes() == before
    assert not os.path.exists(tmp_path / 'test_run')


def test_the_training_config_in_the_work_dir_is_kept(load_script, copied_work_dir):
    """The default work dir of a test is the training's; mmengine's Runner wrote the test's
    config (load_from, --cfg-options) over the training's record of how it trained."""
    record = copied_work_dir / CONFIG.name
    training_record = "# the config of the training run\nwork_dir = 'work_dirs/demo_ft'\n"
    record.write_text(training_record)
    checkpoint = copied_work_dir / 'epoch_10.pth'
    load_script(ROOT / 'tools' / 'test.py').main([
        str(CONFIG), str(checkpoint), '--work-dir', str(copied_work_dir),
        '--cfg-options', 'test_dataloader.batch_size=13', *SMALL_TEST])
    assert record.read_text() == training_record
    logs = list(copied_work_dir.glob('*/*.log'))
    assert len(logs) == 1 and f"load_from = '{checkpoint}'" in logs[0].read_text()


def test_a_config_an_earlier_test_wrote_is_replaced(load_script, copied_work_dir, tmp_path):
    """A work dir of tests only (kNN) shows the config of the latest, as mmengine writes it."""
    work_dir = tmp_path / 'tests_only'
    for batch_size in (13, 20):
        load_script(ROOT / 'tools' / 'test.py').main([
            str(CONFIG), str(copied_work_dir / 'epoch_10.pth'), '--work-dir', str(work_dir),
            '--cfg-options', f'test_dataloader.batch_size={batch_size}', *SMALL_TEST])
    assert 'batch_size=20' in (work_dir / CONFIG.name).read_text()


def test_an_evaluation_stops_with_its_launcher(tmp_path, load_script, monkeypatch):
    """tools/test.py did not ask to be stopped with torchrun: killed with kill -9, torchrun
    left its evaluation processes running on (tools/train.py asked already)."""
    from fastmim.engine import launcher_lifecycle
    asked = []

    def stop_with_the_launcher(launcher):
        asked.append(launcher)
        raise KeyboardInterrupt  # nothing more of the evaluation is needed here
    monkeypatch.setattr(launcher_lifecycle, 'stop_with_the_launcher', stop_with_the_launcher)
    tool = load_script(ROOT / 'tools' / 'test.py')
    with pytest.raises(KeyboardInterrupt):
        tool.main([str(CONFIG), str(tmp_path / 'epoch_1.pth'), '--launcher', 'none'])
    assert asked == ['none']
