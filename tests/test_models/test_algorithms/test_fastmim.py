import copy
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper
from skimage import data as skdata
from skimage.transform import resize
from torch import nn

import fastmim.models  # noqa: F401  (registers the model components)
from fastmim.registry import MODELS

IMAGENET_MEAN = np.array([123.675, 116.28, 103.53])
IMAGENET_STD = np.array([58.395, 57.12, 57.375])


@MODELS.register_module(force=True)
class FastMIMTestBackbone(nn.Module):
    """Patchify conv + one 3x3 mixing conv: no batch statistics, any stride."""

    def __init__(self, stride=32, channels=32):
        super().__init__()
        self.patchify = nn.Conv2d(3, channels, stride, stride)
        self.mix = nn.Conv2d(channels, channels, 3, padding=1)
        self.out_channels = [channels]
        self.out_strides = [stride]

    def forward(self, x):
        tokens = self.patchify(x)
        return (tokens + self.mix(F.gelu(tokens)),)

    def geometry(self):
        return dict(type='FastMIMTestBackbone', patch_size=self.out_strides[0], img_size=64)


@MODELS.register_module(force=True)
class FastMIMTestCellMean(nn.Module):
    """Mean colour of each 8x8 cell: a dense target with 3 channels."""
    channels = 3
    cell_size = 8

    @torch.no_grad()
    def forward(self, images):
        return F.avg_pool2d(images.float(), self.cell_size)


def build_fastmim(stride=32, block_size=32, target=dict(type='FastMIMTestCellMean'), **kwargs):
    cfg = dict(
        type='FastMIM',
        backbone=dict(type='FastMIMTestBackbone', stride=stride),
        neck=dict(type='MIMDecoder', embed_dim=32, depth=1, num_heads=4),
        target_generator=target,
        block_size=block_size)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def real_images(size, count=4):
    """Real photos from scikit-image, resized, as a uint8 (count, 3, size, size) batch."""
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()][:count]
    batch = [resize(p, (size, size), anti_aliasing=True, preserve_range=True) for p in photos]
    return torch.from_numpy(np.stack(batch).round().astype(np.uint8)).permute(0, 3, 1, 2)


