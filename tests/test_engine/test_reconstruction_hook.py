"""Reconstruction pictures: the training hook and tools/visualize/visualize_reconstruction.py."""
import os
import os.path as osp
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.dataset import DefaultSampler
from mmengine.model import BaseModule
from mmengine.runner import Runner
from PIL import Image
from torch import nn

import fastmim  # noqa: F401  safe checkpoint I/O
import fastmim.engine.hooks.reconstruction_hook as reconstruction_hook
from fastmim.engine.hooks.reconstruction_hook import ReconstructionVisualizationHook
from fastmim.errors import CheckpointError, LaunchError
from fastmim.registry import MODELS
from fastmim.visualization import IMAGENET_MEAN, IMAGENET_STD, draw_reconstructions
from fastmim.visualization.hog_drawing import PANEL_GAP, TITLE_HEIGHT

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO, 'tools', 'visualize', 'visualize_reconstruction.py')
SIZE = 32  # 2 x 2 tokens of 16 px, 4 x 4 HOG cells, 4 mask blocks (3 masked)
GLYPH_PANEL = SIZE // 8 * 16  # 4 cells drawn 16 px wide
HOG_PANEL_WIDTH = 4 * GLYPH_PANEL + 3 * PANEL_GAP


@MODELS.register_module(force=True)
class TinyPatchBackbone(BaseModule):
    """A 16-px patch embedding: the smallest backbone with FastMIM's backbone contract."""

    def __init__(self, channels=16, stride=16):
        super().__init__()
        self.proj = nn.Conv2d(3, channels, stride, stride)
        self.out_channels = [channels]
        self.out_strides = [stride]

    def forward(self, x):
        return (self.proj(x),)

    def geometry(self):
        return dict(type='TinyPatchBackbone', patch_size=self.out_strides[0])


class TinyImages(torch.utils.data.Dataset):
    """Random uint8 images whose green channel never reaches 255."""

    def __init__(self, num_images=4):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 200, (num_images, 3, SIZE, SIZE), dtype=torch.uint8,
                                    generator=generator)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return dict(inputs=self.images[index])


def tiny_model_cfg(target=dict(type='HOGGenerator'), embed_dim=32):
    return dict(type='FastMIM', backbone=dict(type='TinyPatchBackbone'),
                neck=dict(type='MIMDecoder', embed_dim=embed_dim, depth=1, num_heads=2),
                target_generator=target, mask_ratio=0.75, block_size=16)


def fake_runner(model, work_dir, epoch=0):
    return SimpleNamespace(model=model, work_dir=str(work_dir), epoch=epoch, iter=0,
                           train_loop=None, logger=MMLogger.get_instance('test_vis'))


def first_batch():
    return dict(inputs=list(TinyImages(3).images))


def test_hook_keeps_mode_and_random_state_and_repeats_its_mask(tmp_path):
    model = MODELS.build(tiny_model_cfg()).train()
    hook = ReconstructionVisualizationHook(interval=1, num_images=2)
    runner = fake_runner(model, tmp_path)
    hook.before_train_iter(runner, 0, first_batch())
    random_state = torch.get_rng_state()

    hook.after_train_epoch(runner)
    runner.epoch = 1
    hook.after_train_epoch(runner)

    assert model.training
    assert torch.equal(torch.get_rng_state(), random_state)
    assert sorted(os.listdir(tmp_path / 'vis')) == [
        'epoch_1_0.png', 'epoch_1_1.png', 'epoch_2_0.png', 'epoch_2_1.png']
    first, second = (np.asarray(Image.open(tmp_path / 'vis' / f'epoch_{n}_0.png'))
                     for n in (1, 2))
    assert first.shape == (TITLE_HEIGHT + GLYPH_PANEL, HOG_PANEL_WIDTH, 3)
    assert np.array_equal(first, second)  # same images, same mask, same weights


