"""tools/visualize/visualize_reconstruction.py: the input size it draws at by default, one picture
per image, and a fine-tuned checkpoint named as such."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastmim.apis import get_model, reconstruct
from fastmim.datasets import find_embedded_photos
from fastmim.errors import CheckpointError
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


def test_images_of_one_name_get_a_picture_each(tmp_path, load_script):
    """``x``, ``x`` and ``x_1`` were drawn to ``x.png``, ``x_1.png`` and ``x_1.png``: the third
    panel replaced the second without a word."""
    config, checkpoint = write_run(tmp_path, dict(
        type='VisionTransformer', img_size=32, arch=dict(embed_dim=32, depth=1, num_heads=2)))
    rng = np.random.default_rng(0)
    photos = [tmp_path / 'a' / 'x.png', tmp_path / 'b' / 'x.png', tmp_path / 'c' / 'x_1.png']
    for photo in photos:
        photo.parent.mkdir()
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), np.uint8)).save(photo)

    load_script(TOOL).main([config, checkpoint, '--img', *map(str, photos), '--out-dir',
                            str(tmp_path / 'vis')])

    drawn = sorted(tmp_path.glob('vis/*.png'))
    assert len(drawn) == 3
    panels = reconstruct(get_model(config, checkpoint), list(map(str, photos)))  # one batch
    expected = dict(zip(photos, panels))
    for path in drawn:  # each picture is one photo's, and every photo has one
        matches = [photo for photo, panel in expected.items()
                   if np.array_equal(np.asarray(Image.open(path)), panel)]
        assert len(matches) == 1
        expected.pop(matches[0])
    assert not expected


def test_a_classifier_checkpoint_is_named_as_having_no_decoder(tmp_path, load_script):
    """A fine-tuned checkpoint given with the pre-training config was a list of keys (head.*
    unexpected, neck.* missing) that did not say why: a classifier has no decoder. That reason
    is the whole message: the key list's advice about the backbone's settings is beside it."""
    backbone = dict(type='VisionTransformer', img_size=32,
                    arch=dict(embed_dim=32, depth=1, num_heads=2))
    config, _ = write_run(tmp_path, backbone)
    classifier = MODELS.build(dict(type='ImageClassifier', backbone=backbone,
                                   head=dict(type='LinearClsHead', num_classes=7,
                                             in_channels=32)))
    fine_tuned = tmp_path / 'fine_tuned.pth'
    torch.save({'state_dict': classifier.state_dict(), 'meta': {'geometry':
                                                                classifier.geometry()}},
               fine_tuned)
    # The reason alone: the key list's advice (a ViT's pos_embed_type or final_norm) cannot
    # help, as no setting gives a classifier a decoder.
    with pytest.raises(CheckpointError, match=r'^\S*fine_tuned\.pth holds an image classifier '
                       r'of 7 classes .*no decoder to reconstruct with: give a FastMIM '
                       r'pre-training checkpoint and its config$') as error:
        load_script(TOOL).main([config, str(fine_tuned), '--embedded', '1', '--out-dir',
                                str(tmp_path / 'vis')])
    assert 'pos_embed_type' not in str(error.value) and 'final_norm' not in str(error.value)


def test_earlier_pictures_are_kept_without_overwrite(tmp_path, load_script):
    """A second run into the same --out-dir replaced the first run's pictures without a word."""
    config, checkpoint = write_run(tmp_path, dict(
        type='VisionTransformer', img_size=32, arch=dict(embed_dim=32, depth=1, num_heads=2)))
    photo = tmp_path / 'photo.png'
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8)).save(photo)
    earlier = tmp_path / 'vis' / 'photo.png'
    earlier.parent.mkdir()
    earlier.write_bytes(b'an earlier run')
    command = [config, checkpoint, '--img', str(photo), '--out-dir', str(earlier.parent)]

    with pytest.raises(FileExistsError, match=r'^--out-dir .*vis already holds photo\.png; give '
                       r'another --out-dir, or --overwrite to replace'):
        load_script(TOOL).main(command)
    assert earlier.read_bytes() == b'an earlier run'

    load_script(TOOL).main([*command, '--overwrite'])
    np.testing.assert_array_equal(np.asarray(Image.open(earlier)),
                                  reconstruct(get_model(config, checkpoint), str(photo)))


def test_a_folder_given_to_img_draws_its_images(tmp_path, load_script):
    """--img DIR was refused as 'image is a folder, not a file'."""
    config, checkpoint = write_run(tmp_path, dict(
        type='VisionTransformer', img_size=32, arch=dict(embed_dim=32, depth=1, num_heads=2)))
    rng = np.random.default_rng(0)
    photos = tmp_path / 'photos'
    (photos / 'deeper').mkdir(parents=True)
    for name in ('b.png', 'a.jpg', 'deeper/c.png'):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), np.uint8)).save(photos / name)
    (photos / 'notes.txt').write_text('not an image\n')

    load_script(TOOL).main([config, checkpoint, '--img', str(photos), '--out-dir',
                            str(tmp_path / 'vis')])

    assert sorted(path.name for path in tmp_path.glob('vis/*')) == ['a.png', 'b.png']
    expected = reconstruct(get_model(config, checkpoint), str(photos / 'a.jpg'))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'vis' / 'a.png')), expected)