def normalised(uint8_images):
    array = (uint8_images.permute(0, 2, 3, 1).numpy() - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(array).permute(0, 3, 1, 2).float()


def numpy_masked_mse(prediction, target, mask):
    squared = ((prediction.double().numpy() - target.double().numpy()) ** 2).mean(axis=1)
    return squared[mask.numpy()].mean()


def test_default_preprocessor_normalises_with_imagenet_statistics():
    model = build_fastmim()
    images = real_images(64, count=2)
    inputs = model.data_preprocessor(dict(inputs=images), True)['inputs']
    torch.testing.assert_close(inputs, normalised(images))


def test_neck_sizes_come_from_backbone_and_target():
    model = build_fastmim(stride=32)
    assert model.neck.in_channels == 32
    assert model.neck.out_channels == 3 * 4 * 4   # 3 channels x (32 / 8)^2 cells per token
    hog_model = build_fastmim(stride=16, target=dict(type='HOGGenerator'))
    assert hog_model.neck.out_channels == 27 * 2 * 2


def test_incompatible_sizes_raise_naming_both():
    with pytest.raises(ValueError, match=r"stride 12 .*cell_size 8 \(model.target_generator"):
        build_fastmim(stride=12)
    with pytest.raises(ValueError, match='model.block_size 20 .*cell_size 8'):
        build_fastmim(block_size=20)
    with pytest.raises(ValueError, match='out_channels 10 != 48'):
        build_fastmim(neck=dict(type='MIMDecoder', out_channels=10, embed_dim=32, num_heads=4))


def test_fold_tokens_matches_explicit_loop():
    model = build_fastmim(stride=16)   # 2x2 cells per token
    k, channels, grid_h, grid_w = 2, 3, 2, 3
    tokens = torch.randn(2, grid_h * grid_w, k * k * channels)
    folded = model.fold_tokens(tokens, (grid_h, grid_w))
    expected = torch.empty(2, channels, grid_h * k, grid_w * k)
    for b in range(2):
        for ty in range(grid_h):
            for tx in range(grid_w):
                for ky in range(k):
                    for kx in range(k):
                        for c in range(channels):
                            expected[b, c, ty * k + ky, tx * k + kx] = \
                                tokens[b, ty * grid_w + tx, (ky * k + kx) * channels + c]
    assert torch.equal(folded, expected)


def test_masked_pixels_equal_the_mask_token_and_others_are_unchanged():
    torch.manual_seed(0)
    model = build_fastmim(block_size=16)
    assert model.mask_token.shape == (1, 3, 1, 1) and model.mask_token.requires_grad
    inputs = normalised(real_images(64, count=2))
    outputs = model.reconstruct(inputs)
    masked = outputs['mask_pixels'].bool().expand_as(inputs)
    assert outputs['mask_pixels'].shape == (2, 1, 64, 64)
    assert outputs['mask_pixels'].mean().item() == 0.75
    token = model.mask_token.expand_as(inputs)
    assert torch.equal(outputs['masked_image'][masked], token[masked])
    assert torch.equal(outputs['masked_image'][~masked], inputs[~masked])


def test_target_is_computed_from_the_clean_inputs():
    torch.manual_seed(0)
    model = build_fastmim(target=dict(type='HOGGenerator'), stride=16, block_size=16)
    seen = []
    model.target_generator.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    inputs = normalised(real_images(64, count=2))
    outputs = model.reconstruct(inputs)
    assert len(seen) == 1 and torch.equal(seen[0], inputs)
    hog = MODELS.build(dict(type='HOGGenerator'))
    torch.testing.assert_close(outputs['target'], hog(inputs))
    assert not torch.allclose(outputs['target'], hog(outputs['masked_image']))
    assert outputs['target'].dtype == torch.float32 and not outputs['target'].requires_grad


@pytest.mark.parametrize('block_size, stride, size', [
    (16, 32, 64),    # blocks finer than tokens: a token can be partly masked
    (64, 16, 128),   # blocks coarser than tokens
])
def test_cell_mask_follows_blocks_not_tokens(block_size, stride, size):
    torch.manual_seed(0)
    model = build_fastmim(stride=stride, block_size=block_size, mask_ratio=0.75)
    inputs = torch.randn(8, 3, size, size)
    outputs = model.reconstruct(inputs)
    pixels = outputs['mask_pixels'][:, 0]
    cells = size // 8
    assert outputs['mask'].shape == (8, cells, cells)
    assert outputs['prediction'].shape == outputs['target'].shape == (8, 3, cells, cells)

    pixel_cells = pixels.reshape(8, cells, 8, cells, 8)
    assert torch.all(pixel_cells.amax((2, 4)) == pixel_cells.amin((2, 4)))   # cells are uniform
    assert torch.equal(outputs['mask'], pixel_cells.amax((2, 4)).bool())
    blocks = pixels.reshape(8, size // block_size, block_size, size // block_size, block_size)
    assert torch.all(blocks.amax((2, 4)) == blocks.amin((2, 4)))              # blocks are uniform
    num_blocks = (size // block_size) ** 2
    assert blocks.amax((2, 4)).flatten(1).sum(1).tolist() == [num_blocks * 3 // 4] * 8
    if block_size < stride:
        tokens = pixels.reshape(8, size // stride, stride, size // stride, stride)
        assert torch.any(tokens.amax((2, 4)) != tokens.amin((2, 4)))

    loss = model.criterion(outputs['prediction'], outputs['target'], outputs['mask'])
    expected = numpy_masked_mse(outputs['prediction'].detach(), outputs['target'],
                                pixel_cells.amax((2, 4)).bool())
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-5)


def test_forward_modes():
    torch.manual_seed(0)
    model = build_fastmim(stride=16, block_size=16)
    inputs = torch.randn(2, 3, 64, 64)
    assert model(inputs, mode='tensor').shape == (2, 3, 8, 8)
    predictions = model(inputs, mode='predict')
    assert len(predictions) == 2
    assert predictions[0]['mask_pixels'].shape == (1, 64, 64)
    assert predictions[0]['masked_image'].shape == (3, 64, 64)
    assert predictions[1]['prediction'].shape == predictions[1]['target'].shape == (3, 8, 8)
    assert predictions[1]['mask'].shape == (8, 8)
    losses = model(inputs, mode='loss')
    assert set(losses) == {'loss'} and torch.isfinite(losses['loss'])
    with pytest.raises(ValueError, match='mode'):
        model(inputs, mode='features')
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        model(torch.randn(2, 1, 64, 64), mode='loss')


def test_geometry_records_the_last_input_size():
    model = build_fastmim(stride=16, block_size=16, mask_ratio=0.5)
    expected = dict(backbone=dict(type='FastMIMTestBackbone', patch_size=16, img_size=64),
                    input_size=[64, 64], block_size=16, mask_ratio=0.5,
                    target='FastMIMTestCellMean', cell_size=8)
    assert model.geometry() == expected
    model(torch.randn(1, 3, 96, 128), mode='loss')
    assert model.geometry() == dict(expected, input_size=[96, 128])


def test_loss_falls_on_real_images_with_hog_target():
    torch.manual_seed(0)
    model = build_fastmim(stride=16, block_size=16, target=dict(type='HOGGenerator'))
    optim_wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=2e-3))
    initial_token = model.mask_token.detach().clone()
    batch = dict(inputs=real_images(64))
    losses = [model.train_step(batch, optim_wrapper)['loss'].item() for _ in range(20)]
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.7 * losses[0], losses
    assert not torch.equal(model.mask_token, initial_token)   # the mask colour is learnt


def test_gradient_accumulation_equals_one_large_batch():
    """Two micro-batches of 2 with accumulative_counts=2 == one batch of 4, same masks."""
    torch.manual_seed(0)
    initial = build_fastmim(stride=16, block_size=16)
    images = real_images(64)
    masks = initial.mask_generator(4, 64, 64)

    def updated_parameters(batches, batch_masks, accumulative_counts):
        model = copy.deepcopy(initial)
        queue = list(batch_masks)
        model.generate_mask = lambda inputs: queue.pop(0)
        optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.5),
                                     accumulative_counts=accumulative_counts)
        for batch in batches:
            model.train_step(dict(inputs=batch), optim_wrapper)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    before = torch.cat([p.detach().flatten() for p in initial.parameters()])
    large = updated_parameters([images], [masks], 1)
    accumulated = updated_parameters([images[:2], images[2:]], [masks[:2], masks[2:]], 2)
    assert (large - before).abs().max() > 1e-3
    torch.testing.assert_close(accumulated - before, large - before, atol=1e-6, rtol=1e-4)