def test_only_rank_zero_draws(tmp_path, monkeypatch):
    monkeypatch.setattr(reconstruction_hook, 'is_main_process', lambda: False)
    hook = ReconstructionVisualizationHook(interval=1)
    runner = fake_runner(MODELS.build(tiny_model_cfg()), tmp_path)
    hook.before_train_iter(runner, 0, first_batch())
    hook.after_train_epoch(runner)
    hook.after_train(runner)
    assert not (tmp_path / 'vis').exists()


def test_hook_rejects_bad_arguments():
    with pytest.raises(ValueError, match='interval'):
        ReconstructionVisualizationHook(interval=0)
    with pytest.raises(ValueError, match='num_images'):
        ReconstructionVisualizationHook(num_images=2.5)


def test_pixel_target_panels_have_three_columns():
    model = MODELS.build(tiny_model_cfg(target=dict(type='PixelTarget', patch_size=16)))
    inputs = model.data_preprocessor(first_batch(), False)['inputs']
    panels = draw_reconstructions(model, inputs)
    assert len(panels) == 3
    assert panels[0].shape == (TITLE_HEIGHT + SIZE, 3 * SIZE + 2 * PANEL_GAP, 3)


def test_hook_draws_from_a_device_decoding_pipeline(tmp_path):
    """With decode='device' the batch holds JPEG bytes, which JpegDecodePreprocessor decodes
    with their data samples: the hook keeps those with its images."""
    from mmengine.dataset import pseudo_collate
    from skimage import data as skdata

    from fastmim.datasets.transforms import (LoadImageRGB, PackInputs, RandomHorizontalFlip,
                                             RandomResizedCrop)
    Image.fromarray(skdata.coffee()).save(tmp_path / 'coffee.jpg', quality=90)
    steps = [LoadImageRGB(lazy=True), RandomResizedCrop(SIZE, decode='device'),
             RandomHorizontalFlip(), PackInputs()]
    samples = []
    for _ in range(3):
        results = dict(img_path=str(tmp_path / 'coffee.jpg'))
        for step in steps:
            results = step(results)
        samples.append(results)
    batch = pseudo_collate(samples)
    assert all(item.dim() == 1 for item in batch['inputs'])  # JPEG bytes
    model = MODELS.build({**tiny_model_cfg(),
                          'data_preprocessor': dict(type='JpegDecodePreprocessor')})
    hook = ReconstructionVisualizationHook(interval=1, num_images=2)
    runner = fake_runner(model, tmp_path)
    hook.before_train_iter(runner, 0, batch)
    hook.after_train_epoch(runner)
    assert sorted(os.listdir(tmp_path / 'vis')) == ['epoch_1_0.png', 'epoch_1_1.png']


def test_hook_in_a_training_run(tmp_path):
    dataset = TinyImages(4)
    runner = Runner(
        model=tiny_model_cfg(),
        work_dir=str(tmp_path),
        train_dataloader=dict(dataset=dataset, sampler=DefaultSampler(dataset, shuffle=False),
                              collate_fn=dict(type='pseudo_collate'), batch_size=2,
                              num_workers=0),
        train_cfg=dict(by_epoch=True, max_epochs=3),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        default_hooks=dict(checkpoint=None),
        custom_hooks=[dict(type='ReconstructionVisualizationHook', interval=2, num_images=4)],
        default_scope='fastmim',
        experiment_name='vis_hook_run')
    runner.train()

    # Epoch 2 by the interval, epoch 3 at the end of training; the batch held only 2 images.
    assert sorted(os.listdir(tmp_path / 'vis')) == [
        'epoch_2_0.png', 'epoch_2_1.png', 'epoch_3_0.png', 'epoch_3_1.png']


# --- the command-line tool ----------------------------------------------------------------
@pytest.fixture
def tool(load_script):
    return load_script(TOOL)


def write_config(tmp_path, model_cfg):
    path = tmp_path / 'tiny_fastmim.py'
    path.write_text(f"default_scope = 'fastmim'\nmodel = {model_cfg!r}\n")
    return str(path)


