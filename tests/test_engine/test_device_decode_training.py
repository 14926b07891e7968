"""Pre-training with the JPEGs decoded by the model's data preprocessor (the nvJPEG option,
here on the CPU): two iterations through the Runner on a folder of real photos, and
tools/train.py refusing the option without its preprocessor."""
import math
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.runner import Runner

import fastmim  # noqa: F401  registers modules, safe checkpoint I/O
from fastmim.benchmark.pipeline_speed import write_jpeg_photos
from fastmim.models.data_preprocessors import JpegDecodePreprocessor

ROOT = Path(__file__).resolve().parents[2]
NVJPEG_CONFIG = ROOT / 'configs' / 'fastmim' / 'vit_b_hog_800e_nvjpeg.py'


def device_pipeline(size):
    """The shipped nvJPEG recipe's pipeline, cropping to ``size``."""
    pipeline = Config.fromfile(str(NVJPEG_CONFIG)).train_pipeline
    pipeline[1].size = size
    return pipeline


def test_pretraining_decodes_on_the_device_for_two_iterations(tmp_path, tiny_pretraining,
                                                              monkeypatch):
    folder = tmp_path / 'data' / 'train'
    folder.mkdir(parents=True)
    write_jpeg_photos(str(folder), 96, limit=4)
    cfg = tiny_pretraining(tmp_path / 'work', batch_size=2, num_samples=4, max_epochs=1)
    cfg['train_dataloader']['dataset'] = dict(type='ImageFolder', data_root=str(tmp_path / 'data'),
                                              data_prefix='train', pipeline=device_pipeline(32))
    cfg['model']['data_preprocessor'] = dict(type='JpegDecodePreprocessor')
    cfg['optim_wrapper'] = dict(optimizer=dict(type='AdamW', lr=1e-3))

    decoded = []
    decode_jpegs = JpegDecodePreprocessor.decode_jpegs

    def counting(self, inputs, data_samples):
        decoded.append(sum(item.dim() == 1 for item in inputs))
        return decode_jpegs(self, inputs, data_samples)

    monkeypatch.setattr(JpegDecodePreprocessor, 'decode_jpegs', counting)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2 and decoded == [2, 2]  # every JPEG went through the preprocessor
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert math.isfinite(loss) and loss > 0


def test_train_tool_refuses_device_decoding_without_its_preprocessor(tmp_path, load_script):
    train_tool = load_script(ROOT / 'tools' / 'train.py')
    with pytest.raises(ValueError, match=r"model\.data_preprocessor\.type must be "
                                         r"'JpegDecodePreprocessor'"):
        train_tool.main([str(ROOT / 'configs' / 'fastmim' / 'vit_b_hog_800e.py'),
                         '--work-dir', str(tmp_path), '--cfg-options',
                         'train_dataloader.dataset.pipeline.1.decode=device',
                         'train_dataloader.dataset.pipeline.2.type=RandomHorizontalFlip'])