def test_mixed_precision_keeps_target_and_loss_in_fp32():
    torch.manual_seed(0)
    model = build_fastmim(stride=16, block_size=16, target=dict(type='HOGGenerator'))
    inputs = normalised(real_images(64, count=2))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outputs = model.reconstruct(inputs)
        loss = model.criterion(outputs['prediction'], outputs['target'], outputs['mask'])
    assert outputs['prediction'].dtype == torch.bfloat16
    assert outputs['target'].dtype == loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss) and torch.all(torch.isfinite(model.mask_token.grad))
    assert model.mask_token.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_cuda_fp16_step_matches_cpu_fp32_step():
    """One training step on CUDA under fp16 autocast with loss scaling (the published recipes'
    precision) gives the CPU fp32 loss and moves the weights the same way, same masks."""
    torch.manual_seed(0)
    initial = build_fastmim(stride=16, block_size=16, target=dict(type='HOGGenerator'))
    images = real_images(64)
    masks = initial.mask_generator(4, 64, 64)

    def one_step(device, amp):
        model = copy.deepcopy(initial).to(device)
        model.generate_mask = lambda inputs: masks.to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler(device, enabled=amp)
        with torch.autocast(device, dtype=torch.float16, enabled=amp):
            inputs = model.data_preprocessor(dict(inputs=images.to(device)))['inputs']
            loss = model.loss(inputs)['loss']
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.item(), torch.cat([p.detach().flatten().cpu() for p in model.parameters()])

    cpu_loss, cpu_params = one_step('cpu', amp=False)
    cuda_loss, cuda_params = one_step('cuda', amp=True)
    before = torch.cat([p.detach().flatten() for p in initial.parameters()])
    assert cuda_loss == pytest.approx(cpu_loss, rel=1e-2)
    update_cpu, update_cuda = cpu_params - before, cuda_params - before
    cosine = F.cosine_similarity(update_cpu, update_cuda, dim=0)
    assert cosine > 0.99, cosine


