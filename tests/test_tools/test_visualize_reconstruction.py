"""tools/visualize/visualize_reconstruction.py: the input size it draws at by default."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastmim.apis import get_model, reconstruct
from fastmim.registry import MODELS

pytestmark = pytest.mark.usefixtures('one_thread')

TOOL = Path(__file__).resolve().parents[2] / 'tools' / 'visualize' / 'visualize_reconstruction.py'


def write_run(folder, backbone):
    """A config with ``backbone`` and a checkpoint of its (random) FastMIM model."""
    model_cfg = dict(type='FastMIM', backbone=backbone,
                     neck=dict(type='MIMDecoder', embed_dim=32, depth=1, num_heads=2),
                     target_generator=dict(type='HOGGenerator'), mask_ratio=0.75, block_size=16)
    config = folder / 'tiny.py'
    config.write_text(f"default_scope = 'fastmim'\nmodel = {model_cfg!r}\n")
    torch.manual_seed(0)
    checkpoint = folder / 'tiny.pth'
    torch.save({'state_dict': MODELS.build(model_cfg).state_dict(), 'meta': {}}, checkpoint)
    return str(config), str(checkpoint)


def test_default_input_size_is_the_backbones(tmp_path, load_script):
    """The help said 'default 128, the pre-training size', but 128 was drawn whatever size the
    config pre-trains at (the 96- and 224-px ablations, this 48-px ViT)."""
    config, checkpoint = write_run(tmp_path, dict(
        type='VisionTransformer', img_size=48, arch=dict(embed_dim=32, depth=1, num_heads=2)))
    photo = tmp_path / 'photo.png'
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 50, 3), np.uint8)).save(photo)

    load_script(TOOL).main([config, checkpoint, '--img', str(photo), '--out-dir',
                            str(tmp_path / 'vis')])

    drawn = np.asarray(Image.open(tmp_path / 'vis' / 'photo.png'))
    expected = reconstruct(get_model(config, checkpoint), str(photo), input_size=48)
    np.testing.assert_array_equal(drawn, expected)


def test_a_backbone_without_img_size_asks_for_input_size(tmp_path, load_script):
    config, checkpoint = write_run(tmp_path, dict(type='TimmBackbone', model_name='resnet18'))
    with pytest.raises(ValueError, match='TimmBackbone records no img_size .*: give '
                       '--input-size'):
        load_script(TOOL).main([config, checkpoint, '--embedded', '1', '--out-dir',
                                str(tmp_path / 'vis')])
    assert list(tmp_path.glob('vis/*.png')) == []
