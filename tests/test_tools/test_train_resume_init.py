"""tools/train.py --resume does not load the pre-trained weights a resumed run overwrites."""
from pathlib import Path

import pytest
from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[2]
FINETUNE = ROOT / 'configs' / 'finetune' / 'demo_vit_tiny_embedded_ft.py'


def finetune_config(work_dir, resume):
    cfg = Config.fromfile(str(FINETUNE))
    cfg.model.backbone.init_cfg.checkpoint = str(work_dir.parent / 'moved' / 'epoch_12.pth')
    cfg.work_dir, cfg.resume, cfg.load_from = str(work_dir), resume, None
    return cfg


def test_a_resumed_fine_tuning_does_not_need_the_pre_training_file(tmp_path, train):
    """mmengine initialises before it resumes: a pre-training file cleaned up since the run
    started stopped the resume with 'checkpoint not found'."""
    work_dir = tmp_path / 'ft'
    work_dir.mkdir()
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_3.pth'))
    cfg = finetune_config(work_dir, resume=True)
    train.skip_pretrained_init_when_resuming(cfg)
    assert cfg.model.backbone.init_cfg is None


@pytest.mark.parametrize('resume, saved', [(False, True), (True, False)],
                         ids=['not resuming', 'nothing to resume yet'])
def test_a_run_that_starts_from_the_beginning_keeps_its_pre_trained_init(tmp_path, train,
                                                                         resume, saved):
    work_dir = tmp_path / 'ft'
    work_dir.mkdir()
    if saved:
        (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_3.pth'))
    cfg = finetune_config(work_dir, resume)
    train.skip_pretrained_init_when_resuming(cfg)
    assert cfg.model.backbone.init_cfg.type == 'FastMIMPretrained'