@pytest.mark.parametrize('backbone', [
    dict(type='VisionTransformer', arch=dict(embed_dim=32, depth=2, num_heads=2), img_size=64),
    dict(type='SwinTransformer', arch=dict(embed_dim=16, depths=(1, 1, 1, 1),
                                           num_heads=(1, 1, 1, 1)), img_size=64, window_size=2),
    dict(type='PyramidVisionTransformerV2', arch=dict(depths=(1, 1, 1, 1),
                                                      embed_dims=(8, 16, 16, 32),
                                                      num_heads=(1, 1, 1, 1))),
    dict(type='CMT', arch=dict(embed_dims=[8, 16, 16, 32], depths=[1, 1, 1, 1],
                               num_heads=[1, 1, 1, 1], stem_channels=8, mlp_ratio=2.0),
         img_size=64),
    # timm's smallest of each CNN family: the contract, not the size, is under test
    dict(type='TimmBackbone', model_name='resnet18'),
    dict(type='TimmBackbone', model_name='convnext_atto'),
], ids=lambda cfg: cfg.get('model_name', cfg['type']))
def test_loss_falls_with_every_project_backbone_and_hog(backbone):
    """Masking in pixel space needs nothing from the backbone beyond the common contract:
    every backbone, CNNs included, learns to predict HOG on a batch of real photos."""
    torch.manual_seed(0)
    model = build_fastmim(backbone=backbone, block_size=32, target=dict(type='HOGGenerator'))
    stride = model.backbone.out_strides[-1]
    assert model.neck.out_channels == 27 * (stride // 8) ** 2
    optim_wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3))
    batch = dict(inputs=real_images(64, count=4))
    losses = [model.train_step(batch, optim_wrapper)['loss'].item() for _ in range(12)]
    assert all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    with torch.no_grad():
        outputs = model.reconstruct(normalised(real_images(64, count=2)))
    assert outputs['prediction'].shape == outputs['target'].shape == (2, 27, 8, 8)
    assert model.geometry()['backbone']['type'] == model.backbone.geometry()['type']


@pytest.mark.parametrize('mask_ratio, why', [
    (0, '0 masks no block'), (0.0, '0 masks no block'), (-0.1, '0 masks no block'),
    (1, '1 masks every block'), (1.5, '1 masks every block'), (75, 'a fraction, not a percent')])
def test_a_mask_ratio_outside_0_1_is_refused_at_construction(mask_ratio, why):
    """0 masks nothing, so the masked loss is 0 and nothing trains; it used to train silently.
    The reason given was 0's for every value, 1.0 included."""
    with pytest.raises(ValueError, match=rf'FastMIM: mask_ratio must be in \(0, 1\), got '
                                         rf'{mask_ratio} \(.*{why}'):
        build_fastmim(mask_ratio=mask_ratio)


@pytest.mark.parametrize('mask_ratio', [[0, 75], '0.75', None, True])
def test_a_mask_ratio_that_is_no_number_is_named(mask_ratio):
    """--cfg-options model.mask_ratio=0,75 (a decimal comma) gives the list [0, 75]: it failed
    in a TypeError traceback ('<' not supported between 'int' and 'list')."""
    with pytest.raises(ValueError, match=rf"FastMIM: mask_ratio must be a number in \(0, 1\), "
                                         rf"got {re.escape(repr(mask_ratio))}"):
        build_fastmim(mask_ratio=mask_ratio)