def test_a_folder_without_images_given_to_img_is_refused(tmp_path, load_script):
    config, checkpoint = write_run(tmp_path, dict(
        type='VisionTransformer', img_size=32, arch=dict(embed_dim=32, depth=1, num_heads=2)))
    with pytest.raises(FileNotFoundError, match=f'--img {tmp_path} is a folder without image '
                       r'files \(\.jpg, '):
        load_script(TOOL).main([config, checkpoint, '--img', str(tmp_path), '--out-dir',
                                str(tmp_path / 'vis')])


@pytest.mark.parametrize('in_folder', [False, True])
def test_a_truncated_image_is_named_before_out_dir_is_made(tmp_path, load_script, in_folder):
    """Every image is decoded before --out-dir is made: a corrupt one (the first half of a real
    JPEG), given itself or in a folder after a good one, is named, and no empty --out-dir is
    left behind."""
    config, checkpoint = write_run(tmp_path, dict(
        type='VisionTransformer', img_size=32, arch=dict(embed_dim=32, depth=1, num_heads=2)))
    photos = tmp_path / 'photos'
    photos.mkdir()
    whole = Path(find_embedded_photos()[0][1]).read_bytes()
    (photos / 'a_whole.jpg').write_bytes(whole)
    truncated = photos / 'b_half.jpg'
    truncated.write_bytes(whole[:len(whole) // 2])
    out_dir = tmp_path / 'vis'

    with pytest.raises(ValueError, match=rf'cannot read image {truncated}: image file is '
                                         r'truncated'):
        load_script(TOOL).main([config, checkpoint, '--img',
                                str(photos if in_folder else truncated), '--out-dir',
                                str(out_dir)])
    assert not out_dir.exists()


def test_a_cell_px_below_4_is_refused_naming_the_flag(tmp_path, load_script, capsys):
    """--cell-px 0 failed after the model had loaded, as 'cell_px must be an int >= 4'."""
    config, checkpoint = write_run(tmp_path, dict(
        type='VisionTransformer', img_size=32, arch=dict(embed_dim=32, depth=1, num_heads=2)))
    with pytest.raises(SystemExit):
        load_script(TOOL).main([config, checkpoint, '--embedded', '1', '--out-dir',
                                str(tmp_path / 'vis'), '--cell-px', '0'])
    assert 'argument --cell-px: must be an int >= 4' in capsys.readouterr().err
    assert not (tmp_path / 'vis').exists()


@pytest.mark.parametrize('case', ['input_size', 'device', 'fine_tuned'])
def test_a_refusal_leaves_no_empty_out_dir(tmp_path, load_script, case):
    """--out-dir was made before the model and argument checks: each refusal left it empty."""
    backbone = dict(type='VisionTransformer', img_size=32,
                    arch=dict(embed_dim=32, depth=1, num_heads=2))
    config, checkpoint = write_run(tmp_path, backbone)
    out_dir = tmp_path / 'new' / 'vis'
    options, error = {'input_size': (['--input-size', '100'], ValueError),
                      'device': (['--device', 'cuda:7'], ValueError),
                      'fine_tuned': ([], CheckpointError)}[case]
    if case == 'device' and torch.cuda.device_count() > 7:
        pytest.skip('this machine has a cuda:7')
    if case == 'fine_tuned':
        classifier = MODELS.build(dict(type='ImageClassifier', backbone=backbone,
                                       head=dict(type='LinearClsHead', num_classes=7,
                                                 in_channels=32)))
        checkpoint = str(tmp_path / 'fine_tuned.pth')
        torch.save({'state_dict': classifier.state_dict(),
                    'meta': {'geometry': classifier.geometry()}}, checkpoint)
    with pytest.raises(error):
        load_script(TOOL).main([config, checkpoint, '--embedded', '1', '--out-dir',
                                str(out_dir), *options])
    assert not out_dir.exists() and not out_dir.parent.exists()


def test_an_out_dir_that_cannot_be_made_is_named_before_the_model_loads(tmp_path, load_script,
                                                                         monkeypatch):
    from fastmim.errors import LaunchError
    config, checkpoint = write_run(tmp_path, dict(
        type='VisionTransformer', img_size=32, arch=dict(embed_dim=32, depth=1, num_heads=2)))
    (tmp_path / 'file').write_text('')
    script = load_script(TOOL)
    with pytest.raises(LaunchError, match=r'--out-dir .*file/vis is not writable: .*file is a '
                       r'file, not a folder'):
        script.main([config, checkpoint, '--embedded', '1', '--out-dir',
                     str(tmp_path / 'file' / 'vis'), '--device', 'cuda:7'])