def save_green_token_checkpoint(tmp_path):
    """A tiny model whose mask token is pure green once un-normalised."""
    model = MODELS.build(tiny_model_cfg())
    green = (torch.tensor([0., 255., 0.]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(
        IMAGENET_STD)
    with torch.no_grad():
        model.mask_token.copy_(green.view(1, 3, 1, 1))
    path = tmp_path / 'tiny.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return str(path)


def test_tool_draws_with_the_checkpoint_weights(tmp_path, capsys, tool):
    image_path = tmp_path / 'photo.png'
    pixels = np.random.default_rng(0).integers(0, 200, (48, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image_path)
    out_dir = tmp_path / 'out'

    tool.main([write_config(tmp_path, tiny_model_cfg()), save_green_token_checkpoint(tmp_path),
               '--img', str(image_path), '--out-dir', str(out_dir), '--input-size', str(SIZE)])

    assert capsys.readouterr().out.split() == [str(out_dir / 'photo.png')]
    panel = np.asarray(Image.open(out_dir / 'photo.png'))
    assert panel.shape == (TITLE_HEIGHT + GLYPH_PANEL, HOG_PANEL_WIDTH, 3)
    # 3 of 4 blocks of 16 x 16 px masked, drawn twice as large, in the loaded mask colour.
    green = np.all(panel == (0, 255, 0), axis=2)
    assert green.sum() == 3 * 16 * 16 * 4


def test_tool_embedded_photos(tmp_path, capsys, tool):
    tool.main([write_config(tmp_path, tiny_model_cfg()), save_green_token_checkpoint(tmp_path),
               '--embedded', '2', '--out-dir', str(tmp_path), '--input-size', str(SIZE)])
    from fastmim.datasets import find_embedded_photos
    first_two = [name.replace('/', '_') for name, _ in find_embedded_photos()[:2]]
    assert capsys.readouterr().out.split() == [str(tmp_path / f'{name}.png')
                                               for name in first_two]
    assert all((tmp_path / f'{name}.png').stat().st_size > 0 for name in first_two)


def test_tool_rejects_a_checkpoint_of_another_model(tmp_path, tool):
    checkpoint = save_green_token_checkpoint(tmp_path)
    config = write_config(tmp_path, tiny_model_cfg(embed_dim=64))
    with pytest.raises(CheckpointError, match='does not fit the model of'):
        tool.main([config, checkpoint, '--embedded', '1', '--out-dir', str(tmp_path)])
    with pytest.raises(ValueError, match='between 1 and'):
        tool.main([config, checkpoint, '--embedded', '0', '--out-dir', str(tmp_path)])


def test_tool_names_a_missing_image_in_one_line(tmp_path):
    missing = tmp_path / 'nowhere.jpg'
    config = write_config(tmp_path, tiny_model_cfg())  # both are checked before the image
    checkpoint = save_green_token_checkpoint(tmp_path)
    result = subprocess.run(
        [sys.executable, TOOL, str(config), str(checkpoint), '--img', str(missing), '--out-dir',
         str(tmp_path)], capture_output=True, text=True, cwd=REPO,
        env={**os.environ, 'PYTHONPATH': REPO})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f'error: FileNotFoundError: image not found: {missing}']


@pytest.mark.parametrize('out_dir', ['a_file', 'a_file/sub'])
def test_tool_refuses_an_out_dir_under_a_file_before_loading(tmp_path, tool, out_dir):
    """os.makedirs failed only after the model had run, with '[Errno 17] File exists'."""
    (tmp_path / 'a_file').write_text('not a folder')
    image = tmp_path / 'photo.png'
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    with pytest.raises(LaunchError, match=r'--out-dir .*a_file.* is not writable: .*a_file is '
                       'a file, not a folder'):
        tool.main([str(tmp_path / 'absent.py'), str(tmp_path / 'absent.pth'), '--img',
                   str(image), '--out-dir', str(tmp_path / out_dir)])


def test_a_model_that_cannot_reconstruct_is_refused_before_training(tmp_path):
    """A fine-tuning classifier with the hook trained `interval` epochs (10 by default), then
    stopped with a TypeError in after_train_epoch, before that epoch's checkpoint was saved."""
    classifier = MODELS.build(dict(type='ImageClassifier', backbone=dict(type='TinyPatchBackbone'),
                                   head=dict(type='LinearClsHead', num_classes=3,
                                             in_channels=16)))
    hook = ReconstructionVisualizationHook(interval=10)
    # ValueError: mmengine appends 'in <...Hook object at 0x...>' to a hook's TypeError.
    with pytest.raises(ValueError, match=r'ReconstructionVisualizationHook.*ImageClassifier has '
                       r'no reconstruct\(\).*custom_hooks'):
        hook.before_train(fake_runner(classifier, tmp_path))
    hook.before_train(fake_runner(MODELS.build(tiny_model_cfg()), tmp_path))  # FastMIM passes


def test_more_images_than_the_batch_holds_warns_once(tmp_path):
    """num_images larger than the batch drew the batch's images only, without a word."""
    warnings = []
    runner = fake_runner(MODELS.build(tiny_model_cfg()), tmp_path)
    runner.logger = SimpleNamespace(warning=warnings.append, info=lambda message: None)
    hook = ReconstructionVisualizationHook(interval=1, num_images=5)
    for batch_idx in range(2):
        hook.before_train_iter(runner, batch_idx, first_batch())
    assert len(warnings) == 1
    assert 'num_images=5, but a training batch holds 3 images' in warnings[0]
    hook.after_train_epoch(runner)
    assert len(os.listdir(tmp_path / 'vis')) == 3

    quiet = []
    runner.logger = SimpleNamespace(warning=quiet.append, info=lambda message: None)
    ReconstructionVisualizationHook(num_images=3).before_train_iter(runner, 0, first_batch())
    assert quiet == []


def training_runner(work_dir, max_epochs, resume_from=None):
    """Four images in shuffled batches of 2, pictures of 2 images after every epoch; the loop
    and sampler of the pre-training configs, whose resumed runs train as the uninterrupted."""
    dataset = TinyImages(4)
    return Runner(
        model=tiny_model_cfg(),
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=dataset, sampler=dict(type='ResumableSampler'),
                              collate_fn=dict(type='pseudo_collate'), batch_size=2,
                              num_workers=0),
        train_cfg=dict(type='ResumableEpochBasedTrainLoop', max_epochs=max_epochs),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        custom_hooks=[dict(type='ReconstructionVisualizationHook', interval=1, num_images=2),
                      dict(type='CheckpointMetaHook')],
        randomness=dict(seed=0),
        load_from=resume_from, resume=resume_from is not None,
        default_scope='fastmim',
        experiment_name=str(work_dir))


def test_a_resumed_run_draws_the_images_the_uninterrupted_run_draws(tmp_path):
    """The hook kept the first batch its process saw: a resumed run's first batch is a later
    epoch's, so its pictures showed other images than the uninterrupted run's from then on,
    and a run's pictures could not be compared across a requeue."""
    training_runner(tmp_path / 'whole', max_epochs=2).train()
    training_runner(tmp_path / 'stopped', max_epochs=1).train()
    resumed = training_runner(tmp_path / 'resumed', max_epochs=2,
                              resume_from=str(tmp_path / 'stopped' / 'epoch_1.pth'))
    resumed.train()
    for index in range(2):
        whole = np.asarray(Image.open(tmp_path / 'whole' / 'vis' / f'epoch_2_{index}.png'))
        again = np.asarray(Image.open(tmp_path / 'resumed' / 'vis' / f'epoch_2_{index}.png'))
        np.testing.assert_array_equal(again, whole)