def test_a_mask_ratio_that_masks_no_block_of_the_input_is_named():
    """A ratio so small that ``floor(N * (1 - ratio))`` keeps all N blocks visible."""
    model = build_fastmim(mask_ratio=1e-9)
    with pytest.raises(ValueError, match='mask_ratio=1e-09 masks none of the 4 blocks'):
        model(normalised(real_images(64, count=1)), mode='loss')


def test_an_input_the_backbone_stride_does_not_divide_names_the_crop_size():
    """16-px blocks tile 48 px, a stride-32 backbone does not: the loss failed comparing a
    prediction of 1x1 tokens with a target of 6x6 cells, naming no setting."""
    model = build_fastmim(stride=32, block_size=16)
    with pytest.raises(ValueError, match=r'input 48x48 is not a multiple of the backbone '
                                         r'output stride 32.*RandomResizedCrop'):
        model(torch.randn(1, 3, 48, 48), mode='loss')


def test_an_input_that_the_blocks_do_not_tile_names_the_keys_to_change():
    """The mask generator's message named neither model.block_size nor the crop size that
    sets the input size."""
    model = build_fastmim(stride=16, block_size=32)
    with pytest.raises(ValueError, match=r'input 48x48 is not a multiple of the mask '
                                         r'block_size=32 \(model\.block_size\).*'
                                         r'RandomResizedCrop'):
        model(torch.randn(1, 3, 48, 48), mode='loss')


def test_the_decoder_receives_the_backbones_last_output():
    """The backbone returns a tuple of maps and the last one is decoded (the neck's
    in_channels default to ``out_channels[-1]``). Every shipped pre-training backbone returns
    one map, so a backbone with two outputs is needed to tell the last from the first: a ViT
    with out_indices (0, 1), whose block-1 map also went through the final norm."""
    torch.manual_seed(0)
    model = build_fastmim(
        backbone=dict(type='VisionTransformer', arch=dict(embed_dim=32, depth=2, num_heads=2),
                      img_size=64, out_indices=(0, 1)),
        block_size=16).eval()
    received = []
    model.neck.register_forward_pre_hook(lambda module, args: received.append(args[0]))
    with torch.no_grad():
        outputs = model.reconstruct(normalised(real_images(64, count=2)))
        first, last = model.backbone(outputs['masked_image'])
    assert len(received) == 1
    assert first.shape == last.shape == (2, 32, 4, 4)
    assert not torch.allclose(first, last, atol=1e-3)   # the two outputs are distinguishable
    torch.testing.assert_close(received[0], last)
    with torch.no_grad():
        expected = model.fold_tokens(model.neck(last), last.shape[-2:])
    torch.testing.assert_close(outputs['prediction'], expected)


def test_the_loss_is_taken_over_the_masked_cells_only():
    """The model's own loss (``mode='loss'``, as train_step calls it), not the criterion fed a
    hand-made mask: a loss over the visible cells, or over every cell, passed every test.
    With the mask and the prediction fixed, it equals the MSE over the cells of the masked
    blocks (each 16-px block is 2x2 cells of 8 px), and a prediction that changes only at
    visible cells leaves it unchanged."""
    torch.manual_seed(0)
    model = build_fastmim(stride=16, block_size=16, mask_ratio=0.5)
    inputs = normalised(real_images(64, count=2))
    block_mask = model.mask_generator(2, 64, 64)
    model.generate_mask = lambda images: block_mask
    prediction = torch.randn(2, 3, 8, 8)
    model.predict_cells = lambda masked_image: prediction.clone()

    masked_cells = block_mask.repeat_interleave(2, 1).repeat_interleave(2, 2)
    target = F.avg_pool2d(inputs, 8)  # FastMIMTestCellMean, written out
    expected = numpy_masked_mse(prediction, target, masked_cells)
    np.testing.assert_allclose(model(inputs, mode='loss')['loss'].item(), expected, rtol=1e-5)

    visible_changed = prediction + 5 * (~masked_cells).unsqueeze(1)
    model.predict_cells = lambda masked_image: visible_changed.clone()
    np.testing.assert_allclose(model(inputs, mode='loss')['loss'].item(), expected, rtol=1e-5)
